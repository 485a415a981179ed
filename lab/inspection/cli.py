"""``lab-inspect``: look inside trained models, and at how that changes with scale.

    lab-inspect attention RUN [--text "..."] [--layer L]   attention maps + entropy per head
    lab-inspect probe RUN [--probe NAME ...]               linear probes, layer by layer
    lab-inspect tokens RUN [--text "..."]                  per-token loss, highlighted
    lab-inspect positions RUN [RUN ...]                    mean loss at each context position
    lab-inspect attribution RUN --text "..." [--position P] [--target TOKEN]
                                                           SHAP and Integrated Gradients
    lab-inspect sweep SWEEP_DIR                            all of it against N
    lab-inspect coord [--widths 64 ... 1024]               μP's coordinate check, sp vs mup

RUN is a run folder (with checkpoint.pt, and result.json telling the corpus) or a
checkpoint file. Attention maps come from the reference math (``kernels.reference``): the
fused kernel never builds the T×T matrix; ``trace`` checks that the maps reproduce the
model's own attention output. Figures are PNG (and HTML for the token view), written to
RUN/inspect/ unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kernels import reference  # noqa: E402
from lab.config.record import CHECKPOINT_NAME, RECORD_NAME  # noqa: E402
from lab.config.schema import DataConfig  # noqa: E402
from lab.data.corpus import load_corpus  # noqa: E402
from lab.inspection.probes import PROBES, labels, probe_layers  # noqa: E402
from lab.model.gpt import GPT  # noqa: E402
from lab.runs.artifacts import load_model  # noqa: E402
from lab.runs.records import read_record  # noqa: E402


class Run:
    """A trained model, its tokenizer, and (when the folder has a record) its data config."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.dir = path if path.is_dir() else path.parent
        self.model, self.tokenizer = load_model(path if path.is_file() else path / CHECKPOINT_NAME)
        self.record = read_record(self.dir)
        config = (self.record or {}).get("config")
        data = config.get("data") if isinstance(config, dict) else None
        data = data if isinstance(data, dict) else {}
        # the corpus the run read; where token files are cached is this machine's choice,
        # never a path a record (perhaps someone else's) names
        keep = set(DataConfig.__dataclass_fields__) - {"cache_dir"}
        self.data = DataConfig(**{k: v for k, v in data.items() if k in keep})

    def encode(self, text: str, truncate: bool = True) -> torch.Tensor:
        """Token ids of ``text`` (1, T), truncated with a warning to the positional table;
        with ``truncate=False`` a text longer than it is a ValueError instead."""
        if not hasattr(self.tokenizer, "encode"):
            raise ValueError(
                "this model was trained on pre-tokenized ids: it has no text tokenizer"
            )
        ids = self.tokenizer.encode(text.encode("utf-8")).astype(np.int64)
        limit = self.model.cfg.n_positions
        if ids.size > limit and not truncate:
            raise ValueError(
                f"--text is {ids.size} tokens, longer than the model's context of {limit}: "
                "shorten it"
            )
        if ids.size > limit:
            warnings.warn(
                f"the text has {ids.size} tokens; truncated to the model's {limit}", stacklevel=2
            )
            ids = ids[:limit]
        if ids.size == 0:
            raise ValueError("--text must not be empty")
        return torch.as_tensor(ids)[None]

    def val_windows(self, n: int, length: int) -> np.ndarray:
        """n windows of ``length`` tokens, evenly spaced over the run's validation split."""
        val = load_corpus(self.data).val
        starts = np.linspace(0, val.size - length - 1, num=n).astype(np.int64)
        return np.stack([np.asarray(val[s : s + length], dtype=np.int64) for s in starts])

    def sample_text(self, length: int = 64) -> str:
        return self.tokenizer.decode(self.val_windows(1, length)[0])


@torch.no_grad()
def trace(model: GPT, ids: torch.Tensor) -> dict:
    """Observe one forward pass of the model (forward hooks; nothing re-implemented):
    hidden states after the embedding and every block, each layer's attention maps
    (B, H, T, T) from the reference math on the model's own q and k, and how far the maps'
    output is from the model's own attention output (``max_attention_error``). A model
    whose token mixer is not attention has no maps (an empty list)."""
    model.eval()
    hidden, calls = [], []
    attention = model.cfg.mixer == "attention"
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, args: hidden.append(args[0]))]
    for block in model.blocks:
        if attention:
            hooks.append(
                block.attn.register_forward_hook(lambda m, args, out: calls.append((m, args, out)))
            )
        hooks.append(block.register_forward_hook(lambda m, args, out: hidden.append(out)))
    try:
        model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    maps, error = [], 0.0
    for attn, args, own in calls:
        q, k, v = attn.heads(*args)
        p = reference.attention_probs(q, k, causal=True)  # (B, H, T, T)
        from_maps = attn.merge((p @ v.float()).to(v.dtype))
        error = max(error, float((from_maps - own).abs().max()))
        maps.append(p)
    return {"hidden": hidden, "maps": maps, "max_attention_error": error}


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of attention rows, per head: (B, H, T, T) → (H,)."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean(dim=(0, 2))


def _labels(tokenizer, ids) -> list[str]:
    return [repr(tokenizer.decode([i]))[1:-1] or "·" for i in ids]


def attention_figure(
    run: Run, text: str | None, out: Path, layer: int | None = None
) -> tuple[Path, list]:
    """A grid of attention maps (layers × heads) with the tokens on the axes, and a table of
    each head's mean entropy. Raises ValueError for a layer index out of range."""
    n_layer = run.model.cfg.n_layer
    if run.model.cfg.mixer != "attention":
        raise ValueError(
            f"this model mixes tokens with model.mixer={run.model.cfg.mixer}: it has no "
            "attention maps (lab-inspect positions and attribution work for every mixer)"
        )
    if layer is not None and not 0 <= layer < n_layer:
        raise ValueError(
            f"layer index {layer} out of range: the model has {n_layer} layers (0-{n_layer - 1})"
        )
    ids = run.encode(text if text is not None else run.sample_text())
    t = trace(run.model, ids)
    layers = [layer] if layer is not None else list(range(n_layer))
    heads = run.model.cfg.n_head
    ticks = _labels(run.tokenizer, ids[0].tolist())
    fig, axes = plt.subplots(
        len(layers), heads, figsize=(3.2 * heads, 3.2 * len(layers)), squeeze=False
    )
    rows = []
    for r, li in enumerate(layers):
        ent = entropy(t["maps"][li])
        for hi in range(heads):
            ax = axes[r][hi]
            ax.imshow(t["maps"][li][0, hi].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {li} head {hi}  H={ent[hi]:.2f}", fontsize=8)
            step = max(1, len(ticks) // 24)
            ax.set_xticks(range(0, len(ticks), step), ticks[::step], rotation=90, fontsize=6)
            ax.set_yticks(range(0, len(ticks), step), ticks[::step], fontsize=6)
            rows.append({"layer": li, "head": hi, "entropy_nats": float(ent[hi])})
    fig.suptitle(
        "attention (rows: query tokens, columns: key tokens); H = mean row entropy, nats",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out / "attention.png"), rows


def token_losses(run: Run, text: str | None) -> tuple[list[str], np.ndarray]:
    """Each token of the text after the first, and the model's loss (nats) predicting it."""
    ids = run.encode(text if text is not None else run.sample_text(run.model.cfg.n_positions))
    with torch.no_grad():
        logits, _ = run.model(ids)
    loss = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none").numpy()
    return [run.tokenizer.decode([i]) for i in ids[0].tolist()], loss


def tokens_figure(run: Run, text: str | None, out: Path) -> list[Path]:
    """The text with each token shaded by its loss: HTML, and a PNG of the same."""
    toks, loss = token_losses(run, text)
    top = max(float(loss.max()), 1e-6)
    spans = [f"<span title='first token'>{html.escape(toks[0])}</span>"]
    for tok, v in zip(toks[1:], loss):
        spans.append(
            f"<span style='background: rgba(220,40,40,{v / top:.2f})' title='{v:.2f} nats'>"
            f"{html.escape(tok)}</span>"
        )
    page = (
        f"<html><body><p>Per-token loss (nats; darker is harder; mean {loss.mean():.3f})</p>"
        f"<pre style='font-size:14px'>{''.join(spans)}</pre></body></html>"
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.html").write_text(page)
    width = 48
    cells = [(toks[0], 0.0)] + list(zip(toks[1:], loss))
    lines = [[]]
    for tok, v in cells:
        for ch in tok:
            if ch == "\n" or len(lines[-1]) >= width:
                lines.append([])
            if ch != "\n":
                lines[-1].append((ch, v))
    fig, ax = plt.subplots(figsize=(width * 0.22, 0.3 * len(lines) + 0.8))
    cmap = plt.cm.Reds
    for r, line in enumerate(lines):
        for c, (ch, v) in enumerate(line):
            ax.add_patch(plt.Rectangle((c, -r - 1), 1, 1, color=cmap(v / top)))
            ax.text(c + 0.5, -r - 0.5, ch, ha="center", va="center", fontsize=8, family="monospace")
    ax.set_xlim(0, width)
    ax.set_ylim(-len(lines), 0)
    ax.axis("off")
    ax.set_title(f"per-token loss (darker: harder; mean {loss.mean():.3f} nats)", fontsize=9)
    return [_save(fig, out / "tokens.png"), out / "tokens.html"]


@torch.no_grad()
def position_losses(model: GPT, windows: np.ndarray, batch: int = 32) -> np.ndarray:
    """Mean loss (nats) at each position of the context: windows (n, T + 1) of held-out
    tokens; position t predicts token t + 1 from tokens 0 … t. Returns (T,)."""
    model.eval()
    total = np.zeros(windows.shape[1] - 1)
    for start in range(0, len(windows), batch):
        ids = torch.as_tensor(windows[start : start + batch])
        logits, _ = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")
        total += loss.sum(0).double().numpy()
    return total / len(windows)


def positions_figure(runs: list[Run], out: Path, windows: int = 256) -> tuple[Path, list[dict]]:
    """Kaplan et al.'s (2020, figure 20) loss-by-position view: each run's mean validation
    loss at every position of its context, on one log-x figure; a model that uses long
    context keeps improving with position. Also writes positions.json."""
    rows = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run in runs:
        cfg = run.model.cfg
        losses = position_losses(run.model, run.val_windows(windows, cfg.n_positions + 1))
        n = (run.record or {}).get("n_params_non_embedding")
        label = f"{run.dir.name} ({cfg.mixer}" + (f", N={n:,}" if n else "") + ")"
        ax.plot(np.arange(1, losses.size + 1), losses, label=label)
        rows.append(
            {
                "run": str(run.dir),
                "mixer": str(cfg.mixer),
                "N": n,
                "windows": windows,
                "loss_by_position": [round(float(v), 5) for v in losses],
                "first": float(losses[0]),
                "last": float(losses[-1]),
            }
        )
    ax.set_xscale("log")
    ax.set_xlabel("position in the context (tokens seen, log scale)")
    ax.set_ylabel("mean validation loss at the position (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("loss by position in the context", fontsize=10)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    (out / "positions.json").write_text(json.dumps(rows, indent=2))
    return _save(fig, out / "positions.png"), rows


def attribution_run(
    run: Run,
    text: str,
    out: Path,
    position: int | None = None,
    target: str | None = None,
    methods=("shap", "ig"),
    n_samples: int = 32,
    n_steps: int = 64,
) -> tuple[list[Path], dict]:
    """Attributions of the model's next-token prediction after ``position`` (default: the
    text's last token) to the text's tokens (``lab.attribution``). The target is the token
    ``target`` spells (it must be one token), else the text's own next token, else the
    model's most likely one. Raises ValueError for text longer than the context, a
    position outside the text or a target that is not one token."""
    from lab.inspection import attribution

    x = run.encode(text, truncate=False)
    ids = x[0].numpy()
    position = ids.size - 1 if position is None else position
    if not 0 <= position < ids.size:
        raise ValueError(f"--position must be in [0, {ids.size - 1}] for this text, got {position}")
    if target is not None:
        spelled = run.tokenizer.encode(target.encode("utf-8"))
        if len(spelled) != 1:
            raise ValueError(f"--target {target!r} is {len(spelled)} tokens; give one token")
        target_id = int(spelled[0])
    elif position + 1 < ids.size:
        target_id = int(ids[position + 1])
    else:
        with torch.no_grad():
            target_id = int(run.model.eval()(x)[0][0, position].argmax())
    result = attribution.attribute(
        run.model,
        x,
        position,
        target_id,
        attribution.baseline_token(run.tokenizer),
        methods,
        n_samples,
        n_steps,
    )
    result.update(
        {
            "position": position,
            "target": target_id,
            "target_text": run.tokenizer.decode([target_id]),
        }
    )
    tokens = [run.tokenizer.decode([i]) for i in ids.tolist()]
    return attribution.write_figures(tokens, result, out), result


def probe_run(run: Run, probes: list[str], windows: int = 24) -> dict[str, list[dict]]:
    """Every probe on every layer, on windows of the run's validation text."""
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; probes are {PROBES}")
    if getattr(run.tokenizer, "name", "") != "bytes":
        raise ValueError(
            "probes need a byte-level model (data.tokenizer=bytes): labels are per byte"
        )
    length = run.model.cfg.n_positions
    ids = torch.as_tensor(run.val_windows(windows, length))
    hidden = [h.reshape(-1, h.shape[-1]) for h in trace(run.model, ids)["hidden"]]
    texts = [
        "".join("\n" if i == 256 else chr(i) for i in row) for row in ids.tolist()
    ]  # one char a byte
    results = {}
    for prop in probes:
        y = np.concatenate([labels(t, prop) for t in texts])
        results[prop] = probe_layers(hidden, y)
    return results


def probe_figure(results: dict, out: Path) -> Path:
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.4), squeeze=False)
    for ax, (prop, rows) in zip(axes[0], results.items()):
        layers = [r["layer"] for r in rows]
        ax.plot(layers, [r["accuracy"] for r in rows], "o-", label="probe")
        ax.plot(layers, [r["control"] for r in rows], "s--", label="control (shuffled labels)")
        ax.axhline(rows[0]["majority"], color="gray", ls=":", label="majority class")
        ax.set_title(prop, fontsize=10)
        ax.set_xlabel("layer (0: embeddings)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "probes.png")


def sweep_summary(sweep: Path, out: Path, windows: int = 8) -> tuple[Path, list[dict]]:
    """For every finished run with a checkpoint: the best probe selectivity per property,
    the mean attention entropy and the mean per-token loss on held-out text, against N."""
    rows = []
    for ckpt in sorted(sweep.rglob(CHECKPOINT_NAME)):
        rec_path = ckpt.parent / RECORD_NAME
        if not rec_path.exists() or json.loads(rec_path.read_text()).get("status") != "ok":
            continue
        run = Run(ckpt.parent)
        ids = torch.as_tensor(run.val_windows(windows, run.model.cfg.n_positions))
        t = trace(run.model, ids)
        with torch.no_grad():
            logits, loss = run.model(ids[:, :-1], ids[:, 1:])
        row = {
            "run": str(ckpt.parent.relative_to(sweep)),
            "N": run.record["n_params_non_embedding"],
            "tokens": run.record["tokens"],
            "loss": float(loss),
            "attention_entropy": (
                float(torch.stack([entropy(m) for m in t["maps"]]).mean())
                if t["maps"]
                else float("nan")
            ),
        }
        if getattr(run.tokenizer, "name", "") == "bytes":
            for prop, prows in probe_run(run, list(PROBES), windows).items():
                row[f"selectivity_{prop}"] = max(r["selectivity"] for r in prows)
        rows.append(row)
    if not rows:
        raise ValueError(f"no finished runs with a checkpoint under {sweep}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "inspect_sweep.json").write_text(json.dumps(rows, indent=2))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ns = [r["N"] for r in rows]
    for prop in PROBES:
        if f"selectivity_{prop}" in rows[0]:
            axes[0].plot(ns, [r[f"selectivity_{prop}"] for r in rows], "o", label=prop)
    axes[0].set_ylabel("best probe selectivity (accuracy − control)")
    axes[1].plot(ns, [r["attention_entropy"] for r in rows], "o")
    axes[1].set_ylabel("mean attention entropy (nats)")
    axes[2].plot(ns, [r["loss"] for r in rows], "o")
    axes[2].set_ylabel("mean per-token loss (nats)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("non-embedding parameters N")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"What the models of {sweep} represent, against size", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "inspect_sweep.png"), rows


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _coord(args) -> int:
    """lab-inspect coord: the check on windows of the default corpus (byte tokens)."""
    from lab.config.schema import ModelConfig
    from lab.inspection import coord as mup

    corpus = load_corpus(DataConfig())
    starts = np.linspace(0, corpus.train.size - args.context - 2, args.batch).astype(np.int64)
    batch = np.stack(
        [np.asarray(corpus.train[s : s + args.context + 1], dtype=np.int64) for s in starts]
    )
    base = ModelConfig(
        n_layer=args.layers,
        n_head=args.heads,
        d_model=min(args.widths),
        context=args.context,
        vocab_size=corpus.tokenizer.vocab_size,
        tie_embeddings=False,
        readout_zero_init=True,
    )
    result = mup.coord_check(
        base, sorted(args.widths), steps=args.steps, lr=args.lr, batch=torch.as_tensor(batch)
    )
    json_path, png = mup.write(result, Path(args.out))
    for p in ("sp", "mup"):
        print(
            f"{p}: max |log-slope| of activation size against width, steps 3+: "
            f"{mup.max_abs_slope(result, p):.3f}"
        )
        for name, slopes in result[p]["slopes"].items():
            print(f"  {name:>14} " + " ".join(f"{v:+.2f}" for v in slopes))
    print(f"coord:  {json_path}")
    print(f"figure: {png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lab-inspect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("attention", "probe", "tokens"):
        p = sub.add_parser(name)
        p.add_argument("run", help="a run folder with checkpoint.pt, or a checkpoint file")
        p.add_argument("--out", default=None, help="output folder (default: RUN/inspect)")
        if name != "probe":
            p.add_argument(
                "--text", default=None, help="the text to look at (default: held-out text)"
            )
        if name == "attention":
            p.add_argument("--layer", type=int, default=None)
        if name == "probe":
            p.add_argument("--probe", nargs="+", default=list(PROBES), help=f"of {PROBES}")
            p.add_argument("--windows", type=int, default=24)
    pos = sub.add_parser("positions")
    pos.add_argument("runs", nargs="+", help="run folders (or checkpoints), one curve each")
    pos.add_argument("--windows", type=int, default=256, help="held-out windows per run")
    pos.add_argument("--out", default=None, help="output folder (default: FIRST_RUN/inspect)")
    a = sub.add_parser("attribution")
    a.add_argument("run", help="a run folder with checkpoint.pt, or a checkpoint file")
    a.add_argument("--text", required=True, help="the text (at most the model's context)")
    a.add_argument("--position", type=int, default=None, help="explain the prediction after it")
    a.add_argument("--target", default=None, help="the predicted token to explain")
    a.add_argument("--method", nargs="+", default=["shap", "ig"], help="of shap, ig")
    a.add_argument("--samples", type=int, default=32, help="Shapley value sampling permutations")
    a.add_argument("--steps", type=int, default=64, help="Integrated Gradients steps")
    a.add_argument("--out", default=None, help="output folder (default: RUN/inspect)")
    co = sub.add_parser("coord")
    co.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    co.add_argument("--steps", type=int, default=5, help="forward passes (updates: one fewer)")
    co.add_argument("--lr", type=float, default=1e-3)
    co.add_argument("--layers", type=int, default=2)
    co.add_argument("--heads", type=int, default=4)
    # few tokens a batch against the widths: μP's limit is width → ∞ at a fixed batch; with
    # more tokens than coordinates, updates partly average out and sizes drift with width
    co.add_argument("--context", type=int, default=16)
    co.add_argument("--batch", type=int, default=4)
    co.add_argument("--out", default="runs/coord", help="output folder")
    s = sub.add_parser("sweep")
    s.add_argument("sweep", help="a sweep folder")
    s.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"
    try:
        if args.command == "positions":
            runs = [Run(r) for r in args.runs]
            path, rows = positions_figure(
                runs, Path(args.out or runs[0].dir / "inspect"), args.windows
            )
            for r in rows:
                print(
                    f"{r['run']}: {r['mixer']}, loss at position 1 {r['first']:.3f}, "
                    f"at {len(r['loss_by_position'])} {r['last']:.3f}"
                )
            print(f"figure: {path}")
            return 0
        if args.command == "attribution":
            run = Run(args.run)
            paths, result = attribution_run(
                run,
                args.text,
                Path(args.out or run.dir / "inspect"),
                args.position,
                args.target,
                args.method,
                args.samples,
                args.steps,
            )
            print(
                f"log p({result['target_text']!r} | position {result['position']}) = "
                f"{result['f_text']:.4f}; at the baseline {result['f_baseline']:.4f}"
            )
            for m in ("shap", "ig"):
                if m in result:
                    print(f"{m}: sum {sum(result[m]):+.4f}")
            for p in paths:
                print(f"figure: {p}")
            return 0
        if args.command == "coord":
            return _coord(args)
        if args.command == "sweep":
            out = Path(args.out or Path(args.sweep) / "inspect")
            path, rows = sweep_summary(Path(args.sweep), out)
            for r in rows:
                print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
            print(f"figure: {path}")
            return 0
        run = Run(args.run)
        out = Path(args.out or run.dir / "inspect")
        if args.command == "attention":
            path, rows = attention_figure(run, args.text, out, args.layer)
            print(f"{'layer':>5} {'head':>4} {'entropy (nats)':>15}")
            for r in rows:
                print(f"{r['layer']:>5} {r['head']:>4} {r['entropy_nats']:>15.3f}")
            print(f"figure: {path}")
        elif args.command == "tokens":
            for p in tokens_figure(run, args.text, out):
                print(f"figure: {p}")
        else:
            results = probe_run(run, args.probe, args.windows)
            print(
                f"{'probe':<14} {'layer':>5} {'accuracy':>9} {'control':>8} {'majority':>9} {'selectivity':>12}"
            )
            for prop, rows in results.items():
                for r in rows:
                    print(
                        f"{prop:<14} {r['layer']:>5} {r['accuracy']:>9.3f} {r['control']:>8.3f} "
                        f"{r['majority']:>9.3f} {r['selectivity']:>12.3f}"
                    )
            (out / "probes.json").parent.mkdir(parents=True, exist_ok=True)
            (out / "probes.json").write_text(json.dumps(results, indent=2))
            print(f"figure: {probe_figure(results, out)}")
    except (ValueError, FileNotFoundError) as e:
        print(f"lab-inspect: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from lab.config.schema import DataConfig
from lab.data.corpus import load_corpus
from lab.inspection.attribution import attribution_run
from lab.inspection.losses import positions_figure, tokens_figure
from lab.inspection.maps import attention_figure
from lab.inspection.probes import PROBES, probe_figure, probe_run
from lab.inspection.scaling import sweep_summary
from lab.inspection.trained import Run


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

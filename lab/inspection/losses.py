"""Where a model's loss falls: per token of a text (``lab-inspect tokens``, HTML and PNG)
and by position in the context (``lab-inspect positions``, Kaplan et al. 2020, figure 20)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lab.inspection.trained import Run, save_figure  # noqa: E402
from lab.model.gpt import GPT  # noqa: E402


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
    return [save_figure(fig, out / "tokens.png"), out / "tokens.html"]


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
    return save_figure(fig, out / "positions.png"), rows

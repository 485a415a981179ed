"""Attention maps: a grid of every layer's and head's map over a text, with each head's
mean entropy (``lab-inspect attention``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lab.inspection.trained import Run, entropy, save_figure, token_labels, trace  # noqa: E402


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
    ticks = token_labels(run.tokenizer, ids[0].tolist())
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
    return save_figure(fig, out / "attention.png"), rows

"""The coordinate check of μP (Yang et al. 2022, "Tensor Programs V", section 7 and the
coord checks of microsoft/mup): train a few steps at several widths and watch the typical
size of each layer's activations against width. Under μP it stays flat (every layer's
update is of the same order at every width); under the standard parametrization it grows
with width once Adam's updates dominate the initialisation.

Sizes are mean |activation| over every coordinate of a fixed batch, recorded in the
forward pass of each step (step 1 is the initialisation; step t follows t − 1 updates):
the embedding's output, each block's token-mixer and MLP outputs (its residual branches),
the residual stream after each block, and the output logits. The slope of log size
against log width, per layer and step, is the check's figure of merit; the same slope of
each layer's change since the initialisation is also recorded.

The check runs with an untied output layer initialised at zero under both
parametrizations (``model.readout_zero_init``, the readout init Yang et al. recommend):
with a tied or randomly initialised readout, μP's logits at initialisation shrink as
1/sqrt(m), as they should, and hide the flatness of their updates for the first steps.
Adam's epsilon is set to 1e-12 so that it never stands in for a small gradient. The batch
should hold fewer tokens than the narrowest width has coordinates: μP's statements are
about width → ∞ at a fixed batch, and a batch of many more tokens than coordinates makes
each update partly average out, so sizes drift down with width at small widths.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lab.config.schema import ModelConfig
from lab.model.gpt import GPT

EPS = 1e-12


def _sizes(model: GPT, ids: torch.Tensor, targets: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """One forward pass: {layer: mean |activation|} and the loss."""
    seen: dict[str, float] = {}
    hooks = []

    def record(name):
        def hook(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            seen[name] = out.detach().clone()

        return hook

    hooks.append(model.drop.register_forward_hook(record("embedding")))
    for i, block in enumerate(model.blocks):
        hooks.append(block.attn.register_forward_hook(record(f"block{i}.mixer")))
        hooks.append(block.mlp.register_forward_hook(record(f"block{i}.mlp")))
        hooks.append(block.register_forward_hook(record(f"block{i}.out")))
    try:
        logits, loss = model(ids, targets)
    finally:
        for h in hooks:
            h.remove()
    seen["logits"] = logits.detach().clone()
    return seen, loss


def _slope(log_w: np.ndarray, sizes: list[float]) -> float:
    """Least-squares slope of log size on log width; NaN where a size is 0 (the logits of
    a zero-initialised readout at step 1)."""
    y = np.asarray(sizes, dtype=float)
    if not (y > 0).all():
        return float("nan")
    return float(np.polyfit(log_w, np.log(y), 1)[0])


def coord_check(
    base: ModelConfig,
    widths: list[int],
    parametrizations=("sp", "mup"),
    steps: int = 5,
    lr: float = 1e-2,
    batch: torch.Tensor | None = None,
    seed: int = 0,
) -> dict:
    """Train ``steps`` Adam steps at each width (d_model; heads and depth from ``base``,
    μP's base width = the smallest) under each parametrization, on one fixed batch (ids
    (B, T + 1)). Returns {parametrization: {"sizes": {layer: [[size per width] per
    step]]}, "slopes": {layer: [slope per step]}}} and the widths."""
    from lab.model.parametrization import param_groups

    if len(widths) < 2:
        raise ValueError("a coordinate check needs at least 2 widths")
    for w in widths:
        if w % base.n_head:
            raise ValueError(f"width {w} does not divide into model.n_head={base.n_head} heads")
    if batch is None:
        g = torch.Generator().manual_seed(seed)
        batch = torch.randint(0, base.vocab_size, (8, base.context + 1), generator=g)
    ids, targets = batch[:, :-1], batch[:, 1:]
    out = {"widths": list(widths), "steps": steps, "lr": lr}
    for p in parametrizations:
        sizes: dict[str, list[list[float]]] = {}
        changes: dict[str, list[list[float]]] = {}
        for w in widths:
            cfg = replace(base, d_model=w, parametrization=p, base_d_model=min(widths))
            torch.manual_seed(seed)
            model = GPT(cfg)
            opt = torch.optim.AdamW(param_groups(model, 0.0), lr=lr, eps=EPS)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            first = None
            for step in range(steps):
                seen, loss = _sizes(model, ids, targets)
                first = first or seen
                for name, v in seen.items():
                    sizes.setdefault(name, [[] for _ in range(steps)])[step].append(
                        float(v.abs().mean())
                    )
                    if step:  # the change since the initialisation
                        changes.setdefault(name, [[] for _ in range(steps - 1)])[step - 1].append(
                            float((v - first[name]).abs().mean())
                        )
                opt.zero_grad()
                loss.backward()
                opt.step()
        log_w = np.log(np.asarray(widths, dtype=float))
        slopes = {name: [_slope(log_w, w) for w in per_step] for name, per_step in sizes.items()}
        change_slopes = {
            name: [_slope(log_w, w) for w in per_step] for name, per_step in changes.items()
        }
        out[p] = {
            "sizes": sizes,
            "slopes": slopes,
            "changes": changes,
            "change_slopes": change_slopes,
        }
    return out


def max_abs_slope(result: dict, parametrization: str, from_step: int = 3) -> float:
    """The largest |slope| over every layer at steps ≥ ``from_step`` (1-based)."""
    slopes = result[parametrization]["slopes"]
    return max(
        abs(s) for per_step in slopes.values() for s in per_step[from_step - 1 :] if np.isfinite(s)
    )


def figure(result: dict, path: Path) -> Path:
    """One panel per parametrization: each layer's activation size against width, at the
    last step (solid) and at the first (dotted, the initialisation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = [p for p in ("sp", "mup") if p in result]
    fig, axes = plt.subplots(1, len(params), figsize=(5.6 * len(params), 4.2), squeeze=False)
    widths = result["widths"]
    for ax, p in zip(axes[0], params):
        sizes = result[p]["sizes"]
        for i, (name, per_step) in enumerate(sizes.items()):
            color = plt.cm.viridis(i / max(1, len(sizes) - 1))
            slope = result[p]["slopes"][name][-1]
            ax.plot(widths, per_step[-1], "o-", color=color, label=f"{name} ({slope:+.2f})")
            ax.plot(widths, per_step[0], ":", color=color, lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width d_model")
        ax.set_ylabel("mean |activation|")
        ax.set_title(
            f"{p}: after {result['steps'] - 1} Adam steps at lr {result['lr']:g} "
            f"(max |slope| from step 3: {max_abs_slope(result, p):.2f})",
            fontsize=8,
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, title="layer (log-slope at the last step)", title_fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "coord.json").write_text(json.dumps(result, indent=2) + "\n")
    return out / "coord.json", figure(result, out / "coord.png")

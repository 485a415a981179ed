"""Figures of runs and fitted laws (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.laws import Fit  # noqa: E402
from analysis.load import format_si  # noqa: E402

N_LABEL = {"non_embedding": "non-embedding parameters N", "total": "parameters N (total)"}


def _curve_x(values: np.ndarray, extend: float = 2.0) -> np.ndarray:
    lo, hi = values.min(), values.max()
    return np.geomspace(lo / extend, hi * extend, 200)


def plot_loss_vs_n_and_d(df: pd.DataFrame, fit: Fit | None, path: str | Path) -> list[Path]:
    """Two panels: loss against N (one colour per token budget D) and against D (one colour
    per model size), with the fitted law's curves, dashed beyond the data. Writes PNG and
    SVG next to each other; returns their paths."""
    conv = df.attrs.get("conventions", {})
    loss_name = conv.get("loss", "loss").replace("_", " ")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    panels = (
        (axes[0], "n_params", "tokens", N_LABEL.get(conv.get("n_params"), "parameters N"), "D"),
        (axes[1], "tokens", "n_params", "training tokens D", "N"),
    )
    for ax, xcol, group_col, xlabel, group_symbol in panels:
        groups = sorted(df[group_col].unique())
        colors = plt.cm.viridis(np.linspace(0.05, 0.9, len(groups)))
        for color, g in zip(colors, groups):
            sub = df[df[group_col] == g].sort_values(xcol)
            ax.plot(
                sub[xcol], sub["loss"], "o", color=color, label=f"{group_symbol} = {format_si(g)}"
            )
            if fit is not None and set(fit.law.variables) >= {xcol, group_col}:
                xs = _curve_x(df[xcol].to_numpy())
                ys = fit.predict(**{xcol: xs, group_col: np.full_like(xs, g)})
                inside = (xs >= df[xcol].min()) & (xs <= df[xcol].max())
                ax.plot(xs, np.where(inside, ys, np.nan), "-", color=color, lw=1.5)
                ax.plot(xs, np.where(inside, np.nan, ys), "--", color=color, lw=1, alpha=0.6)
            elif fit is not None and fit.law.variables == (xcol,):
                xs = _curve_x(df[xcol].to_numpy())
                ax.plot(xs, fit.predict(**{xcol: xs}), "-", color="black", lw=1.5)
        _log_axes(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{loss_name} (nats/token)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title=None)
    title = "Loss against model size and data size"
    if fit is not None:
        title += f"\nfit: {fit.describe()}  (solid: within the data, dashed: extrapolated)"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _log_axes(ax) -> None:
    """Log-log axes labelled in plain numbers (1.8, 2.0; 100k, 1M), not powers of ten."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: format_si(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_major_locator(ticker.MaxNLocator(7))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2f"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _save(fig, path: str | Path) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        out = path.with_suffix(suffix)
        fig.savefig(out, dpi=130)
        written.append(out)
    plt.close(fig)
    return written

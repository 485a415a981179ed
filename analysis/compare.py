"""Compare how groups of runs scale: one law per group, side by side (``lab-analyze compare``).

Kaplan et al. (2020, section 3.2 and figure 7) compare transformers with LSTMs by fitting
L(N) to each family and asking where, and whether, the curves cross. ``compare`` does that
for runs grouped by any config key (``model.mixer``, ``model.norm``, ``optim.lr``, ...):
each group gets the same law (L(N) when the groups vary N only, L(N, D) when they also
vary D and have the runs for it), fitted as ``lab-analyze fit`` fits (Huber on log-loss,
L-BFGS from a grid of starts), with bootstrap intervals; the figure draws every group's
runs, curve and band together; the table puts the exponents side by side; and each pair of
groups is checked for a crossing of their fitted curves, inside the data's N range or
beyond it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_fit, summarize
from analysis.fitting import fit_law
from analysis.laws import LAWS
from analysis.load import keep_best_setting
from lab.runs.files import write_text_atomic

# L(N) with its offset needs a few more sizes than parameters to be more than a curve
# through points; below this many sizes per group, compare fits the pure power law
MIN_SIZES_FOR_OFFSET = 6


def choose_compare_law(groups: dict[str, pd.DataFrame]) -> str:
    """One law for every group: chinchilla when each group varies N and D with enough runs;
    otherwise L(N) = E + A/N^α with enough sizes, A/N^α with fewer."""
    frames = list(groups.values())
    if all(
        g["n_params"].nunique() > 1
        and g["tokens"].nunique() > 1
        and len(g) >= LAWS["chinchilla"].n_params + 2
        for g in frames
    ):
        return "chinchilla"
    sizes = min(g["n_params"].nunique() for g in frames)
    return "n" if sizes >= MIN_SIZES_FOR_OFFSET else "n_pure"


def _curve_n(params: dict, law, n: np.ndarray, d: float | None) -> np.ndarray:
    variables = {"n_params": n}
    if "tokens" in law.variables:
        variables["tokens"] = np.full_like(n, d)
    return law.predict(params, **variables)


def crossings(fits: dict, law, n_range: tuple[float, float], d: float | None) -> list[dict]:
    """For each pair of groups: where their fitted loss curves L(N) (at D = ``d`` for a
    two-variable law) cross between N_min/10 and 100·N_max, and whether inside the data."""
    lo, hi = n_range
    grid = np.geomspace(lo / 10, hi * 100, 4000)
    out = []
    for a, b in itertools.combinations(sorted(fits), 2):
        diff = _curve_n(fits[a].params, law, grid, d) - _curve_n(fits[b].params, law, grid, d)
        sign = np.sign(diff)
        idx = np.flatnonzero(sign[:-1] * sign[1:] < 0)
        points = []
        for i in idx:  # log-linear interpolation between the grid points around the change
            t = diff[i] / (diff[i] - diff[i + 1])
            points.append(float(np.exp(np.log(grid[i]) + t * np.log(grid[i + 1] / grid[i]))))
        inside = [p for p in points if lo <= p <= hi]
        lower_mid = (
            a
            if _curve_n(fits[a].params, law, np.array([np.sqrt(lo * hi)]), d)[0]
            < (_curve_n(fits[b].params, law, np.array([np.sqrt(lo * hi)]), d)[0])
            else b
        )
        if inside:
            text = f"{a} and {b} cross inside the data at N ≈ " + ", ".join(
                f"{p:.3g}" for p in inside
            )
        else:
            text = (
                f"{a} and {b} do not cross within the data (N {lo:.3g}–{hi:.3g}); "
                f"{lower_mid} is lower there"
            )
            beyond = [p for p in points if not lo <= p <= hi]
            if beyond:
                text += "; extrapolated, they cross at N ≈ " + ", ".join(f"{p:.3g}" for p in beyond)
        out.append(
            {
                "groups": [a, b],
                "inside": inside,
                "beyond": [p for p in points if p not in inside],
                "text": text,
            }
        )
    return out


def compare(
    df: pd.DataFrame,
    by: str,
    law: str = "auto",
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    all_runs: bool = False,
) -> dict:
    """Fit one law per value of column ``by`` of ``df`` (``analysis.load.load_runs`` with
    ``config_keys=(by,)``). Returns the groups' fits, intervals and crossings.

    Raises ValueError when no run has ``by``, when fewer than two groups have values, or
    when a group has too few runs for the law."""
    if by not in df.columns or df[by].isna().all():
        raise ValueError(
            f"--by {by}: no run has this key (a config key such as model.mixer, model.norm or "
            "optim.lr; for a table file, one of its columns)"
        )
    keyed = df[df[by].notna()]
    groups = {str(k): g.reset_index(drop=True) for k, g in keyed.groupby(keyed[by].astype(str))}
    selections = {}
    if "hparams" in keyed and not all_runs:  # the best setting per (N, D), within each group
        for name, g in groups.items():
            groups[name], chosen = keep_best_setting(g)
            if chosen:
                selections[name] = chosen["text"]
    if len(groups) < 2:
        raise ValueError(
            f"--by {by}: every run has the same value ({next(iter(groups))}); nothing to compare"
        )
    law_name = choose_compare_law(groups) if law == "auto" else law
    law_obj = LAWS[law_name] if law_name in LAWS else None
    if law_obj is None:
        raise ValueError(f"unknown law {law_name!r}; laws are {tuple(LAWS)}")
    if "n_params" not in law_obj.variables:
        raise ValueError(f"compare plots L against N: choose a law in N (not {law_name!r})")
    fits, samples, rows = {}, {}, []
    for name, g in groups.items():
        if len(g) < law_obj.n_params:
            raise ValueError(
                f"--by {by}: group {name!r} has {len(g)} run(s), fewer than the "
                f"{law_obj.n_params} parameters of {law_obj.formula}"
            )
        fits[name] = fit_law(g, law_obj)
        samples[name] = bootstrap_fit(g, fits[name], resamples, seed) if resamples > 0 else []
        rows.append(
            {
                "group": name,
                "runs": len(g),
                "sizes": int(g["n_params"].nunique()),
                "n_range": [float(g["n_params"].min()), float(g["n_params"].max())],
                "law_text": fits[name].describe(),
                "params": summarize(fits[name].params, samples[name], level),
                "converged": fits[name].converged,
            }
        )
    n_range = (float(keyed["n_params"].min()), float(keyed["n_params"].max()))
    d = float(keyed["tokens"].max()) if "tokens" in law_obj.variables else None
    return {
        "by": by,
        "law": law_name,
        "formula": law_obj.formula,
        "level": level,
        "resamples": resamples,
        "tokens_for_curves": d,
        "groups": rows,
        "crossings": crossings(fits, law_obj, n_range, d),
        "selection": selections,
        "conventions": df.attrs.get("conventions"),
        "_fits": fits,
        "_samples": samples,
        "_frames": groups,
    }


def table(result: dict) -> str:
    """The groups' parameters with their intervals, side by side."""
    names = list(result["groups"][0]["params"])
    level = int(result["level"] * 100)
    lines = [f"{result['formula']} per {result['by']} ({level}% bootstrap intervals):"]
    head = f"  {'group':>12} {'runs':>4}  " + "  ".join(f"{n:>26}" for n in names)
    lines.append(head)
    for g in result["groups"]:
        cells = []
        for n in names:
            p = g["params"][n]
            if np.isfinite(p["low"]):
                cells.append(f"{p['value']:.4g} [{p['low']:.3g}, {p['high']:.3g}]".rjust(26))
            else:
                cells.append(f"{p['value']:.4g}".rjust(26))
        lines.append(f"  {g['group']:>12} {g['runs']:>4}  " + "  ".join(cells))
    lines += [f"  {c['text']}" for c in result["crossings"]]
    lines += [f"  {name}: {text}" for name, text in result.get("selection", {}).items()]
    return "\n".join(lines)


def figure(result: dict, path: Path) -> Path:
    """Every group's runs, fitted L(N) and its band on one log-log figure."""
    from analysis.plot import _log_axes, plt, save_figure

    law = LAWS[result["law"]]
    d = result["tokens_for_curves"]
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    frames = result["_frames"]
    lo = min(g["n_params"].min() for g in frames.values())
    hi = max(g["n_params"].max() for g in frames.values())
    grid = np.geomspace(lo / 2, hi * 4, 200)
    for i, (name, g) in enumerate(frames.items()):
        color = f"C{i}"
        ax.plot(g["n_params"], g["loss"], "o", color=color, label=f"{result['by']}={name}")
        fit = result["_fits"][name]
        ax.plot(grid, _curve_n(fit.params, law, grid, d), "-", color=color, lw=1.4)
        s = result["_samples"][name]
        if s:
            preds = np.array([_curve_n(p, law, grid, d) for p in s])
            with np.errstate(invalid="ignore"):
                band = np.nanpercentile(preds, [2.5, 97.5], axis=0)
            ax.fill_between(grid, band[0], band[1], color=color, alpha=0.15, lw=0)
    for c in result["crossings"]:
        for p in c["inside"]:
            ax.axvline(p, color="gray", ls=":", lw=1)
    _log_axes(ax)
    conv = result.get("conventions") or {}
    ax.set_xlabel(f"N ({conv.get('n_params', 'parameters')})")
    ax.set_ylabel(f"loss ({conv.get('loss', 'loss')})")
    title = f"{result['formula']} per {result['by']}"
    if d is not None:
        title += f" (curves at D = {d:.3g})"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, formats=(".png",))[0]


def write(result: dict, out: Path) -> tuple[Path, Path]:
    """compare.json (the result without its in-memory parts) and compare.png."""
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    write_text_atomic(out / "compare.json", json.dumps(public, indent=2) + "\n")
    return out / "compare.json", figure(result, out / "compare.png")

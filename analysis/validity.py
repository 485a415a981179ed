"""Is a fit worth believing? A backtest on held-out large runs, and warnings about designs
that cannot identify the law they are fitted with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fitting import fit_law, prediction_interval
from analysis.laws import Law

WARM_STARTS = 8  # refits of a subset start from the full fit and its best few starts


def backtest(df: pd.DataFrame, law: Law, warm=None) -> dict:
    """Fit on all runs but the largest and predict the held-out ones.

    "Largest" is the largest value of the law's first variable (N for the L(N, D) laws):
    every run at the largest model size is held out. ``warm``, a fit of all the runs,
    starts the refit from that fit's converged starts (its optimum among them) instead of
    the whole grid. Returns the per-run relative errors (predicted / observed − 1) and
    their mean absolute value. Raises ValueError when too few runs remain to fit."""
    var = law.variables[0]
    held = df[var] == df[var].max()
    train, test = df[~held], df[held]
    if df[var].nunique() < 2:
        raise ValueError(f"backtest needs at least 2 distinct values of {var}")
    starts = None
    if warm is not None and "polished" in warm.extra:
        starts = np.vstack([warm.theta[None, :], warm.extra["polished"][:WARM_STARTS]])
    fit = fit_law(train, law, starts=starts)  # raises ValueError when too few runs remain
    pred = fit.predict(**{v: test[v].to_numpy() for v in law.variables})
    rel = pred / test["loss"].to_numpy() - 1.0
    return {
        "held_out": f"{var} = {df[var].max():.4g} ({len(test)} runs)",
        "fitted_on": int(len(train)),
        "params": fit.params,
        "runs": test["run"].astype(str).tolist() if "run" in test else [],
        "predicted": pred.tolist(),
        "observed": test["loss"].tolist(),
        "relative_error": rel.tolist(),
        "mean_abs_relative_error": float(np.mean(np.abs(rel))),
    }


def design_warnings(df: pd.DataFrame, law: Law) -> list[str]:
    """Warnings about the design of the runs for this law."""
    notes = []
    if set(law.variables) >= {"n_params", "tokens"}:
        ratio_spread = np.std(np.log(df["tokens"] / df["n_params"]))
        if ratio_spread < 0.05:
            notes.append(
                "the runs have a (nearly) constant D/N ratio: the effects of N and D cannot be "
                "told apart, so the law's N and D terms are not identified; vary D at fixed N"
            )
        for var in ("n_params", "tokens"):
            if df[var].nunique() < 3:
                notes.append(
                    f"only {df[var].nunique()} distinct values of {var}: its exponent rests on too few points"
                )
    elif df[law.variables[0]].nunique() < law.n_params:
        notes.append(f"only {df[law.variables[0]].nunique()} distinct values of {law.variables[0]}")
    return notes


def rolling_backtest(
    df: pd.DataFrame, law: Law, resamples: int = 200, level: float = 0.95, last: int = 4, warm=None
) -> dict:
    """Fit on the runs up to each model size, predict the runs at the next size with a
    prediction interval, for the ``last`` largest held-out sizes that leave enough runs to
    fit (at least the law's parameters + 1). Returns each prediction (error, interval,
    inside or not) and the share of predictions inside their intervals."""
    from analysis.bootstrap import bootstrap_fit

    var = law.variables[0]
    sizes = np.sort(df[var].unique())
    rows = []
    for i in range(max(1, len(sizes) - last), len(sizes)):
        train, test = df[df[var] <= sizes[i - 1]], df[df[var] == sizes[i]]
        if len(train) < law.n_params + 1:
            continue
        starts = None
        if warm is not None and "best" in warm.extra:
            starts = np.vstack([warm.theta[None, :], warm.extra["best"][:WARM_STARTS]])
        fit = fit_law(train, law, starts=starts)
        # quick refits (warm, at most 200 iterations): the interval is mostly the runs' scatter
        samples = bootstrap_fit(train, fit, resamples, seed=i, max_iter=200) if resamples else []
        pi = prediction_interval(
            fit, samples, train, {v: test[v].to_numpy() for v in law.variables}, level, seed=i
        )
        observed = test["loss"].to_numpy(dtype=float)
        for j in range(len(test)):
            rows.append(
                {
                    "fitted_up_to": float(sizes[i - 1]),
                    "predicted_size": float(sizes[i]),
                    "run": str(test["run"].iloc[j]) if "run" in test else str(j),
                    "observed": float(observed[j]),
                    "predicted": float(pi["predicted"][j]),
                    "low": float(pi["low"][j]),
                    "high": float(pi["high"][j]),
                    "relative_error": float(pi["predicted"][j] / observed[j] - 1),
                    "inside": bool(pi["low"][j] <= observed[j] <= pi["high"][j]),
                }
            )
    if not rows:
        raise ValueError(f"too few runs below the largest {var} for a rolling backtest")
    return {
        "variable": var,
        "level": level,
        "predictions": rows,
        "coverage": float(np.mean([r["inside"] for r in rows])),
        "median_width": float(np.median([(r["high"] - r["low"]) / r["predicted"] for r in rows])),
        "mean_abs_relative_error": float(np.mean([abs(r["relative_error"]) for r in rows])),
    }

"""Is a fit worth believing? A backtest on held-out large runs, and warnings about designs
that cannot identify the law they are fitted with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fitting import fit_law, prediction_interval, residuals
from analysis.laws import Law

WARM_STARTS = 8  # a fold's fit starts from the previous fold's best few solutions
# Sizes within this relative distance of their neighbour are one size: tables that store N
# as a float computed per run (Epoch AI's extraction of the Chinchilla runs) give the same
# model as 73.8200M and 73.8203M, and a cut between the two would "predict" a model it fitted.
SIZE_TOLERANCE = 1e-3


def sizes(values) -> np.ndarray:
    """Each value's size: the largest value of its group, values chained within
    ``SIZE_TOLERANCE`` (relative) of their neighbour forming one group."""
    x = np.asarray(values, dtype=float)
    u = np.unique(x)
    if u.size == 0:
        return x
    starts = np.r_[True, u[1:] > u[:-1] * (1 + SIZE_TOLERANCE)]
    group = np.cumsum(starts) - 1
    tops = u[np.r_[np.flatnonzero(starts)[1:] - 1, u.size - 1]]
    return tops[group[np.searchsorted(u, x)]]


def distinct_sizes(values) -> np.ndarray:
    """The sorted distinct sizes among ``values`` (``sizes``)."""
    return np.unique(sizes(values))


def fold_fit(train: pd.DataFrame, law: Law, previous=None):
    """A backtest fold's fit from what that fold knows: the law's whole grid of starts for
    the first (smallest) fold, then the best solutions of the previous fold, whose runs are
    a subset of this one's. Never the fit of all the runs: where a fold's data leave the
    law poorly determined, a refit started at that optimum stays near it, so the held-out
    runs would shape the fit that predicts them and the backtest would look better than
    the law extrapolates. Raises ValueError when too few runs remain."""
    if previous is None:  # screened: a fold's grid fit costs about what the full fit does
        return fit_law(train, law, screen=True)
    return fit_law(train, law, starts=previous.extra["best"][:WARM_STARTS])


def backtest(df: pd.DataFrame, law: Law, fit=None) -> dict:
    """Fit on all runs but the largest and predict the held-out ones.

    "Largest" is the largest value of the law's first variable (N for the L(N, D) laws):
    every run at the largest model size is held out. ``fit``: the law already fitted to
    exactly those runs (the rolling backtest's last fold), reused; else they are fitted
    here from the law's grid. Returns the per-run relative errors (predicted / observed −
    1) and their mean absolute value. Raises ValueError when too few runs remain to fit."""
    var = law.variables[0]
    size = sizes(df[var])
    held = size == size.max()
    train, test = df[~held], df[held]
    if distinct_sizes(df[var]).size < 2:
        raise ValueError(f"backtest needs at least 2 distinct values of {var}")
    if fit is None or fit.n_points != len(train):
        fit = fold_fit(train, law)  # raises ValueError when too few runs remain
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
            count = distinct_sizes(df[var]).size
            if count < 3:
                notes.append(
                    f"only {count} distinct values of {var}: its exponent rests on too few points"
                )
    elif (count := distinct_sizes(df[law.variables[0]]).size) < law.n_params:
        notes.append(f"only {count} distinct values of {law.variables[0]}")
    return notes


MAX_FOLDS = 6  # rolling-backtest folds, spread over the ladder


def backtest_cuts(
    df: pd.DataFrame, law: Law, max_folds: int = MAX_FOLDS, min_sizes: int | None = None
) -> list[float]:
    """Where the rolling backtest cuts the ladder: sizes (of the law's first variable) with
    at least ``min_sizes`` sizes up to them (default: the law's ``min_sizes``, those that
    determine it) and enough runs up to them to fit the law (its parameters + 1), a larger
    size above; at most ``max_folds``, spread evenly, the last always among them."""
    var = law.variables[0]
    first = (law.min_sizes if min_sizes is None else min_sizes) - 1
    tops = distinct_sizes(df[var])  # a cut at a size's largest value keeps it whole
    counts = np.array([(df[var] <= s).sum() for s in tops])
    cuts = [i for i in range(max(first, 1), len(tops) - 1) if counts[i] >= law.n_params + 1]
    if len(cuts) > max_folds:
        pick = np.unique(np.round(np.linspace(0, len(cuts) - 1, max_folds)).astype(int))
        cuts = [cuts[j] for j in pick]
    return [float(tops[i]) for i in cuts]


def rolling_backtest(
    df: pd.DataFrame, law: Law, resamples: int = 100, level: float = 0.95, fits=None
) -> dict:
    """Fit on the runs up to each cut (``backtest_cuts``) and predict every larger run.

    Every prediction's log error, scale and distance calibrate the intervals
    (``analysis.calibration``); each fold's predictions of the next size (the runs up to
    the next cut; every larger run for the last) are then checked
    against an interval calibrated on the other folds only. Returns those predictions
    (``predictions``: error, interval, inside or not), their coverage and median width
    (``coverage``, ``median_width``, ``checked``), the same for the uncalibrated bootstrap
    interval, the calibration of the whole ladder (``calibration``: κ, the scores, q) and
    how far the backtests reached (``reach``, × the fitted size). Each fold is fitted from
    what it knows (``fold_fit``); ``fits``, a list, receives each fold's fit (the last is
    that of every run below the largest size, which ``backtest`` reuses). Raises
    ValueError when no cut leaves enough runs to fit."""
    from analysis.bootstrap import bootstrap_fit
    from analysis.calibration import (
        DISTANCE_VARIABLES,
        boot_variance,
        calibrate,
        cross_validated,
        largest,
        local_sigma,
        log_ratio,
    )
    from analysis.calibration import distance as distance_of

    var = law.variables[0]
    cuts = backtest_cuts(df, law)
    if not cuts:
        raise ValueError(f"too few runs below the largest {var} for a rolling backtest")
    axes = [v for v in DISTANCE_VARIABLES if v in df]
    rows, fit = [], None
    for i, cut in enumerate(cuts):
        train, test = df[df[var] <= cut], df[df[var] > cut]
        fit = fold_fit(train, law, previous=fit)
        if fits is not None:
            fits.append(fit)
        # quick refits (warm, at most 200 iterations): the interval is mostly the runs' scatter
        samples = bootstrap_fit(train, fit, resamples, seed=i, max_iter=200) if resamples else []
        points = {v: test[v].to_numpy() for v in law.variables}
        pi = prediction_interval(fit, samples, train, points, level, seed=i)
        sigma = np.broadcast_to(
            local_sigma(residuals(train, fit), law.n_params, log_ratio(train), log_ratio(test)),
            len(test),
        )
        boot_var = boot_variance(law, samples, points)
        d = distance_of({v: test[v].to_numpy() for v in axes}, largest(train))
        # "the next size": the runs up to the next cut (all above the last cut)
        next_size = cuts[i + 1] if i + 1 < len(cuts) else test[var].max()
        observed = test["loss"].to_numpy(dtype=float)
        for j in range(len(test)):
            rows.append(
                {
                    "fitted_up_to": float(cut),
                    "predicted_size": float(test[var].iloc[j]),
                    "next": bool(test[var].iloc[j] <= next_size),
                    "run": str(test["run"].iloc[j]) if "run" in test else str(j),
                    "observed": float(observed[j]),
                    "predicted": float(pi["predicted"][j]),
                    "bootstrap_low": float(pi["low"][j]),
                    "bootstrap_high": float(pi["high"][j]),
                    "relative_error": float(pi["predicted"][j] / observed[j] - 1),
                    "sigma": float(sigma[j]),
                    "boot_var": float(boot_var[j]),
                    "distance": float(d[j]),
                }
            )
    checked = cross_validated(rows, level)
    cal = calibrate(rows)
    nxt = [r for r in rows if r["next"]]
    boot_inside = [r["bootstrap_low"] <= r["observed"] <= r["bootstrap_high"] for r in nxt]
    boot_width = [(r["bootstrap_high"] - r["bootstrap_low"]) / r["predicted"] for r in nxt]
    q, enough = cal.q(level)
    return {
        "variable": var,
        "level": level,
        "folds": len(cuts),
        "predictions": [_public(r) for r in nxt if "inside" in r],
        "coverage": checked["coverage"],
        "median_width": checked["median_width"],
        "checked": checked["checked"],
        "bootstrap_coverage": float(np.mean(boot_inside)),
        "bootstrap_median_width": float(np.median(boot_width)),
        "mean_abs_relative_error": float(np.mean([abs(r["relative_error"]) for r in nxt])),
        "calibration": {
            **cal.to_json(),
            "q": q,
            "enough": enough,
            "predictions": len(rows),
        },
        "reach": max(r["predicted_size"] / r["fitted_up_to"] for r in rows),
    }


def _public(row: dict) -> dict:
    keep = ("fitted_up_to", "predicted_size", "run", "observed", "predicted", "low", "high")
    return {
        **{k: row[k] for k in keep},
        "relative_error": row["relative_error"],
        "inside": row["inside"],
        "distance": row["distance"],
    }

"""Bootstrap over runs: refit resamples, report percentile intervals.

A resample draws the runs with replacement; for the Huber fits it is a vector of counts
used as weights, so every resample is refitted in one batched L-BFGS, each started from the
full-data optimum (as Besiroglu et al. 2024 refit theirs). Intervals are percentiles of the
refitted values (default 95%: 2.5th to 97.5th).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.laws import HUBER_DELTA, design, objective
from analysis.optim import lbfgs_batched

if TYPE_CHECKING:
    from analysis.fitting import Fit


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each run is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def bootstrap_fit(
    df: pd.DataFrame,
    fit: Fit,
    resamples: int = 1000,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    max_iter: int = 1000,
) -> list[dict[str, float]]:
    """Refit ``fit.law`` on ``resamples`` bootstrap resamples of ``df``'s runs; returns the
    parameters of each refit (those whose objective came out finite). ``max_iter`` caps the
    L-BFGS iterations (the rolling backtest's quick intervals use fewer)."""
    log_x, log_loss = design(df, fit.law)
    weights = resample_counts(log_loss.size, resamples, seed)
    starts = np.repeat(fit.theta[None, :], resamples, axis=0)
    res = lbfgs_batched(
        objective(fit.law, log_x, log_loss, weights, delta), starts, max_iter=max_iter
    )
    return [fit.law.params(theta) for theta, f in zip(res.x, res.fun) if np.isfinite(f)]


def interval(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``values`` (NaNs ignored)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


def summarize(
    point: dict[str, float], samples: list[dict[str, float]], level: float = 0.95
) -> dict:
    """{name: {value, low, high}} for every name in ``point``."""
    out = {}
    for name, value in point.items():
        lo, hi = (
            interval([s.get(name, np.nan) for s in samples], level) if samples else (np.nan, np.nan)
        )
        out[name] = {"value": value, "low": lo, "high": hi}
    return out

"""Prediction intervals calibrated on the ladder's own backtests.

A bootstrap interval (refits plus resampled residuals) holds the error of estimating a law
that is right; it leaves out the error of extrapolating a law that is not exactly right,
which grows with the distance from the runs (Choshen et al. 2024, "A Hitchhiker's Guide to
Scaling Law Estimation", measure how these errors behave). Here every backtest prediction
(fit on the runs up to one size, predict each larger run) gives a log error e, a scale

    s = sqrt(σ² + v_boot + (κ·d)²)

(σ: the fitted runs' scatter about the law near the point's D/N, ``local_sigma``; v_boot:
the bootstrap refits' variance of the log prediction; d: how far the point lies beyond the fitted runs, in log N and log D), with
κ, the extrapolation error per unit of log distance, fitted by Gaussian maximum likelihood
on those errors. The interval is log prediction ± q·s, with q the split-conformal quantile of
|e|/s over the backtests (Lei et al. 2018, "Distribution-free predictive inference for
regression"; a normalised score, so the width follows each target's own scale).

Its coverage is checked out of sample: each fold's predictions of the next size, with κ and
q recalibrated on the other folds only (cross-conformal, Vovk 2015).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DISTANCE_VARIABLES = ("n_params", "tokens", "compute")
KAPPA_BOUNDS = (1e-6, 3.0)


def largest(df) -> dict[str, float]:
    """The largest fitted N, D and C (those the runs have): where extrapolation begins."""
    return {v: float(df[v].max()) for v in DISTANCE_VARIABLES if v in df}


def distance(points: dict, largest: dict) -> np.ndarray:
    """How far each point lies beyond the fitted runs: the Euclidean norm of
    max(0, log(x / largest x)) over N and D (the compute for laws of C alone)."""
    names = [v for v in ("n_params", "tokens") if v in points] or [
        v for v in DISTANCE_VARIABLES if v in points
    ]
    total = 0.0
    for v in names:
        x = np.atleast_1d(np.asarray(points[v], dtype=float))
        total = total + np.maximum(0.0, np.log(x / largest[v])) ** 2
    return np.sqrt(total)


def scale(sigma, boot_var, d, kappa: float) -> np.ndarray:
    """The log-space scale of a prediction's error (module docstring)."""
    return np.sqrt(np.asarray(sigma) ** 2 + np.asarray(boot_var) + (kappa * np.asarray(d)) ** 2)


def fit_kappa(e, sigma, boot_var, d) -> float:
    """κ by Gaussian maximum likelihood of the errors e ~ N(0, s²); the smallest bound when
    the errors do not grow with the distance."""
    from scipy.optimize import minimize_scalar

    e, d = np.asarray(e, dtype=float), np.asarray(d, dtype=float)
    if not (d > 0).any():
        return KAPPA_BOUNDS[0]

    def nll(log_kappa):
        v = scale(sigma, boot_var, d, math.exp(log_kappa)) ** 2
        return 0.5 * float(np.sum(np.log(v) + e**2 / v))

    lo, hi = (math.log(b) for b in KAPPA_BOUNDS)
    return float(math.exp(minimize_scalar(nll, bounds=(lo, hi), method="bounded").x))


def conformal_quantile(scores, level: float) -> tuple[float, bool]:
    """The split-conformal quantile of ``scores`` at ``level`` (the ⌈(m+1)·level⌉-th
    smallest of m), and whether there were enough for it; with fewer than
    level / (1 − level) scores it is the largest, which covers about m / (m + 1)."""
    s = np.sort(np.asarray(scores, dtype=float))
    m = s.size
    if m == 0:
        return math.nan, False
    k = math.ceil((m + 1) * level)
    return (float(s[k - 1]), True) if k <= m else (float(s[-1]), False)


@dataclass
class Calibration:
    """κ and the backtests' normalised scores |e|/s: all an interval at any level needs."""

    kappa: float
    scores: np.ndarray
    folds: int

    @classmethod
    def from_errors(cls, e, sigma, boot_var, d, folds: int) -> Calibration:
        kappa = fit_kappa(e, sigma, boot_var, d)
        scores = np.abs(np.asarray(e, dtype=float)) / scale(sigma, boot_var, d, kappa)
        return cls(kappa=kappa, scores=scores, folds=folds)

    def q(self, level: float) -> tuple[float, bool]:
        return conformal_quantile(self.scores, level)

    def interval(self, log_pred, sigma, boot_var, d, level: float) -> tuple[np.ndarray, ...]:
        """low and high of the calibrated interval around ``log_pred``."""
        half = self.q(level)[0] * scale(sigma, boot_var, d, self.kappa)
        return np.exp(log_pred - half), np.exp(log_pred + half)

    def to_json(self) -> dict:
        return {"kappa": self.kappa, "scores": self.scores.tolist(), "folds": self.folds}

    @classmethod
    def from_json(cls, saved: dict) -> Calibration:
        return cls(float(saved["kappa"]), np.asarray(saved["scores"], dtype=float), saved["folds"])


def residual_sigma(resid, n_params: int) -> float:
    """The runs' scatter about the law: the RMS of the centred log residuals, corrected for
    the parameters fitted."""
    r = np.asarray(resid, dtype=float)
    return float(np.sqrt(np.sum((r - np.median(r)) ** 2) / max(1, r.size - n_params)))


def log_ratio(points) -> np.ndarray | None:
    """log(D/N) at each point (a table or a dict of arrays), or None where N or D is not
    among them."""
    if "n_params" not in points or "tokens" not in points:
        return None
    n = np.atleast_1d(np.asarray(points["n_params"], dtype=float))
    return np.log(np.atleast_1d(np.asarray(points["tokens"], dtype=float)) / n)


def local_sigma(resid, n_params: int, where=None, at=None) -> np.ndarray | float:
    """The runs' scatter about the law near each point along log(D/N).

    How well a law of N and D fits its runs depends on how long they were trained: the
    least-trained runs (a few tokens per parameter) sit far from its asymptotic form, the
    rest close to it (Gadre et al. 2024's ladders: residuals of 4-15% at D/N = 5, about 1%
    from D/N = 10 on). One scatter for all would widen every target's interval by the worst
    runs' misfit. So σ at a point is the kernel-weighted RMS of the centred log residuals,
    weighted by a Gaussian in log(D/N) with Silverman's rule-of-thumb bandwidth, corrected
    for the parameters fitted as ``residual_sigma`` is: the spread function of locally
    weighted split-conformal inference (Lei et al. 2018, section 5.2), under which the
    conformal interval keeps its coverage whatever the spread function. Without ``where``
    and ``at`` (each run's and each point's log D/N), or where the runs share one D/N, the
    one scatter of ``residual_sigma``."""
    r = np.asarray(resid, dtype=float)
    if where is None or at is None or r.size < 2:
        return residual_sigma(r, n_params)
    x, at = np.asarray(where, dtype=float), np.atleast_1d(np.asarray(at, dtype=float))
    spread = min(np.std(x, ddof=1), (np.percentile(x, 75) - np.percentile(x, 25)) / 1.349)
    if not spread > 1e-6:  # one D/N: nothing to vary along
        return residual_sigma(r, n_params)
    h = 0.9 * spread * r.size ** (-0.2)  # Silverman (1986), eq. 3.31
    w = np.exp(-0.5 * ((at[:, None] - x[None, :]) / h) ** 2)
    sq = (r - np.median(r)) ** 2
    dof = r.size / max(1, r.size - n_params)
    return np.sqrt((w @ sq) / w.sum(axis=1) * dof)


def boot_variance(law, samples: list[dict], points: dict) -> np.ndarray:
    """The bootstrap refits' variance of the log prediction at each point (0 without refits)."""
    if not samples:
        return np.zeros(np.atleast_1d(next(iter(points.values()))).size)
    from analysis.fitting import log_bootstrap

    log_boot = log_bootstrap(law, samples, points)
    return log_boot.var(axis=0) if len(log_boot) > 1 else np.zeros(log_boot.shape[1])


def calibrated_interval(
    law,
    params: dict,
    samples: list[dict],
    resid,
    points: dict,
    largest: dict,
    cal,
    level,
    resid_ratio=None,
) -> dict:
    """The calibrated interval at ``points`` for a fit with these pieces (its parameters,
    bootstrap refits, log residuals, their runs' log D/N and the largest fitted values).
    Returns predicted, low, high and distance (arrays)."""
    points = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in points.items()}
    log_pred = np.log(np.asarray(law.predict(params, **points), dtype=float))
    sigma = local_sigma(resid, law.n_params, resid_ratio, log_ratio(points))
    d = distance(points, largest)
    low, high = cal.interval(log_pred, sigma, boot_variance(law, samples, points), d, level)
    return {"predicted": np.exp(log_pred), "low": low, "high": high, "distance": d}


def cross_validated(rows: list[dict], level: float) -> dict:
    """Each fold's next-size predictions with κ and q calibrated on the other folds: the
    share inside, their median relative width, and how many. Sets each such row's
    ``low``, ``high`` and ``inside`` to that interval's."""
    folds = sorted({r["fitted_up_to"] for r in rows})
    inside, widths = [], []
    for fold in folds:
        calib = [r for r in rows if r["fitted_up_to"] != fold]
        if not calib:
            continue
        cal = Calibration.from_errors(*_columns(calib), folds=len(folds) - 1)
        for r in rows:
            if r["fitted_up_to"] != fold or not r["next"]:
                continue
            lp = math.log(r["predicted"])
            lo, hi = cal.interval(lp, r["sigma"], r["boot_var"], r["distance"], level)
            r["low"], r["high"] = float(lo), float(hi)
            r["inside"] = bool(lo <= r["observed"] <= hi)
            inside.append(r["inside"])
            widths.append((hi - lo) / r["predicted"])
    return {
        "checked": len(inside),
        "coverage": float(np.mean(inside)) if inside else None,
        "median_width": float(np.median(widths)) if widths else None,
    }


def _columns(rows: list[dict]):
    e = np.array([math.log(r["observed"] / r["predicted"]) for r in rows])
    return (
        e,
        np.array([r["sigma"] for r in rows]),
        np.array([r["boot_var"] for r in rows]),
        np.array([r["distance"] for r in rows]),
    )


def calibrate(rows: list[dict]) -> Calibration:
    """The calibration from every backtest prediction (for the fit of all the runs)."""
    return Calibration.from_errors(*_columns(rows), folds=len({r["fitted_up_to"] for r in rows}))

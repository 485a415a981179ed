"""Loss to task error: a downstream metric as a function of the loss, chained with the loss
prediction (``lab-analyze predict ... --metric COLUMN``).

Gadre et al. (2024, "Language models scale reliably with over-training and on downstream
tasks", eq. 4) relate a model's average top-1 error to its loss by

    y(L) = ε − k·exp(−γ·L)

(ε: the error where the loss no longer helps, chance; k, γ: how fast it falls as the loss
does); Bhagia et al. (2024, "Establishing task scaling laws via compute-efficient model
ladders") chain such a step with a loss law the same way. k may be negative: the same form
fits an accuracy, which rises as the loss falls.

The fit is least squares; for a given γ the form is linear in ε and k, so γ is found by a
one-dimensional search over its profile (variable projection, Golub & Pereyra 1973) and
never depends on a starting guess. Its uncertainty: bootstrap refits over the runs.

The error of a task law grows as it is carried to losses below the ladder's (a larger
model need not gain on a task as the smaller ones did per nat of loss). So its intervals are
calibrated as the loss law's are (``analysis.calibration``): a rolling backtest fits the
metric on the runs up to each model size and predicts the larger runs' metric at their
observed loss; each error e (in the metric's units) gets a scale
s = sqrt(σ² + v_boot + (κ·d)²), d the nats below the lowest fitted loss, κ by maximum
likelihood and q the split-conformal quantile of |e|/s (the Gaussian quantile where the
backtests give too few scores to measure it).

The chained prediction draws the target's loss from its prediction interval (log-normal
with that interval's width at its level), then the metric at each drawn loss with the
calibrated scatter at that loss (signed draws of the backtests' scores |e|/s, or Gaussian
ones where they are too few); the interval
is the draws' central quantiles. Both steps' uncertainty is carried through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from types import SimpleNamespace

import numpy as np
import pandas as pd

from analysis.calibration import Calibration, scale

FORM = "y(L) = epsilon - k*exp(-gamma*L)"
GAMMA_BOUNDS = (1e-3, 1e2)  # per nat of loss
N_PARAMS = 3
MIN_RUNS = N_PARAMS + 2


def _linear(loss: np.ndarray, y: np.ndarray, gamma: float) -> tuple[float, float, float]:
    """ε, k and the sum of squares for one γ (a linear least-squares problem)."""
    x = np.column_stack([np.ones_like(loss), -np.exp(-gamma * loss)])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ coef
    return float(coef[0]), float(coef[1]), float(r @ r)


def fit_form(loss, y) -> tuple[dict, bool]:
    """The least-squares ε, k, γ of ``FORM`` and whether γ ended at a bound of its search
    (``GAMMA_BOUNDS``: the data do not pin its curvature)."""
    from scipy.optimize import minimize_scalar

    loss, y = np.asarray(loss, dtype=float), np.asarray(y, dtype=float)
    lo, hi = (math.log(b) for b in GAMMA_BOUNDS)
    grid = np.linspace(lo, hi, 61)
    sse = [_linear(loss, y, math.exp(g))[2] for g in grid]
    i = int(np.argmin(sse))
    a, b = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
    best = minimize_scalar(
        lambda g: _linear(loss, y, math.exp(g))[2], bounds=(a, b), method="bounded"
    )
    gamma = math.exp(best.x)
    eps, k, _ = _linear(loss, y, gamma)
    at_bound = i in (0, len(grid) - 1)
    return {"epsilon": eps, "k": k, "gamma": gamma}, at_bound


def value(params: dict, loss) -> np.ndarray:
    """``FORM`` at ``loss``."""
    loss = np.asarray(loss, dtype=float)
    return params["epsilon"] - params["k"] * np.exp(-params["gamma"] * loss)


def _bootstrap(loss, y, resamples: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        i = rng.integers(0, len(loss), len(loss))
        if np.unique(loss[i]).size < N_PARAMS:
            continue
        out.append(fit_form(loss[i], y[i])[0])
    return out


def _sigma(loss, y, params) -> float:
    r = y - value(params, loss)
    return float(np.sqrt(np.sum(r**2) / max(1, r.size - N_PARAMS)))


def _boot_var(samples: list[dict], loss) -> np.ndarray:
    loss = np.atleast_1d(np.asarray(loss, dtype=float))
    if len(samples) < 2:
        return np.zeros(loss.shape)
    v = np.array([value(s, loss) for s in samples])
    return v.var(axis=0)


@dataclass
class MetricFit:
    """A metric's law in the loss, its bootstrap refits, scatter and calibration."""

    column: str
    params: dict
    samples: list[dict]
    sigma: float
    lowest_loss: float
    runs: int
    calibration: Calibration | None = None
    backtest: dict | None = None
    notes: list[str] = field(default_factory=list)

    def predict(self, loss) -> np.ndarray:
        return value(self.params, loss)

    def scale(self, loss) -> np.ndarray:
        """The scale of a new run's metric error at ``loss`` (module docstring)."""
        loss = np.atleast_1d(np.asarray(loss, dtype=float))
        d = np.maximum(0.0, self.lowest_loss - loss)
        kappa = self.calibration.kappa if self.calibration else 0.0
        return scale(self.sigma, _boot_var(self.samples, loss), d, kappa)

    def measured_tails(self, level: float) -> bool:
        """Whether the backtests hold enough scores to measure the quantile at ``level``;
        with fewer, the errors are taken as Gaussian with the calibrated scale (a handful
        of scores understates the tails)."""
        return self.calibration is not None and self.calibration.q(level)[1]

    def interval_at_loss(self, loss, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """The metric's interval at a known loss (the backtest's calibrated one)."""
        z = NormalDist().inv_cdf((1 + level) / 2)
        q = self.calibration.q(level)[0] if self.measured_tails(level) else z
        y, s = self.predict(loss), self.scale(loss)
        return y - q * s, y + q * s

    def chain(self, predicted, low, high, level: float = 0.95, seed: int = 0, draws=4000):
        """The metric at targets whose loss is predicted with an interval [low, high] at
        ``level``: its point prediction and the interval of both steps together."""
        rng = np.random.default_rng(seed)
        z = NormalDist().inv_cdf((1 + level) / 2)
        tail = (1 - level) / 2 * 100
        measured = self.measured_tails(level)
        predicted = np.atleast_1d(np.asarray(predicted, dtype=float))
        out_lo, out_hi = [], []
        for p, lo, hi in zip(predicted, np.atleast_1d(low), np.atleast_1d(high)):
            sd = (math.log(hi) - math.log(lo)) / (2 * z)
            loss = p * np.exp(sd * rng.standard_normal(draws))
            if measured:
                t = rng.choice(self.calibration.scores, draws) * rng.choice([-1.0, 1.0], draws)
            else:
                t = rng.standard_normal(draws)
            y = self.predict(loss) + self.scale(loss) * t
            a, b = np.percentile(y, [tail, 100 - tail])
            out_lo.append(float(a))
            out_hi.append(float(b))
        return self.predict(predicted), np.array(out_lo), np.array(out_hi)

    def summary(self) -> dict:
        """What predict.json records of the metric's law."""
        bt = self.backtest or {}
        return {
            "column": self.column,
            "form": FORM,
            "params": self.params,
            "sigma": self.sigma,
            "runs": self.runs,
            "lowest_fitted_loss": self.lowest_loss,
            "kappa": self.calibration.kappa if self.calibration else None,
            "backtest": {
                k: bt[k]
                for k in ("folds", "checked", "coverage", "median_width", "mean_abs_error")
                if k in bt
            },
            "interval": "calibrated" if self.calibration else "bootstrap",
            "notes": self.notes,
        }


def _usable(df: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in df:
        raise ValueError(
            f"--metric {column!r}: no such column in the runs (they have: "
            f"{', '.join(map(str, df.columns))})"
        )
    y = pd.to_numeric(df[column], errors="coerce")
    if y.isna().all():
        raise ValueError(f"--metric {column!r}: the column holds no numbers")
    keep = df[np.isfinite(y) & np.isfinite(df["loss"])].copy()
    keep[column] = y[keep.index]
    if len(keep) < MIN_RUNS:
        raise ValueError(
            f"--metric {column!r}: {len(keep)} runs with a value; the law "
            f"{FORM} needs at least {MIN_RUNS}"
        )
    return keep


def rolling_backtest(df: pd.DataFrame, column: str, level: float, resamples: int) -> dict | None:
    """Fit the metric on the runs up to each model size and predict the larger runs' metric
    at their observed loss; the errors calibrate the interval (module docstring). Returns
    None where the ladder has too few sizes."""
    from analysis.validity import backtest_cuts

    if "n_params" not in df:
        return None
    law = SimpleNamespace(variables=("n_params",), n_params=N_PARAMS + 1, min_sizes=2)
    cuts = backtest_cuts(df, law)
    if not cuts:
        return None
    folds, e, sigma, boot_var, d = [], [], [], [], []
    for i, cut in enumerate(cuts):
        train, test = df[df["n_params"] <= cut], df[df["n_params"] > cut]
        lt, yt = train["loss"].to_numpy(float), train[column].to_numpy(float)
        params, _ = fit_form(lt, yt)
        ls = test["loss"].to_numpy(float)
        folds.append(np.full(len(test), cut))
        e.append(test[column].to_numpy(float) - value(params, ls))
        sigma.append(np.full(len(test), _sigma(lt, yt, params)))
        boot_var.append(_boot_var(_bootstrap(lt, yt, resamples, seed=i), ls))
        d.append(np.maximum(0.0, lt.min() - ls))
    folds = np.concatenate(folds)
    cols = [np.concatenate(c) for c in (e, sigma, boot_var, d)]
    cal = Calibration.from_errors(*cols, folds=len(cuts))
    inside, widths = [], []
    for fold in cuts:  # each fold's predictions against the other folds' calibration
        mine = folds == fold
        if mine.all():
            continue
        other = Calibration.from_errors(*(c[~mine] for c in cols), folds=len(cuts) - 1)
        half = other.q(level)[0] * scale(*(c[mine] for c in cols[1:]), other.kappa)
        inside += list(np.abs(cols[0][mine]) <= half)
        widths += list(2 * half)
    return {
        "calibration": cal,
        "folds": len(cuts),
        "checked": len(inside),
        "coverage": float(np.mean(inside)) if inside else None,
        "median_width": float(np.median(widths)) if widths else None,
        "mean_abs_error": float(np.mean(np.abs(cols[0]))),
    }


def fit_metric(
    df: pd.DataFrame, column: str, level: float = 0.95, resamples: int = 200, seed: int = 0
) -> MetricFit:
    """The metric ``column``'s law in the runs' loss, with bootstrap refits and, where the
    ladder has enough sizes, its backtest calibration. Raises ValueError for a missing or
    empty column or too few runs."""
    runs = _usable(df, column)
    loss, y = runs["loss"].to_numpy(float), runs[column].to_numpy(float)
    params, at_bound = fit_form(loss, y)
    notes = []
    if at_bound:
        notes.append(
            f"--metric {column}: gamma = {params['gamma']:.3g} is at a bound of its search "
            f"{GAMMA_BOUNDS}: the runs do not pin the curvature of {FORM}; the metric's "
            "law is not identified"
        )
    samples = _bootstrap(loss, y, resamples, seed)
    bt = rolling_backtest(runs, column, level, max(20, resamples // 4))
    if bt is None:
        notes.append(
            f"--metric {column}: too few model sizes for a backtest of the metric's law: its "
            "interval is the bootstrap's and leaves out the error of carrying it below the "
            "ladder's losses"
        )
    return MetricFit(
        column=column,
        params=params,
        samples=samples,
        sigma=_sigma(loss, y, params),
        lowest_loss=float(loss.min()),
        runs=len(runs),
        calibration=bt.pop("calibration") if bt else None,
        backtest=bt,
        notes=notes,
    )

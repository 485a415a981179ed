"""Fitting a law to runs, and what a fit answers.

``fit(df, law)`` fits as Hoffmann et al. (2022) did (Huber δ = 1e-3 on log loss, L-BFGS
from the law's grid of starts, every start at once in a batched L-BFGS) and refits
bootstrap resamples of the runs (``analysis.bootstrap``). The ``Fit`` it returns is the
notebook's object: ``.params``, ``.intervals(level)``, ``.predict(n_params, tokens)`` and
``.predict_interval(n_params, tokens, level)``, on scalars or arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_fit, interval
from analysis.laws import HUBER_DELTA, LAWS, Fixed, Law, design, objective, resolve_law
from analysis.optim import lbfgs_batched


class Prediction(NamedTuple):
    """A predicted loss and its interval (floats for a scalar target, arrays otherwise)."""

    predicted: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray


@dataclass
class Fit:
    """A fitted law: parameters by name, θ, the objective reached, what it was fitted on."""

    law: Law
    params: dict[str, float]
    theta: np.ndarray
    objective: float
    n_points: int
    converged: bool
    extra: dict = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)  # the bootstrap refits' parameters
    data: pd.DataFrame | None = field(default=None, repr=False)  # the runs it was fitted on

    def _points(self, values: tuple, variables: dict) -> tuple[dict, bool]:
        """The law's variables as 1-D arrays, from positional values (in the law's order:
        ``n_params, tokens`` for L(N, D)) or names; and whether every one was a scalar."""
        names = self.law.variables
        if len(values) > len(names):
            raise TypeError(f"{self.law.name} takes {len(names)} variables {names}")
        given = {**dict(zip(names, values)), **variables}
        missing = [n for n in names if n not in given and n not in self.law.optional]
        if missing or set(given) - set(names):
            raise TypeError(f"{self.law.name} takes the variables {names}; got {sorted(given)}")
        scalar = all(np.ndim(v) == 0 for v in given.values())
        points = {n: np.atleast_1d(np.asarray(v, dtype=float)) for n, v in given.items()}
        return points, scalar

    def predict(self, *values, **variables):
        """Predicted loss at the law's variables, by position in the law's order or by
        name: ``fit.predict(1e6, 1e8)`` = ``fit.predict(n_params=1e6, tokens=1e8)``. A
        float for scalars, an array for arrays."""
        points, scalar = self._points(values, variables)
        pred = np.asarray(self.law.predict(self.params, **points), dtype=float)
        return float(pred.reshape(-1)[0]) if scalar else pred

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Each parameter's bootstrap percentile interval at ``level``. Raises ValueError
        for a fit without bootstrap refits (``fit(..., resamples=0)``)."""
        if not self.samples:
            raise ValueError("this fit has no bootstrap refits: fit it with resamples > 0")
        return {k: interval([s.get(k, np.nan) for s in self.samples], level) for k in self.params}

    def predict_interval(
        self, *values, level: float = 0.95, seed: int = 0, **variables
    ) -> Prediction:
        """Where a new run's loss at the given point(s) should fall (``prediction_interval``:
        parameter uncertainty from the bootstrap and the runs' scatter about the law).
        Raises ValueError for a fit without its runs (``fit`` keeps them)."""
        if self.data is None:
            raise ValueError("this fit does not hold the runs it was fitted on")
        points, scalar = self._points(values, variables)
        pi = prediction_interval(self, self.samples, self.data, points, level, seed)
        if scalar:
            return Prediction(*(float(pi[k][0]) for k in ("predicted", "low", "high")))
        return Prediction(pi["predicted"], pi["low"], pi["high"])

    def describe(self) -> str:
        return self.law.describe(self.params)


# Screening, for fits where running every start to convergence is slow (starts × runs
# above SCREEN_ABOVE; a batch runs until its slowest member stops): every start takes
# SCREEN_ITERATIONS L-BFGS steps, then the best POLISH_STARTS of them run to convergence.
# On the 240 Chinchilla runs this finds the optimum of running all 4,500 starts to the end
# (objective equal to 10 digits) with 5 to 40 screening steps; 10 is twice the fewest.
SCREEN_ITERATIONS = 10
POLISH_STARTS = 64
SCREEN_ABOVE = 100_000


def fit_law(
    df: pd.DataFrame,
    law: str | Law = "chinchilla",
    delta: float = HUBER_DELTA,
    starts: np.ndarray | None = None,
    screen: bool | None = None,
    fixed: dict[str, float] | None = None,
) -> Fit:
    """Fit ``law`` to the runs in ``df`` (columns named by the law's variables and
    ``loss``) from its grid of starts (or ``starts``), keeping the best. With ``screen``,
    every start takes a few L-BFGS steps and only the most promising are run to
    convergence (see ``SCREEN_ITERATIONS``); by default (None) only where starts × runs
    exceed ``SCREEN_ABOVE``.

    ``fixed``: parameters held at these values while the others are fitted (e.g.
    Muennighoff et al.'s two-stage fit of R_D*, R_N* on a base law held fixed).

    Raises ValueError for an unknown law or parameter, missing columns, or fewer runs than
    the law has free parameters."""
    law = resolve_law(law)
    if starts is None and not fixed and getattr(law, "nested", None):
        # a law that nests a simpler one starts from that law's best solutions
        starts = law.starts_from_nested(fit_law(df, law.nested, delta=delta).extra["best"])
    if fixed:
        law = Fixed(law, tuple(sorted((k, float(v)) for k, v in fixed.items())))
    log_x, log_loss = design(df, law)
    starts = law.starts() if starts is None else np.atleast_2d(starts)
    n_starts = starts.shape[0]

    def run(x0: np.ndarray, max_iter: int):
        weights = np.ones((x0.shape[0], log_loss.size))
        fg = objective(law, log_x, log_loss, weights, delta)
        return lbfgs_batched(fg, x0, max_iter=max_iter)

    if screen is None:
        screen = n_starts * log_loss.size > SCREEN_ABOVE
    screened = screen and n_starts > POLISH_STARTS
    if screened:
        res = run(starts, SCREEN_ITERATIONS)
        order = np.argsort(np.where(np.isfinite(res.fun), res.fun, np.inf))[:POLISH_STARTS]
        starts = res.x[order]
    res = run(starts, 1000)
    best = int(np.nanargmin(res.fun))
    return Fit(
        law=law,
        params=law.params(res.x[best]),
        theta=res.x[best],
        objective=float(res.fun[best]),
        n_points=int(log_loss.size),
        converged=bool(res.converged[best]),
        extra={
            "starts": int(n_starts),
            "delta": delta,
            **({"polished": res.x} if screened else {}),
            # the best converged solutions: the next backtest fold starts from them (fold_fit)
            "best": res.x[np.argsort(np.where(np.isfinite(res.fun), res.fun, np.inf))[:16]],
        },
    )


def choose_law(df: pd.DataFrame) -> str:
    """L(N, D) when the runs vary both N and D and are enough for it, else L(N) or L(D)."""
    varies_n, varies_d = df["n_params"].nunique() > 1, df["tokens"].nunique() > 1
    if varies_n and varies_d and len(df) >= LAWS["chinchilla"].n_params:
        return "chinchilla"
    return "d" if varies_d and not varies_n else "n"


def fit(
    df: pd.DataFrame,
    law: str | Law = "auto",
    resamples: int = 1000,
    seed: int = 0,
    fixed: dict[str, float] | None = None,
) -> Fit:
    """Fit ``law`` to the runs of ``df`` (``load_runs``; ``auto``: L(N, D) when they vary
    N and D, else L(N) or L(D)) and refit ``resamples`` bootstrap resamples, so the
    returned Fit has intervals and prediction intervals.

    Raises ValueError for an unknown law, missing columns, or too few runs."""
    if law == "auto":
        law = choose_law(df)
    result = fit_law(df, law, fixed=fixed)
    result.samples = bootstrap_fit(df, result, resamples, seed) if resamples > 0 else []
    result.data = df
    return result


def residuals(df: pd.DataFrame, fit) -> np.ndarray:
    """log observed − log predicted loss of the runs the law was fitted on."""
    pred = fit.predict(**{v: df[v].to_numpy() for v in fit.law.variables})
    return np.log(df["loss"].to_numpy(dtype=float)) - np.log(pred)


def prediction_interval(
    fit, samples: list[dict], df: pd.DataFrame, points: dict, level: float = 0.95, seed: int = 0
) -> dict:
    """Where a new run's loss at ``points`` (the law's variables as arrays) should fall:
    parameter uncertainty (the bootstrap refits' predictions) and the runs' own scatter
    about the law (the fit's log residuals) combined by simulation (``simulate_interval``).
    Returns predicted, low and high (arrays)."""
    return simulate_interval(fit.law, fit.params, samples, residuals(df, fit), points, level, seed)


def log_bootstrap(law: Law, samples: list[dict], points: dict) -> np.ndarray:
    """The log predictions of each bootstrap refit at ``points`` (refits x points), the
    refits with a non-finite prediction left out."""
    log_boot = np.log(np.array([law.predict(s, **points) for s in samples], dtype=float))
    return log_boot[np.isfinite(log_boot).all(axis=1)]


def simulate_interval(
    law: Law,
    params: dict,
    samples: list[dict],
    resid,
    points: dict,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """A prediction interval from a fit's pieces: the bootstrap refits' predictions at
    ``points`` plus log residuals ``resid`` (centred, scaled by sqrt(n / (n − p)) for the
    parameters fitted), drawn together; ``lab-analyze predict --from`` uses it on a saved
    fit. Returns predicted, low and high (arrays)."""
    points = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in points.items()}
    rng = np.random.default_rng(seed)
    r = np.asarray(resid, dtype=float)
    n, p = r.size, law.n_params
    r = (r - np.median(r)) * np.sqrt(n / max(1, n - p))
    point = np.log(np.asarray(law.predict(params, **points), dtype=float))
    log_boot = log_bootstrap(law, samples or [params], points)  # (B, m)
    draws = max(4000, 2 * len(log_boot))
    sim = log_boot[rng.integers(0, len(log_boot), draws)] + r[rng.integers(0, n, draws)][:, None]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(sim, [tail, 100 - tail], axis=0)
    return {"predicted": np.exp(point), "low": np.exp(lo), "high": np.exp(hi)}

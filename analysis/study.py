"""One call for a whole scaling analysis of a set of runs: the law's fit with bootstrap
intervals, the compute-optimal allocation by each applicable approach, a backtest and the
design warnings, as one JSON-ready result (what ``lab-analyze`` writes as fit.json)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from analysis import approaches
from analysis.bootstrap import bootstrap_fit, interval, summarize
from analysis.laws import LAWS, Fit, fit_law
from analysis.validity import backtest, design_warnings


def choose_law(df: pd.DataFrame) -> str:
    """L(N, D) when the runs vary both N and D and are enough for it, else L(N) or L(D)."""
    varies_n, varies_d = df["n_params"].nunique() > 1, df["tokens"].nunique() > 1
    if varies_n and varies_d and len(df) >= LAWS["chinchilla"].n_params:
        return "chinchilla"
    return "d" if varies_d and not varies_n else "n"


@dataclass
class Study:
    df: pd.DataFrame
    fit: Fit
    samples: list[dict]
    result: dict
    notes: list[str] = field(default_factory=list)


def default_budgets(df: pd.DataFrame) -> list[float]:
    """The largest compute in the runs, and 10× and 100× beyond it."""
    top = float(df["compute"].max())
    return [top, 10 * top, 100 * top]


def analyze(
    df: pd.DataFrame,
    law: str = "auto",
    resamples: int = 1000,
    seed: int = 0,
    budgets: list[float] | None = None,
    level: float = 0.95,
    warn: bool = True,
) -> Study:
    """Fit, bootstrap, compute-optimal allocation, backtest and warnings for ``df``'s runs.
    The warnings are in ``result["warnings"]``, and also issued as Python warnings when
    ``warn``.

    Raises ValueError for an unknown law or too few runs for it."""
    law_name = choose_law(df) if law == "auto" else law
    fit = fit_law(df, law_name)
    samples = bootstrap_fit(df, fit, resamples, seed) if resamples > 0 else []
    notes = design_warnings(df, fit.law)
    result = {
        "law": fit.law.name,
        "formula": fit.law.formula,
        "fit_text": fit.describe(),
        "params": summarize(fit.params, samples, level),
        "objective": fit.objective,
        "huber_delta": fit.extra["delta"],
        "starts": fit.extra["starts"],
        "converged": fit.converged,
        "n_points": fit.n_points,
        "bootstrap": {"resamples": len(samples), "interval": level, "seed": seed},
        "conventions": df.attrs.get("conventions"),
        "source": df.attrs.get("source"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if fit.law.name == "chinchilla":
        budgets = budgets or default_budgets(df)
        result["params"].update(_exponents(fit, samples, level))
        result["compute_optimal"] = _at_budgets(fit, samples, budgets, level)
    result["approach_1"] = _approach(approaches.envelope, df, resamples, seed, level, notes)
    result["approach_2"] = _approach(approaches.isoflop, df, resamples, seed, level, notes)
    try:
        result["backtest"] = backtest(df, fit.law)
    except ValueError as e:
        result["backtest"] = None
        notes.append(f"backtest not possible: {e}")
    result["warnings"] = notes
    if warn:
        for note in notes:
            warnings.warn(note, stacklevel=2)
    return Study(df=df, fit=fit, samples=samples, result=result, notes=notes)


def _exponents(fit: Fit, samples: list[dict], level: float) -> dict:
    """a = β/(α+β) and b = α/(α+β) with intervals (approach 3)."""

    def ab(p):
        return {
            "a": p["beta"] / (p["alpha"] + p["beta"]),
            "b": p["alpha"] / (p["alpha"] + p["beta"]),
        }

    return summarize(ab(fit.params), [ab(s) for s in samples], level)


def _at_budgets(fit: Fit, samples: list[dict], budgets: list[float], level: float) -> list[dict]:
    """N*(C), D*(C), tokens per parameter and predicted loss at each budget, with intervals."""
    point = approaches.chinchilla_optimum(fit.params, budgets)
    boot = [approaches.chinchilla_optimum(s, budgets) for s in samples]
    rows = []
    for i, c in enumerate(budgets):
        row = {"compute": float(c)}
        for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
            lo, hi = interval([b[key][i] for b in boot], level) if boot else (np.nan, np.nan)
            row[key] = {"value": float(point[key][i]), "low": lo, "high": hi}
        rows.append(row)
    return rows


def _approach(fn, df, resamples, seed, level, notes) -> dict | None:
    name = "approach 1" if fn is approaches.envelope else "approach 2"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = fn(df)
    except ValueError as e:
        notes.append(f"{name} not possible: {e}")
        return None
    if fn is approaches.isoflop:
        notes.extend(str(w.message) for w in caught)
    boot = approaches.bootstrap_approach(fn, df, min(resamples, 500), seed) if resamples else []
    r["exponents"] = summarize({"a": r["a"], "b": r["b"]}, boot, level)
    return r

"""The choices that matter for extrapolation, made by the ladder's own backtest.

Which runs to fit on (all; without the least-trained, D/N < 10, whose losses sit far from
the law's asymptotic form; without the smallest model size, as Choshen et al. 2024 advise
when the target is much larger) and, for L(N, D), free or tied exponents (Gadre et al.
2024 tie them). Every candidate is fitted at the same backtest cuts and scored on the same
held-out runs (those every candidate keeps): the mean absolute log error of predicting
every run above each cut. The given setting stays unless a candidate's score is lower by
more than ``MARGIN`` of it and by more than one standard error of the paired
difference (the same runs predicted both ways), so noise does not choose; every
candidate's score is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fitting import fit_law
from analysis.laws import resolve_law
from analysis.validity import WARM_STARTS, backtest_cuts

LEAST_TRAINED = 10.0  # tokens per parameter below which a run counts as least-trained
MARGIN = 0.05  # a candidate replaces the given setting only when it scores 5% lower ...
SE_FACTOR = 1.0  # ... and by more than one standard error of the paired difference (the
# one-standard-error rule of Breiman et al. 1984, "Classification and Regression Trees")
ALTERNATIVE_LAWS = {"chinchilla": ("chinchilla_tied",), "chinchilla_tied": ("chinchilla",)}


def run_sets(df: pd.DataFrame, law) -> list[tuple[str, np.ndarray]]:
    """The candidate sets of runs, as (name, mask): all, and each subset that leaves out
    something and still has at least 3 sizes and twice the law's parameters in runs."""
    var = law.variables[0]
    sets = [("all runs", np.ones(len(df), dtype=bool))]
    if {"n_params", "tokens"} <= set(df):
        trained = (df["tokens"] / df["n_params"] >= LEAST_TRAINED).to_numpy()
        sets.append((f"without the least-trained (D/N < {LEAST_TRAINED:g})", trained))
    sizes = np.sort(df[var].unique())
    if len(sizes) >= 4:
        sets.append(("without the smallest size", (df[var] > sizes[0]).to_numpy()))
    return sets[:1] + [
        (name, mask)
        for name, mask in sets[1:]
        if not mask.all() and df.loc[mask, var].nunique() >= 3 and mask.sum() >= 2 * law.n_params
    ]


def choose(df: pd.DataFrame, law: str, laws: tuple[str, ...] | None = None) -> dict:
    """Score every (law, runs) candidate on the backtest and pick one (module docstring).
    ``laws``: the law forms to try (default: ``law`` and its tied or free variant).
    Returns the chosen ``law``, its ``mask`` over ``df``'s rows, its name and the table of
    ``candidates`` (law, runs, score, folds, runs kept). Raises ValueError when no cut
    leaves every candidate enough runs."""
    base = resolve_law(law)
    laws = laws or (base.name, *ALTERNATIVE_LAWS.get(base.name, ()))
    cands = [(resolve_law(name), runs, mask) for name in laws for runs, mask in run_sets(df, base)]
    var = base.variables[0]
    common = np.logical_and.reduce([m for _, _, m in cands])
    scores = {i: [] for i in range(len(cands))}
    warm = []  # each candidate's fit of all its runs starts its fold refits
    for law_, _, mask in cands:
        full = fit_law(df[mask], law_)
        warm.append(np.vstack([full.theta[None, :], full.extra["best"][:WARM_STARTS]]))
    for cut in backtest_cuts(df, base):
        below = (df[var] <= cut).to_numpy()
        test = df[~below & common]
        if test.empty or any((below & m).sum() < law_.n_params + 1 for law_, _, m in cands):
            continue
        if any(df.loc[below & m, var].nunique() < 2 for _, _, m in cands):
            continue
        for i, (law_, _, mask) in enumerate(cands):
            fit = fit_law(df[below & mask], law_, starts=warm[i])
            pred = fit.predict(**{v: test[v].to_numpy() for v in law_.variables})
            scores[i].extend(np.abs(np.log(test["loss"].to_numpy(dtype=float) / pred)))
    if not scores[0]:
        raise ValueError("no backtest cut leaves every candidate enough runs to compare them")
    table = [
        {
            "law": law_.name,
            "runs": runs,
            "kept": int(mask.sum()),
            "score": float(np.mean(scores[i])),
            "predictions": len(scores[i]),
        }
        for i, (law_, runs, mask) in enumerate(cands)
    ]
    base_errors = np.asarray(scores[0])
    for i, row in enumerate(table):
        gain = base_errors - np.asarray(scores[i])  # paired: the same held-out runs
        se = float(gain.std(ddof=1) / np.sqrt(gain.size)) if gain.size > 1 else np.inf
        row["gain_in_se"] = float(gain.mean() / se) if i > 0 and se > 0 else None
        row["better"] = bool(
            i > 0 and gain.mean() > MARGIN * table[0]["score"] and gain.mean() > SE_FACTOR * se
        )
    better = [i for i, row in enumerate(table) if row["better"]]
    best = min(better, key=lambda i: table[i]["score"]) if better else 0
    for i, row in enumerate(table):
        row["chosen"] = i == best
    law_, runs, mask = cands[best]
    return {"law": law_.name, "runs": runs, "mask": mask, "candidates": table}


def describe(choice: dict) -> str:
    """One line: what was chosen, and every candidate's backtest score."""
    scores = "; ".join(
        f"{c['law']}, {c['runs']}: {c['score']:.2%}" + (" (chosen)" if c["chosen"] else "")
        for c in choice["candidates"]
    )
    return (
        f"choice by backtest: {choice['law']} on {choice['runs']} (mean |log error| of "
        f"predicting the larger runs from the smaller, on the runs every candidate keeps: "
        f"{scores})"
    )

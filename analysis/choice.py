"""The choices that matter for extrapolation, made by the ladder's own backtest.

Which runs to fit on (all; without the least-trained, D/N < 10, whose losses sit far from
the law's asymptotic form; without the smallest model size, as Choshen et al. 2024 advise
when the target is much larger) and, for L(N, D), free or tied exponents (Gadre et al.
2024 tie them). Every candidate is fitted at the same backtest cuts and scored on the same
held-out runs (those every candidate keeps): the mean absolute log error of predicting
every run above each cut. A candidate takes part only where it can be fitted at two cuts
or more, each holding the sizes that determine its law (``Law.min_sizes``: three for
E + A/N^α, two with the exponent tied): one fold's predictions share one fit, so their
errors move together, and a single fold cannot tell a better setting from a lucky one.
When the given setting cannot be checked so (free exponents on a four-size ladder), the
first candidate that can takes its place: the ladder has tested it and not the other. That
setting stays unless a candidate's score is lower by more than ``MARGIN`` of it and by
more than one standard error of the paired difference (the same runs predicted both
ways), so noise does not choose; every candidate's score is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.laws import resolve_law
from analysis.validity import backtest_cuts, distinct_sizes, fold_fit

LEAST_TRAINED = 10.0  # tokens per parameter below which a run counts as least-trained
MARGIN = 0.05  # a candidate replaces the given setting only when it scores 5% lower ...
SE_FACTOR = 1.0  # ... and by more than one standard error of the paired difference (the
# one-standard-error rule of Breiman et al. 1984, "Classification and Regression Trees")
MIN_FOLDS = 2  # backtest cuts a candidate must be scored at
ALTERNATIVE_LAWS = {"chinchilla": ("chinchilla_tied",), "chinchilla_tied": ("chinchilla",)}


def run_sets(df: pd.DataFrame, law) -> list[tuple[str, np.ndarray]]:
    """The candidate sets of runs, as (name, mask): all, and each subset that leaves out
    something and still has at least 3 sizes and twice the law's parameters in runs."""
    var = law.variables[0]
    sets = [("all runs", np.ones(len(df), dtype=bool))]
    if {"n_params", "tokens"} <= set(df):
        trained = (df["tokens"] / df["n_params"] >= LEAST_TRAINED).to_numpy()
        sets.append((f"without the least-trained (D/N < {LEAST_TRAINED:g})", trained))
    tops = distinct_sizes(df[var])
    if len(tops) >= 4:
        sets.append(("without the smallest size", (df[var] > tops[0]).to_numpy()))
    return sets[:1] + [
        (name, mask)
        for name, mask in sets[1:]
        if not mask.all()
        and distinct_sizes(df.loc[mask, var]).size >= 3
        and mask.sum() >= 2 * law.n_params
    ]


def choose(df: pd.DataFrame, law: str, laws: tuple[str, ...] | None = None) -> dict:
    """Score every (law, runs) candidate on the backtest and pick one (module docstring).
    ``laws``: the law forms to try (default: ``law`` and its tied or free variant).
    Returns the chosen ``law``, its ``mask`` over ``df``'s rows, its name and the table of
    ``candidates`` (law, runs, score, folds, runs kept) and those ``not_compared`` (fitted
    at fewer than ``MIN_FOLDS`` cuts). Raises ValueError when fewer than ``MIN_FOLDS`` cuts
    leave every compared candidate enough runs."""
    base = resolve_law(law)
    laws = laws or (base.name, *ALTERNATIVE_LAWS.get(base.name, ()))
    cands = [(resolve_law(name), runs, mask) for name in laws for runs, mask in run_sets(df, base)]
    var = base.variables[0]
    cuts = backtest_cuts(df, base, min_sizes=2)  # where a tied candidate can be scored
    fits = [[_fits_at(df, cut, var, law_, mask) for cut in cuts] for law_, _, mask in cands]
    dropped = [f"{c[0].name}, {c[1]}" for c, ok in zip(cands, fits) if sum(ok) < MIN_FOLDS]
    keep = [i for i, ok in enumerate(fits) if sum(ok) >= MIN_FOLDS]
    if not keep:
        raise ValueError(
            f"no candidate can be fitted at {MIN_FOLDS} backtest cuts, each with the sizes "
            "that determine its law"
        )
    cands, fits = [cands[i] for i in keep], [fits[i] for i in keep]
    folds = [cut for j, cut in enumerate(cuts) if all(ok[j] for ok in fits)]
    common = np.logical_and.reduce([m for _, _, m in cands])
    folds = [cut for cut in folds if (~(df[var] <= cut).to_numpy() & common).any()]
    if len(folds) < MIN_FOLDS:
        raise ValueError(
            f"the backtest has {len(folds)} cut(s) where every candidate can be fitted; "
            f"comparing them takes {MIN_FOLDS}"
        )
    scores = {i: [] for i in range(len(cands))}  # per fold: each held-out run's |log error|
    previous = [None] * len(cands)  # each candidate's fit at the previous cut
    for cut in folds:
        below = (df[var] <= cut).to_numpy()
        test = df[~below & common]
        for i, (law_, _, mask) in enumerate(cands):
            fit = previous[i] = fold_fit(df[below & mask], law_, previous[i])
            pred = fit.predict(**{v: test[v].to_numpy() for v in law_.variables})
            scores[i].append(np.abs(np.log(test["loss"].to_numpy(dtype=float) / pred)))
    table = [
        {
            "law": law_.name,
            "runs": runs,
            "kept": int(mask.sum()),
            "score": float(np.mean(np.concatenate(scores[i]))),
            "predictions": int(sum(s.size for s in scores[i])),
            "folds": len(folds),
        }
        for i, (law_, runs, mask) in enumerate(cands)
    ]
    for i, row in enumerate(table):
        gain = np.concatenate(scores[0]) - np.concatenate(scores[i])  # the same runs
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
    return {
        "law": law_.name,
        "runs": runs,
        "mask": mask,
        "candidates": table,
        "not_compared": dropped,
    }


def _fits_at(df: pd.DataFrame, cut: float, var: str, law, mask: np.ndarray) -> bool:
    """Whether a candidate's runs up to ``cut`` can fit its law: more runs than parameters,
    at the sizes that determine it (``Law.min_sizes``)."""
    below = (df[var] <= cut).to_numpy() & mask
    return (
        below.sum() >= law.n_params + 1 and distinct_sizes(df.loc[below, var]).size >= law.min_sizes
    )


def describe(choice: dict) -> str:
    """One line: what was chosen, and every candidate's backtest score."""
    scores = "; ".join(
        f"{c['law']}, {c['runs']}: {c['score']:.2%}" + (" (chosen)" if c["chosen"] else "")
        for c in choice["candidates"]
    )
    text = (
        f"choice by backtest: {choice['law']} on {choice['runs']} (mean |log error| of "
        f"predicting the larger runs from the smaller, on the runs every candidate keeps: "
        f"{scores})"
    )
    if choice.get("not_compared"):
        text += f"; not compared, fitted at fewer than {MIN_FOLDS} cuts: " + "; ".join(
            choice["not_compared"]
        )
    return text

"""Compute-optimal allocation: Chinchilla's three approaches (Hoffmann et al. 2022, §3).

- Approach 1, ``envelope``: runs grouped by compute budget (a ``budget`` column, or compute
  equal within 5%); the best run of each budget that beats every smaller budget's best forms
  the lower envelope of loss against compute, and N_opt ∝ C^a, D_opt ∝ C^b are fitted through
  it in log space. Hoffmann et al. take the envelope over every point of every training
  curve; with final losses only, it is over runs. One budget is not enough.
- Approach 2, ``isoflop``: per budget, the optimum of loss against N by one of the methods
  of ``analysis.isoflop`` (Hoffmann et al.'s parabola, Porian et al.'s interpolation, a local
  parabola or Akima, or per budget the one its curve suits), then N_opt ∝ C^a, D_opt ∝ C^b
  through the optima.
- Approach 3, ``chinchilla_optimum``: minimise the fitted L(N, D) = E + A/N^α + B/D^β under
  C = k·N·D: N_opt = G·(C/k)^a, D_opt = G⁻¹·(C/k)^b with G = (αA/(βB))^(1/(α+β)),
  a = β/(α+β), b = α/(α+β).

k is the FLOPs per parameter per token of the compute convention (6 for C = 6ND).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis.isoflop import (
    FLOPS_PER_PARAM_TOKEN,
    ApproachError,
    budget_groups,
    isoflop,
    isoflop_arrays,
    loglog_fit,
    resolve_method,
)

__all__ = ["ApproachError", "bootstrap_approach", "chinchilla_optimum", "envelope", "isoflop"]


def chinchilla_optimum(params: dict, compute, k: float = FLOPS_PER_PARAM_TOKEN) -> dict:
    """N_opt, D_opt, tokens per parameter and the predicted loss at each budget, and the
    exponents a, b, from the parameters of a fitted ``chinchilla`` law."""
    A, B, E, alpha, beta = (params[n] for n in ("A", "B", "E", "alpha", "beta"))
    c = np.asarray(compute, dtype=float) / k
    a, b = beta / (alpha + beta), alpha / (alpha + beta)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    n_opt, d_opt = G * c**a, c**b / G
    loss = E + A / n_opt**alpha + B / d_opt**beta
    return {
        "a": a,
        "b": b,
        "N_opt": n_opt,
        "D_opt": d_opt,
        "tokens_per_param": d_opt / n_opt,
        "loss": loss,
    }


def envelope(df: pd.DataFrame) -> dict:
    """Approach 1 on runs: the best run per compute budget that beats every smaller budget's
    best, and N_opt ∝ C^a, D_opt ∝ C^b through them.

    Raises ValueError when the runs span fewer than 2 budgets or fewer than 2 runs lie on
    the envelope."""
    columns = {c: df[c].to_numpy(dtype=float) for c in ("compute", "n_params", "tokens", "loss")}
    front = _envelope(budget_groups(df).to_numpy(), **columns)
    r = _envelope_fit(front, columns)
    runs = df["run"].astype(str).to_numpy() if "run" in df else None
    r["runs"] = runs[front].tolist() if runs is not None else []
    r["points"] = {c: v[front].tolist() for c, v in columns.items()}
    return r


def _envelope(groups, compute, n_params, tokens, loss) -> np.ndarray:
    """Positions of the envelope runs: per budget (ascending) its lowest-loss run, kept when
    it beats every smaller budget's."""
    budgets = np.unique(groups)
    if budgets.size < 2:
        raise ValueError(
            "every run is at one compute budget (within 5%): a loss-compute envelope needs "
            "at least 2 budgets"
        )
    order = np.lexsort((loss, groups))  # by budget, then loss
    first = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1]])
    best = order[first]  # each budget's lowest-loss run, budgets ascending
    keep = loss[best] < np.minimum.accumulate(np.r_[np.inf, loss[best][:-1]])
    front = best[keep]
    if front.size < 2:
        raise ValueError(
            f"approach 1 needs at least 2 runs on the loss-compute envelope, found {front.size}"
        )
    return front


def _envelope_fit(front: np.ndarray, columns: dict) -> dict:
    a, ia = loglog_fit(columns["compute"][front], columns["n_params"][front])
    b, ib = loglog_fit(columns["compute"][front], columns["tokens"][front])
    return {"a": a, "b": b, "intercepts": {"N": ia, "D": ib}}


def bootstrap_approach(fn, df: pd.DataFrame, resamples: int, seed: int) -> tuple[list[dict], int]:
    """Refit approach ``fn`` (``envelope`` or ``isoflop``, or a partial of it) on resampled
    runs: the a, b of each resample that could be fitted, and how many could not (a resample
    with too few budgets, a flat curve or an a outside (0, 1) is dropped and counted, never
    fatal)."""
    rng = np.random.default_rng(seed)
    core = getattr(fn, "func", fn)
    if core is isoflop:  # budgets labelled once; each resample works on arrays
        options = {"k": FLOPS_PER_PARAM_TOKEN, "method": "auto", **getattr(fn, "keywords", {})}
        method = resolve_method(options["method"])
        if method == "porian":  # its interval is its own: refits of seed-noise perturbations
            r = fn(df, warn=False)
            return r["perturbation_fits"][:resamples], max(
                0, resamples - len(r["perturbation_fits"])
            )
        groups = budget_groups(df).to_numpy()
        n, loss = df["n_params"].to_numpy(dtype=float), df["loss"].to_numpy(dtype=float)

        def refit(idx):
            return isoflop_arrays(n[idx], loss[idx], groups[idx], options["k"], method, False)

    else:  # envelope
        groups = budget_groups(df).to_numpy()
        columns = {
            c: df[c].to_numpy(dtype=float) for c in ("compute", "n_params", "tokens", "loss")
        }

        def refit(idx):
            sample = {c: v[idx] for c, v in columns.items()}
            return _envelope_fit(_envelope(groups[idx], **sample), sample)

    out, dropped = [], 0
    for _ in range(resamples):
        idx = rng.integers(0, len(df), len(df))
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                r = refit(idx)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError):
            dropped += 1
            continue
        if not (np.isfinite(r["a"]) and np.isfinite(r["b"])):
            dropped += 1
            continue
        out.append({"a": r["a"], "b": r["b"]})
    return out, dropped

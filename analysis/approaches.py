"""Compute-optimal allocation: Chinchilla's three approaches (Hoffmann et al. 2022, §3).

- Approach 1, ``envelope``: the runs on the lower envelope of loss against compute (each
  run with a lower loss than every run of less compute), and power laws N_opt ∝ C^a,
  D_opt ∝ C^b fitted through them in log space. Hoffmann et al. take the envelope over
  every point of every training curve; with final losses only, it is over runs.
- Approach 2, ``isoflop``: runs grouped by compute budget; per budget a parabola of loss
  in log N, whose minimum is N_opt(C) and D_opt = C/(k·N_opt); then N_opt ∝ C^a and
  D_opt ∝ C^b through the minima.
- Approach 3, ``chinchilla_optimum``: minimise the fitted L(N, D) = E + A/N^α + B/D^β under
  C = k·N·D: N_opt = G·(C/k)^a, D_opt = G⁻¹·(C/k)^b with G = (αA/(βB))^(1/(α+β)),
  a = β/(α+β), b = α/(α+β).

k is the FLOPs per parameter per token of the compute convention (6 for C = 6ND).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

FLOPS_PER_PARAM_TOKEN = 6.0


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


def _loglog_fit(x, y) -> tuple[float, float]:
    """Slope and intercept of log y against log x."""
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def envelope(df: pd.DataFrame) -> dict:
    """Approach 1 on runs: the envelope runs and N_opt ∝ C^a, D_opt ∝ C^b through them.

    Raises ValueError when fewer than 2 runs lie on the envelope."""
    runs = df.sort_values(["compute", "loss"])
    best, keep = np.inf, []
    for i, row in runs.iterrows():
        if row["loss"] < best:
            keep.append(i)
            best = row["loss"]
    front = runs.loc[keep]
    if len(front) < 2 or front["compute"].nunique() < 2:
        raise ValueError(
            f"approach 1 needs at least 2 runs on the loss-compute envelope, found {len(front)}"
        )
    a, ia = _loglog_fit(front["compute"], front["n_params"])
    b, ib = _loglog_fit(front["compute"], front["tokens"])
    return {
        "a": a,
        "b": b,
        "intercepts": {"N": ia, "D": ib},
        "runs": front["run"].astype(str).tolist(),
        "points": front[["compute", "n_params", "tokens", "loss"]].to_dict("list"),
    }


def budget_groups(df: pd.DataFrame, tolerance: float = 0.05) -> pd.Series:
    """A budget label per run: its ``budget`` column when there is one, else runs whose
    compute agrees within ``tolerance`` (relative) share a label (their median compute)."""
    if "budget" in df.columns:
        return df["budget"].astype(float)
    order = np.argsort(df["compute"].to_numpy())
    logc = np.log(df["compute"].to_numpy()[order])
    cluster = np.concatenate([[0], np.cumsum(np.diff(logc) > np.log1p(tolerance))])
    labels = np.empty(len(df))
    for c in np.unique(cluster):
        members = order[cluster == c]
        labels[members] = np.median(df["compute"].to_numpy()[members])
    return pd.Series(labels, index=df.index)


def isoflop(df: pd.DataFrame, k: float = FLOPS_PER_PARAM_TOKEN, warn: bool = True) -> dict:
    """Approach 2: per-budget parabolas in log N, their minima, and the power laws through them.

    Budgets with fewer than 3 model sizes are left out. Warns (when ``warn``) on a minimum at
    the edge of its budget's grid and on fewer than 3 usable budgets. Raises ValueError with
    fewer than 2."""
    groups = budget_groups(df)
    minima, notes = [], []
    for budget, runs in df.groupby(groups):
        if runs["n_params"].nunique() < 3:
            continue
        x, y = np.log(runs["n_params"].to_numpy()), runs["loss"].to_numpy()
        c2, c1, c0 = np.polyfit(x, y, 2)
        if c2 <= 0:
            notes.append(f"budget C={budget:.3g}: loss is not convex in log N; left out")
            continue
        x_opt = -c1 / (2 * c2)
        if not x.min() < x_opt < x.max() or np.argmin(y) in (np.argmin(x), np.argmax(x)):
            notes.append(
                f"budget C={budget:.3g}: the IsoFLOP minimum (N={np.exp(x_opt):.3g}) is at the "
                f"edge of its grid (N {np.exp(x.min()):.3g} to {np.exp(x.max()):.3g}); extend the grid"
            )
        n_opt = float(np.exp(x_opt))
        minima.append(
            {
                "compute": float(budget),
                "N_opt": n_opt,
                "D_opt": float(budget) / (k * n_opt),
                "loss": float(c0 + c1 * x_opt + c2 * x_opt**2),
                "parabola": [float(c2), float(c1), float(c0)],
            }
        )
    if len(minima) < 3:
        notes.append(
            f"only {len(minima)} IsoFLOP budget(s) with 3+ model sizes: the exponents "
            "a and b are poorly determined (use at least 3)"
        )
    if warn:
        for note in notes:
            warnings.warn(note, stacklevel=2)
    if len(minima) < 2:
        raise ValueError(
            f"approach 2 needs at least 2 compute budgets with 3+ model sizes each, found {len(minima)}"
        )
    m = pd.DataFrame(minima)
    a, ia = _loglog_fit(m["compute"], m["N_opt"])
    b, ib = _loglog_fit(m["compute"], m["D_opt"])
    return {"a": a, "b": b, "intercepts": {"N": ia, "D": ib}, "minima": minima, "notes": notes}


def bootstrap_approach(fn, df: pd.DataFrame, resamples: int, seed: int) -> list[dict]:
    """Refit approach ``fn`` (``envelope`` or ``isoflop``) on resampled runs; the a, b of each
    resample that could be fitted."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        sample = df.iloc[rng.integers(0, len(df), len(df))]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = fn(sample) if fn is envelope else fn(sample, warn=False)
        except (ValueError, np.linalg.LinAlgError):
            continue
        out.append({"a": r["a"], "b": r["b"]})
    return out

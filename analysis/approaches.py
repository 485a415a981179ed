"""Compute-optimal allocation: Chinchilla's three approaches (Hoffmann et al. 2022, §3).

- Approach 1, ``envelope``: runs grouped by compute budget (a ``budget`` column, or compute
  equal within 5%); the best run of each budget that beats every smaller budget's best forms
  the lower envelope of loss against compute, and N_opt ∝ C^a, D_opt ∝ C^b are fitted through
  it in log space. Hoffmann et al. take the envelope over every point of every training
  curve; with final losses only, it is over runs. One budget is not enough.
- Approach 2, ``isoflop``: per budget, the optimum is found locally, as careful analyses do
  (e.g. Porian et al. 2024), not by one parabola through every size: a parabola in log N
  through the lowest-loss size and its two neighbours on each side (``method="parabola"``),
  or an Akima interpolation of log loss over log N minimised on a fine grid
  (``method="akima"``). A budget whose lowest loss is at its smallest or largest size is
  dropped (its optimum lies outside the sizes tried), and so is one with fewer than 3 sizes;
  ``dropped`` says which and why. N_opt ∝ C^a is a weighted least-squares line through the
  optima, each weighted by the inverse variance of its log N_opt (the local parabola's
  covariance, from the residual scatter pooled over budgets), and D_opt = C/(k·N_opt), so
  b = 1 − a. An a outside (0, 1) would make D_opt or N_opt shrink with compute: it is
  reported as a failure, never as a result.
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
ISOFLOP_METHODS = ("parabola", "akima")
BUDGET_TOLERANCE = 0.05  # runs whose compute agrees within 5% share a budget


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


def _loglog_fit(x, y, weights=None) -> tuple[float, float]:
    """Slope and intercept of log y against log x (weighted least squares with ``weights``)."""
    w = None if weights is None else np.sqrt(np.asarray(weights, dtype=float))
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1, w=w)
    return float(slope), float(intercept)


def budget_groups(df: pd.DataFrame, tolerance: float = BUDGET_TOLERANCE) -> pd.Series:
    """A budget label per run: its ``budget`` column when there is one, else runs whose
    compute agrees within ``tolerance`` (relative) share a label (their median compute), so
    budgets computed per run as 6·N·D, equal but for float rounding, are one budget."""
    if "budget" in df.columns and df["budget"].notna().all():
        return df["budget"].astype(float)
    compute = df["compute"].to_numpy(dtype=float)
    order = np.argsort(compute)
    logc = np.log(compute[order])
    cluster = np.concatenate([[0], np.cumsum(np.diff(logc) > np.log1p(tolerance))])
    labels = np.empty(len(df))
    for c in np.unique(cluster):
        members = order[cluster == c]
        labels[members] = np.median(compute[members])
    return pd.Series(labels, index=df.index)


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
    a, ia = _loglog_fit(columns["compute"][front], columns["n_params"][front])
    b, ib = _loglog_fit(columns["compute"][front], columns["tokens"][front])
    return {"a": a, "b": b, "intercepts": {"N": ia, "D": ib}}


class _Dropped(Exception):
    """A budget left out of approach 2, with the reason."""


def _local_optimum(x: np.ndarray, y: np.ndarray, method: str) -> dict:
    """The optimum of one budget's curve: x = log N ascending (distinct), y = loss.

    Raises _Dropped when the lowest loss is at either end of the sizes tried."""
    i = int(np.argmin(y))
    if i == 0 or i == x.size - 1:
        side = "smallest" if i == 0 else "largest"
        raise _Dropped(
            f"the lowest loss is at the {side} size tried (N = {np.exp(x[i]):.3g}): the "
            "optimum lies outside the grid"
        )
    if method == "akima":
        from scipy.interpolate import Akima1DInterpolator

        f = Akima1DInterpolator(x, np.log(y))
        grid = np.linspace(x[i - 1], x[i + 1], 2001)
        j = int(np.argmin(f(grid)))
        return {"x": float(grid[j]), "loss": float(np.exp(f(grid[j]))), "window": (i - 1, i + 2)}
    # the lowest size and up to two neighbours on each side; the 3-point parabola through
    # the lowest and its neighbours when the wider one is not convex or puts its vertex
    # outside its own points (a convex vertex of those 3 lies between the neighbours)
    for lo, hi in ((max(0, i - 2), min(x.size, i + 3)), (i - 1, i + 2)):
        xs, ys = x[lo:hi], y[lo:hi]
        c2, c1, c0 = np.polyfit(xs, ys, 2)
        if c2 > 0 and xs[0] < -c1 / (2 * c2) < xs[-1]:
            break
    else:
        raise _Dropped("the loss is not convex around its lowest size")
    xo = -c1 / (2 * c2)
    return {
        "x": float(xo),
        "loss": float(c0 + c1 * xo + c2 * xo * xo),
        "parabola": [float(c2), float(c1), float(c0)],
        "window": (lo, hi),
        "rss": float(np.sum((np.polyval([c2, c1, c0], xs) - ys) ** 2)),
        "dof": int(xs.size - 3),
        "xs": xs,
    }


def _vertex_variance(opt: dict, sigma2: float) -> float:
    """Var(log N_opt) of a local parabola by the delta method, residual variance ``sigma2``."""
    c2, c1, _ = opt["parabola"]
    X = np.vander(opt["xs"], 3)  # columns x², x, 1
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    grad = np.array([c1 / (2 * c2 * c2), -1 / (2 * c2), 0.0])  # ∂x*/∂(c2, c1, c0)
    return float(grad @ cov @ grad)


def isoflop(
    df: pd.DataFrame,
    k: float = FLOPS_PER_PARAM_TOKEN,
    warn: bool = True,
    method: str = "parabola",
) -> dict:
    """Approach 2: each budget's optimum found locally, the dropped budgets and why, and
    N_opt ∝ C^a, D_opt ∝ C^b through the optima (see the module docstring).

    Warns (when ``warn``) about dropped budgets and fewer than 3 usable budgets. Raises
    ApproachError (a ValueError carrying the dropped budgets) with fewer than 2 usable
    budgets or a fitted a outside (0, 1)."""
    if method not in ISOFLOP_METHODS:
        raise ValueError(f"method must be one of {ISOFLOP_METHODS}, got {method!r}")
    groups = budget_groups(df).to_numpy()
    n, loss = df["n_params"].to_numpy(dtype=float), df["loss"].to_numpy(dtype=float)
    return _isoflop(n, loss, groups, k, method, warn)


class ApproachError(ValueError):
    """An approach that cannot give a result; ``details`` says what it found on the way."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


def _isoflop(n, loss, groups, k, method, warn) -> dict:
    minima, dropped, opts = [], [], []
    for budget in np.unique(groups):
        here = groups == budget
        sizes, inverse = np.unique(n[here], return_inverse=True)
        mean_loss = np.bincount(inverse, loss[here]) / np.bincount(inverse)  # repeats: mean
        try:
            if sizes.size < 3:
                raise _Dropped(f"only {sizes.size} model size(s); a local optimum needs 3+")
            opt = _local_optimum(np.log(sizes), mean_loss, method)
        except _Dropped as e:
            dropped.append({"compute": float(budget), "sizes": int(sizes.size), "reason": str(e)})
            continue
        n_opt = float(np.exp(opt["x"]))
        lo, hi = opt["window"]
        minima.append(
            {
                "compute": float(budget),
                "N_opt": n_opt,
                "D_opt": float(budget) / (k * n_opt),
                "loss": opt["loss"],
                "sizes": int(sizes.size),
                "window": [float(sizes[lo]), float(sizes[hi - 1])],
                **({"parabola": opt["parabola"]} if "parabola" in opt else {}),
            }
        )
        opts.append(opt)
    if not minima and all("model size(s)" in d["reason"] for d in dropped):
        raise ApproachError(  # a grid, not an IsoFLOP design: nothing per budget to say
            "no compute budget has 3 or more model sizes (approach 2 needs an IsoFLOP design, "
            "e.g. sweeps/isoflop.yaml)",
            {"dropped": dropped, "minima": [], "notes": []},
        )
    notes = _dropped_notes(dropped, len(minima) + len(dropped))
    if len(minima) < 3:
        notes.append(
            f"approach 2: only {len(minima)} IsoFLOP budget(s) with an optimum inside their "
            "sizes: the exponents a and b are poorly determined (use at least 3)"
        )
    if warn:
        for note in notes:
            warnings.warn(note, stacklevel=3)
    details = {"dropped": dropped, "minima": minima, "notes": notes}
    if len(minima) < 2:
        raise ApproachError(
            f"approach 2 needs at least 2 compute budgets with an optimum inside the sizes "
            f"tried, found {len(minima)} ({len(dropped)} dropped)",
            details,
        )
    weights = _budget_weights(opts)
    for m, w in zip(minima, weights):
        m["weight"] = float(w)
    compute = np.array([m["compute"] for m in minima])
    n_opt, d_opt = (np.array([m[key] for m in minima]) for key in ("N_opt", "D_opt"))
    a, ia = _loglog_fit(compute, n_opt, weights)
    if not 0.0 < a < 1.0:
        raise ApproachError(
            f"the optima give N_opt ∝ C^{a:.3f}, so D_opt ∝ C^{1 - a:.3f}: one of them would "
            "shrink as compute grows; the budgets do not pin the optimum down",
            details,
        )
    b, ib = _loglog_fit(compute, d_opt, weights)
    return {"a": a, "b": b, "intercepts": {"N": ia, "D": ib}, "method": method, **details}


def _dropped_notes(dropped: list[dict], budgets: int) -> list[str]:
    """One note per dropped budget when there are few, else one summary note."""
    if len(dropped) <= 3:
        return [f"approach 2: budget C={d['compute']:.3g} dropped: {d['reason']}" for d in dropped]
    edge = sum("outside the grid" in d["reason"] for d in dropped)
    few = sum("model size(s)" in d["reason"] for d in dropped)
    other = len(dropped) - edge - few
    return [
        f"approach 2: {len(dropped)} of {budgets} budgets dropped ({edge} with the lowest loss "
        f"at the edge of the sizes tried, {few} with fewer than 3 sizes"
        + (f", {other} not convex around the lowest" if other else "")
        + "); each is listed with its reason in fit.json (approach_2.dropped)"
    ]


def _budget_weights(opts: list[dict]) -> np.ndarray:
    """Inverse-variance weights of the budgets' log N_opt, from their local parabolas and
    the residual variance pooled over budgets; equal weights when there is no scatter to
    pool (exact curves, 3-point windows, Akima)."""
    dof = sum(o.get("dof", 0) for o in opts)
    rss = sum(o.get("rss", 0.0) for o in opts)
    if dof == 0 or rss <= 0 or any("parabola" not in o for o in opts):
        return np.ones(len(opts))
    var = np.array([_vertex_variance(o, rss / dof) for o in opts])
    floor = max(np.median(var) * 1e-2, 1e-12)  # no budget may dominate on a lucky window
    w = 1.0 / np.maximum(var, floor)
    return w / w.mean()


def bootstrap_approach(fn, df: pd.DataFrame, resamples: int, seed: int) -> tuple[list[dict], int]:
    """Refit approach ``fn`` (``envelope`` or ``isoflop``, or a partial of it) on resampled
    runs: the a, b of each resample that could be fitted, and how many could not (a resample
    with too few budgets, a flat curve or an a outside (0, 1) is dropped and counted, never
    fatal)."""
    rng = np.random.default_rng(seed)
    core = getattr(fn, "func", fn)
    if core is isoflop:  # budgets labelled once; each resample works on arrays
        options = {"k": FLOPS_PER_PARAM_TOKEN, "method": "parabola", **getattr(fn, "keywords", {})}
        options.pop("warn", None)
        groups = budget_groups(df).to_numpy()
        n, loss = df["n_params"].to_numpy(dtype=float), df["loss"].to_numpy(dtype=float)

        def refit(idx):
            return _isoflop(n[idx], loss[idx], groups[idx], options["k"], options["method"], False)

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

"""Approach 2 of Hoffmann et al. (2022, §3.2): IsoFLOP profiles. The runs of each compute
budget trace loss against model size; each budget's optimum N* is read off its curve, and
N* ∝ C^a, D* ∝ C^b are regressed through the optima in log-log (D* = C/(k·N*), so b = 1 − a).

How the optimum of one curve is read, and how the regression weighs the budgets, is the
method; each is one published or careful procedure:

- ``hoffmann``: one parabola in log N through every run of the budget (loss against log N,
  as Hoffmann et al. fitted their IsoFLOP curves), its vertex the optimum; an unweighted
  regression.
- ``porian``: Porian et al. (2024, "Resolving Discrepancies in Compute-Optimal Scaling of
  Language Models", §2 and their public analysis code): the lowest loss per size, an Akima
  interpolation of log loss over log N on a grid 25× finer than the sizes, its argmin (kept
  when it is inside the grid, even where the lowest run is at an end of the sizes); the
  sizes' losses perturbed by seed noise (Gaussian, sd ``seed_noise`` in loss units) 1,000
  times and re-interpolated, the optimum the median of the perturbed argmins and its
  standard error their spread (floored at a third of the size spacing, inflated by the share
  of perturbations whose argmin hit an end); a budget whose argmin sits at an end, or whose
  perturbations mostly do, is dropped; a regression weighted by 1/se², and its interval
  from refitting each perturbation's optima.
- ``local``: a parabola in log N through the lowest-loss size and two neighbours on each
  side (three when the wider one is not convex); a regression weighted by the inverse
  variance of each vertex.
- ``akima``: an Akima interpolation of log loss over log N, minimised between the lowest
  size's neighbours; an unweighted regression.
- ``auto`` (the default) decides per budget: ``hoffmann`` where the curve is centred (at
  least 5 sizes; the parabola through every size convex, with at least two sizes on each
  side of its vertex and the vertex between 30% and 70% of the way along the sizes in log N;
  and a cubic through every size agreeing on the minimum within a quarter of the size
  spacing, or its cubic term within 3 standard errors of 0), ``akima`` where it is lopsided
  or asymmetric (one parabola through a curve that climbs steeply on one side misplaces its
  vertex); an unweighted regression. Each budget's choice and why is reported.

With every method but ``porian``, a budget whose lowest loss is at its smallest or largest
size is dropped (its optimum lies outside the sizes tried), and so is one with fewer than 3
sizes; ``dropped`` says which and why. An a outside (0, 1) would make D* or N* shrink as
compute grows: it is reported as a failure, never as a result.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

FLOPS_PER_PARAM_TOKEN = 6.0
ISOFLOP_METHODS = ("auto", "hoffmann", "porian", "local", "akima")
ALIASES = {"parabola": "local"}  # the name ``local`` had before there were several methods
BUDGET_TOLERANCE = 0.05  # runs whose compute agrees within 5% share a budget
PORIAN_PERTURBATIONS = 1000
PORIAN_GRID = 25  # interpolation points per interval between sizes
PORIAN_MIN_SE = 0.33  # floor of a budget's se(log N*), in size spacings
# Seed noise for ``porian`` when none is given, relative to the loss: Porian et al.'s configs
# use 0.002 and 0.01 nats for their two data sets (0.06% and 0.3% of a loss near 3.5). Runs
# vary across seeds by very different amounts (the lab's tiny CPU runs by percents:
# ``lab-analyze noise``), so pass --noise or --seed-noise where the noise is known.
DEFAULT_RELATIVE_NOISE = 0.002
CENTRE = (0.3, 0.7)  # auto: where along the sizes (in log N) a centred vertex lies
AGREE = 0.25  # auto: the cubic's minimum within this many size spacings of the vertex
SIGNIFICANT = 3.0  # auto: ... or its cubic term within this many standard errors of 0


def resolve_method(method: str) -> str:
    method = ALIASES.get(method, method)
    if method not in ISOFLOP_METHODS:
        raise ValueError(f"isoflop method must be one of {ISOFLOP_METHODS}, got {method!r}")
    return method


def loglog_fit(x, y, weights=None) -> tuple[float, float]:
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


class Dropped(Exception):
    """A budget left out of approach 2, with the reason."""


class ApproachError(ValueError):
    """An approach that cannot give a result; ``details`` says what it found on the way."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


# ---- one budget's optimum, by method ------------------------------------------------------
# Each takes x = log N of the sizes (ascending, distinct), y = their loss (the mean over
# repeats; ``porian``: the lowest), and the budget's runs (xr, yr); returns at least
# {"x": log N*, "loss": L*, "window": (lo, hi)} or raises Dropped.


def _edge_check(x: np.ndarray, y: np.ndarray) -> int:
    i = int(np.argmin(y))
    if i == 0 or i == x.size - 1:
        side = "smallest" if i == 0 else "largest"
        raise Dropped(
            f"the lowest loss is at the {side} size tried (N = {np.exp(x[i]):.3g}): the "
            "optimum lies outside the grid"
        )
    return i


def _polyfit(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares polynomial of ``degree`` through (x, y), in x − mean(x) (so the normal
    equations stay well conditioned): its coefficients (highest first), the mean, and the
    inverse of the normal matrix (for standard errors)."""
    mid = float(np.mean(x))
    X = np.vander(x - mid, degree + 1)
    inv = np.linalg.inv(X.T @ X)
    return inv @ (X.T @ y), mid, inv


def _parabola(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """c2, c1, c0 of the least-squares parabola in x (not centred)."""
    (q2, q1, q0), mid, _ = _polyfit(x, y, 2)
    return q2, q1 - 2 * q2 * mid, q0 - q1 * mid + q2 * mid * mid


def _hoffmann(x, y, xr, yr) -> dict:
    _edge_check(x, y)
    c2, c1, c0 = _parabola(xr, yr)
    if c2 <= 0:
        raise Dropped("the parabola through every size opens downwards")
    xo = -c1 / (2 * c2)
    if not x[0] < xo < x[-1]:
        raise Dropped(
            f"the parabola through every size puts its vertex (N = {np.exp(xo):.3g}) outside "
            "the sizes tried"
        )
    return {
        "x": float(xo),
        "loss": float(c0 + c1 * xo + c2 * xo * xo),
        "parabola": [float(c2), float(c1), float(c0)],
        "window": (0, x.size),
    }


def akima_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The derivatives at the points of Akima's (1970) interpolant through (x, y), as SciPy's
    ``Akima1DInterpolator`` sets them (two extrapolated secants at each end; the mean of the
    neighbouring secants where the weights vanish); a test holds the two equal."""
    m = np.diff(y) / np.diff(x)
    if m.size == 1:
        return np.full(x.size, m[0])
    ext = np.concatenate([[3 * m[0] - 2 * m[1], 2 * m[0] - m[1]], m])
    ext = np.concatenate([ext, [2 * m[-1] - m[-2], 3 * m[-1] - 2 * m[-2]]])
    f1, f2 = np.abs(ext[3:] - ext[2:-1]), np.abs(ext[1:-2] - ext[:-3])
    f12 = f1 + f2
    t = 0.5 * (ext[1:-2] + ext[2:-1])
    big = f12 > 1e-9 * f12.max()
    t[big] = (f1[big] * ext[1:-2][big] + f2[big] * ext[2:-1][big]) / f12[big]
    return t


def hermite(x: np.ndarray, y: np.ndarray, t: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The piecewise cubic with values y and slopes t at the knots x, evaluated at ``at``."""
    j = np.clip(np.searchsorted(x, at, side="right") - 1, 0, x.size - 2)
    h = x[j + 1] - x[j]
    s = (at - x[j]) / h
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y[j] + h10 * h * t[j] + h01 * y[j + 1] + h11 * h * t[j + 1]


def _akima(x, y, xr=None, yr=None) -> dict:
    i = _edge_check(x, y)
    log_y = np.log(y)
    grid = np.linspace(x[i - 1], x[i + 1], 2001)
    curve = hermite(x, log_y, akima_slopes(x, log_y), grid)
    j = int(np.argmin(curve))
    return {"x": float(grid[j]), "loss": float(np.exp(curve[j])), "window": (i - 1, i + 2)}


def _local(x, y, xr=None, yr=None) -> dict:
    i = _edge_check(x, y)
    # the lowest size and up to two neighbours on each side; the 3-point parabola through
    # the lowest and its neighbours when the wider one is not convex or puts its vertex
    # outside its own points (a convex vertex of those 3 lies between the neighbours)
    for lo, hi in ((max(0, i - 2), min(x.size, i + 3)), (i - 1, i + 2)):
        xs, ys = x[lo:hi], y[lo:hi]
        c2, c1, c0 = np.polyfit(xs, ys, 2)
        if c2 > 0 and xs[0] < -c1 / (2 * c2) < xs[-1]:
            break
    else:
        raise Dropped("the loss is not convex around its lowest size")
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


def centred(x: np.ndarray, y: np.ndarray, xr: np.ndarray, yr: np.ndarray) -> str | None:
    """Why one parabola through every size would misplace this curve's optimum, or None
    when the curve is centred enough for it (``auto``; see the module docstring)."""
    c2, c1, _ = _parabola(xr, yr)
    if c2 <= 0:
        return "the parabola through every size opens downwards"
    xo = -c1 / (2 * c2)
    below, above = int(np.sum(x < xo)), int(np.sum(x > xo))
    if min(below, above) < 2:
        return f"the parabola's vertex has {min(below, above)} size(s) on one side"
    where = (xo - x[0]) / (x[-1] - x[0])
    if not CENTRE[0] <= where <= CENTRE[1]:
        return f"lopsided: the vertex lies {where:.0%} of the way along the sizes"
    # an asymmetric curve: a cubic through every size puts its minimum elsewhere, and its
    # cubic term stands out of the runs' scatter (on noisy curves a cubic's minimum
    # wanders, and one parabola through every size is then the steadier estimate)
    coef, mid, inv = _polyfit(xr, yr, 3)
    d3, d2, d1, _ = coef
    minima = [u + mid for u in _cubic_minima(d3, d2, d1)]
    spacing = (x[-1] - x[0]) / (x.size - 1)
    if minima and min(abs(m - xo) for m in minima) <= AGREE * spacing:
        return None
    dof = xr.size - 4
    if dof > 0:
        sigma2 = float(np.sum((np.polyval(coef, xr - mid) - yr) ** 2)) / dof
        se = np.sqrt(sigma2 * inv[0, 0])
        if se > 0 and abs(d3) < SIGNIFICANT * se:
            return None
    return "asymmetric: a cubic through every size puts the minimum elsewhere"


def _cubic_minima(d3: float, d2: float, d1: float) -> list[float]:
    """Local minima of d3·u³ + d2·u² + d1·u (where its derivative is 0 and rising)."""
    if abs(d3) < 1e-12 * max(abs(d2), abs(d1), 1e-300):
        return [-d1 / (2 * d2)] if d2 > 0 else []
    disc = d2 * d2 - 3 * d3 * d1
    if disc < 0:
        return []
    root = np.sqrt(disc)
    return [u for u in ((-d2 + root) / (3 * d3), (-d2 - root) / (3 * d3)) if 3 * d3 * u + d2 > 0]


def _auto(x, y, xr, yr) -> dict:
    why = centred(x, y, xr, yr) if x.size >= 5 else "fewer than 5 sizes"
    if why is None:
        return {**_hoffmann(x, y, xr, yr), "method": "hoffmann", "why": "centred curve"}
    return {**_akima(x, y), "method": "akima", "why": why}


def _porian(x, y, noise: float, rng: np.random.Generator) -> dict:
    """One budget by Porian et al.'s procedure (module docstring): the optimum, its se in
    log N and the optima of every perturbation (``stars``, log N; NaN where at an end)."""
    from scipy.interpolate import Akima1DInterpolator

    grid = np.linspace(x[0], x[-1], (x.size - 1) * PORIAN_GRID)
    log_loss = Akima1DInterpolator(x, np.log(y))(grid)
    j = int(np.argmin(log_loss))
    if j in (0, grid.size - 1):
        raise Dropped("the interpolated optimum is at an end of the sizes tried")
    noisy = y[:, None] + noise * rng.standard_normal((y.size, PORIAN_PERTURBATIONS))
    with np.errstate(invalid="ignore"):  # a perturbed loss at or below 0: that draw is lost
        curves = Akima1DInterpolator(x, np.log(noisy), axis=0)(grid)
    jj = np.argmin(np.where(np.isfinite(curves), curves, np.inf), axis=0)
    inside = (jj > 0) & (jj < grid.size - 1) & np.isfinite(curves).all(axis=0)
    if inside.sum() < PORIAN_PERTURBATIONS // 2:
        raise Dropped(
            f"{PORIAN_PERTURBATIONS - int(inside.sum())} of {PORIAN_PERTURBATIONS} seed-noise "
            "perturbations put the optimum at an end of the sizes"
        )
    stars = np.where(inside, grid[jj], np.nan)
    kept = stars[inside]
    floor = PORIAN_MIN_SE * PORIAN_GRID * (grid[1] - grid[0])
    se = max(float(np.std(kept)), floor) * PORIAN_PERTURBATIONS / kept.size
    star_loss = np.exp(curves[jj[inside], np.flatnonzero(inside)])
    return {
        "x": float(np.median(kept)),
        "loss": float(np.median(star_loss)),
        "window": (0, x.size),
        "se_log_n": se,
        "stars": stars,
    }


# ---- every budget, and the regression -----------------------------------------------------


def isoflop(
    df: pd.DataFrame,
    k: float = FLOPS_PER_PARAM_TOKEN,
    warn: bool = True,
    method: str = "auto",
    seed_noise: float | None = None,
    seed: int = 0,
) -> dict:
    """Approach 2 by ``method`` (module docstring): each budget's optimum, the dropped
    budgets and why, and N* ∝ C^a, D* ∝ C^b through the optima. ``seed_noise``: the sd of
    a run's final loss across seeds (loss units) for ``porian``; default
    ``DEFAULT_RELATIVE_NOISE`` times each budget's lowest loss.

    Warns (when ``warn``) about dropped budgets and fewer than 3 usable budgets. Raises
    ApproachError (a ValueError carrying the dropped budgets) with fewer than 2 usable
    budgets or a fitted a outside (0, 1)."""
    method = resolve_method(method)
    groups = budget_groups(df).to_numpy()
    n, loss = df["n_params"].to_numpy(dtype=float), df["loss"].to_numpy(dtype=float)
    return isoflop_arrays(n, loss, groups, k, method, warn, seed_noise, seed)


def _curves(n, loss, groups, lowest: bool):
    """Per budget: (budget, log sizes, their loss (mean over repeats, or the lowest), log N
    and loss of every run). One sort for every budget (a bootstrap calls this per resample)."""
    order = np.lexsort((n, groups))
    g, nn, ll = groups[order], n[order], loss[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], g.size]
    for lo, hi in zip(starts, ends):
        sizes_at = lo + np.flatnonzero(np.r_[True, nn[lo + 1 : hi] != nn[lo : hi - 1]])
        if lowest:
            y = np.minimum.reduceat(ll[lo:hi], sizes_at - lo)
        else:
            y = np.add.reduceat(ll[lo:hi], sizes_at - lo) / np.diff(np.r_[sizes_at, hi])
        yield g[lo], np.log(nn[sizes_at]), y, np.log(nn[lo:hi]), ll[lo:hi]


def isoflop_arrays(n, loss, groups, k, method, warn, seed_noise=None, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    minima, dropped, opts = [], [], []
    for budget, x, y, xr, yr in _curves(n, loss, groups, lowest=method == "porian"):
        try:
            if x.size < 3:
                raise Dropped(f"only {x.size} model size(s); a local optimum needs 3+")
            if method == "porian":
                noise = DEFAULT_RELATIVE_NOISE * y.min() if seed_noise is None else seed_noise
                opt = _porian(x, y, noise, rng)
            else:
                opt = {"auto": _auto, "hoffmann": _hoffmann, "local": _local, "akima": _akima}[
                    method
                ](x, y, xr, yr)
        except Dropped as e:
            dropped.append({"compute": float(budget), "sizes": int(x.size), "reason": str(e)})
            continue
        n_opt = float(np.exp(opt["x"]))
        lo, hi = opt["window"]
        minima.append(
            {
                "compute": float(budget),
                "N_opt": n_opt,
                "D_opt": float(budget) / (k * n_opt),
                "loss": opt["loss"],
                "sizes": int(x.size),
                "window": [float(np.exp(x[lo])), float(np.exp(x[hi - 1]))],
                "method": opt.get("method", method),
                **{key: opt[key] for key in ("why", "parabola", "se_log_n") if key in opt},
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
    weights = _budget_weights(opts, method)
    for m, w in zip(minima, weights):
        m["weight"] = float(w)
    compute = np.array([m["compute"] for m in minima])
    n_opt, d_opt = (np.array([m[key] for m in minima]) for key in ("N_opt", "D_opt"))
    a, ia = loglog_fit(compute, n_opt, weights)
    if not 0.0 < a < 1.0:
        raise ApproachError(
            f"the optima give N_opt ∝ C^{a:.3f}, so D_opt ∝ C^{1 - a:.3f}: one of them would "
            "shrink as compute grows; the budgets do not pin the optimum down",
            details,
        )
    b, ib = loglog_fit(compute, d_opt, weights)
    out = {"a": a, "b": b, "intercepts": {"N": ia, "D": ib}, "method": method, **details}
    if method == "auto":
        chosen = [m["method"] for m in minima]
        out["methods_used"] = {m: chosen.count(m) for m in sorted(set(chosen))}
    if method == "porian":
        out["seed_noise"] = seed_noise if seed_noise is not None else "relative"
        out["perturbation_fits"] = _porian_refits(opts, compute, weights, k)
    return out


def _porian_refits(opts, compute, weights, k) -> list[dict]:
    """a, b refitted on each seed-noise perturbation's optima (Porian et al.'s interval): as
    in their code, each budget's perturbations whose optimum hit an end are left out and the
    rest are paired in order, as many refits as the budget with the fewest left."""
    kept = [o["stars"][np.isfinite(o["stars"])] for o in opts]
    count = min(s.size for s in kept)
    stars = np.stack([s[:count] for s in kept])  # (budgets, count)
    logc = np.log(compute)
    w = np.sqrt(weights)
    X = np.stack([logc * w, w], axis=1)
    coef, *_ = np.linalg.lstsq(X, stars * w[:, None], rcond=None)
    a = coef[0]
    return [{"a": float(v), "b": float(1.0 - v)} for v in a if 0.0 < v < 1.0]


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
        + (f", {other} for another reason" if other else "")
        + "); each is listed with its reason in fit.json (approach_2.dropped)"
    ]


def _vertex_variance(opt: dict, sigma2: float) -> float:
    """Var(log N_opt) of a local parabola by the delta method, residual variance ``sigma2``."""
    c2, c1, _ = opt["parabola"]
    X = np.vander(opt["xs"], 3)  # columns x², x, 1
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    grad = np.array([c1 / (2 * c2 * c2), -1 / (2 * c2), 0.0])  # ∂x*/∂(c2, c1, c0)
    return float(grad @ cov @ grad)


def _budget_weights(opts: list[dict], method: str) -> np.ndarray:
    """The regression's weights: 1/se² for ``porian``; for ``local``, the inverse variance of
    each vertex from its local parabola and the residual variance pooled over budgets
    (equal weights when there is no scatter to pool); equal weights otherwise."""
    if method == "porian":
        w = 1.0 / np.array([o["se_log_n"] for o in opts]) ** 2
        return w / w.mean()
    dof = sum(o.get("dof", 0) for o in opts)
    rss = sum(o.get("rss", 0.0) for o in opts)
    if method != "local" or dof == 0 or rss <= 0:
        return np.ones(len(opts))
    var = np.array([_vertex_variance(o, rss / dof) for o in opts])
    floor = max(np.median(var) * 1e-2, 1e-12)  # no budget may dominate on a lucky window
    w = 1.0 / np.maximum(var, floor)
    return w / w.mean()


def every_method(
    df: pd.DataFrame, k: float, seed_noise: float | None = None, known: dict | None = None
) -> dict:
    """a and b by each method side by side (point estimates; None where a method gives no
    result, with the reason), so the method's share of the uncertainty is visible.
    ``known``: a result of ``isoflop`` on the same runs, not computed again."""
    groups = budget_groups(df).to_numpy()
    n, loss = df["n_params"].to_numpy(dtype=float), df["loss"].to_numpy(dtype=float)
    out = {}
    for method in ISOFLOP_METHODS:
        if known and known.get("method") == method:
            out[method] = {"a": known["a"], "b": known["b"], "budgets": len(known["minima"])}
            continue
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                r = isoflop_arrays(n, loss, groups, k, method, False, seed_noise)
            out[method] = {"a": r["a"], "b": r["b"], "budgets": len(r["minima"])}
        except ValueError as e:
            out[method] = {"a": None, "b": None, "error": str(e)}
    return out

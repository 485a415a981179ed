"""L-BFGS over a batch of independent problems at once, in NumPy.

Hoffmann et al. 2022 (approach 3) fit their law by L-BFGS from a grid of thousands of
starting points and keep the best; a bootstrap refits thousands of resamples. Run one
by one through ``scipy.optimize.minimize`` that is minutes of Python overhead. Here every
problem is a row of ``x`` and each iteration does the two-loop recursion and an Armijo
backtracking line search for all rows with array operations, so the cost is a few
hundred vectorised objective evaluations however many rows there are.

Standard L-BFGS (Nocedal & Wright 2006, algorithm 7.4) with a backtracking line search;
rows stop on their own when their objective stalls or their gradient vanishes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FunGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    x: np.ndarray  # (S, P) solutions
    fun: np.ndarray  # (S,) objective at x
    converged: np.ndarray  # (S,) bool: stopped by a tolerance, not by max_iter
    iterations: int


def lbfgs_batched(
    fun_grad: FunGrad,
    x0: np.ndarray,
    max_iter: int = 1000,
    history: int = 10,
    ftol: float = 1e-12,
    gtol: float = 1e-9,
    max_backtracks: int = 40,
) -> BatchResult:
    """Minimise S independent problems from their starts ``x0`` (S, P).

    ``fun_grad(x, rows)`` returns the objective (k,) and gradient (k, P) of problems
    ``rows`` (indices into the batch) at ``x`` (k, P); it is only ever asked for the
    problems still running."""
    x = np.array(x0, dtype=float)
    S, P = x.shape
    f, g = fun_grad(x, np.arange(S))
    s_hist = np.zeros((history, S, P))
    y_hist = np.zeros((history, S, P))
    rho = np.zeros((history, S))
    gamma = np.ones(S)
    active = np.isfinite(f)
    converged = ~active
    step_scale = np.minimum(1.0, 1.0 / np.maximum(np.abs(g).sum(axis=1), 1e-12))
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - reported as iterations
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        xr, gr, fr = x[rows], g[rows], f[rows]
        d = -_two_loop(gr, s_hist[:, rows], y_hist[:, rows], rho[:, rows], gamma[rows], it)
        slope = (d * gr).sum(axis=1)
        not_descent = ~(slope < 0)
        if not_descent.any():  # forget the curvature pairs of those rows, go downhill
            d[not_descent] = -gr[not_descent]
            slope[not_descent] = -(gr[not_descent] ** 2).sum(axis=1)
            rho[:, rows[not_descent]] = 0.0
        t = np.where(rho[:, rows].any(axis=0), 1.0, step_scale[rows])
        accepted = np.zeros(rows.size, dtype=bool)
        x_new, f_new, g_new = xr.copy(), fr.copy(), gr.copy()
        for _ in range(max_backtracks):
            todo = np.flatnonzero(~accepted)
            if todo.size == 0:
                break
            trial = xr[todo] + t[todo, None] * d[todo]
            ft, gt = fun_grad(trial, rows[todo])
            ok = np.isfinite(ft) & (ft <= fr[todo] + 1e-4 * t[todo] * slope[todo])
            idx = todo[ok]
            x_new[idx], f_new[idx], g_new[idx] = trial[ok], ft[ok], gt[ok]
            accepted[idx] = True
            t[todo[~ok]] *= 0.5
        # rows whose line search failed have stalled: stop them where they are
        stalled = ~accepted
        s = x_new - xr
        yv = g_new - gr
        sy = (s * yv).sum(axis=1)
        slot = (it - 1) % history
        good = accepted & (sy > 1e-12)
        s_hist[slot, rows] = np.where(good[:, None], s, 0.0)
        y_hist[slot, rows] = np.where(good[:, None], yv, 0.0)
        rho[slot, rows] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[rows] = np.where(good, sy / np.maximum((yv * yv).sum(axis=1), 1e-300), gamma[rows])
        small_f = np.abs(fr - f_new) <= ftol * np.maximum(1.0, np.abs(fr))
        small_g = np.abs(g_new).max(axis=1) <= gtol
        x[rows], f[rows], g[rows] = x_new, f_new, g_new
        done = stalled | (accepted & (small_f | small_g))
        converged[rows[done]] = True
        active[rows[done]] = False
    return BatchResult(x=x, fun=f, converged=converged, iterations=it)


def _two_loop(g, s_hist, y_hist, rho, gamma, it) -> np.ndarray:
    """H·g by the L-BFGS two-loop recursion, for each row, newest pair first."""
    m = s_hist.shape[0]
    order = [(it - 2 - i) % m for i in range(min(m, it - 1))]  # newest to oldest slot
    q = g.copy()
    alphas = []
    for j in order:
        a = rho[j] * (s_hist[j] * q).sum(axis=1)
        q -= a[:, None] * y_hist[j]
        alphas.append(a)
    r = gamma[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas)):
        b = rho[j] * (y_hist[j] * r).sum(axis=1)
        r += (a - b)[:, None] * s_hist[j]
    return r

"""Scaling laws of the form L = E + Σ_j A_j / X_j^α_j, fitted as Hoffmann et al. 2022 did.

Approach 3 of Hoffmann et al. ("Training Compute-Optimal Large Language Models", 2022,
appendix D.2): minimise the Huber loss (δ = 1e-3) between the predicted and observed
log-loss, the prediction written in log-sum-exp form

    log L̂ = LSE(e, a_1 − α_1·log X_1, a_2 − α_2·log X_2, ...),   E = eᵉ, A_j = e^a_j,

by L-BFGS from a grid of starting points, keeping the best. Their grid: α, β ∈ {0, 0.5,
..., 2}, e ∈ {−1, −0.5, ..., 1}, a, b ∈ {0, 5, ..., 25}: 4,500 starts for L(N, D). Every
start runs at once in ``analysis.optim.lbfgs_batched``.

Laws here: ``chinchilla`` L(N, D) = E + A/N^α + B/D^β, and the single-variable laws
``n`` L(N) = E + A/N^α, ``d`` L(D) = E + B/D^β, ``c`` L(C) = E + A/C^α (Kaplan et al. 2020
with an irreducible term).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.optim import lbfgs_batched

HUBER_DELTA = 1e-3
E_GRID = np.arange(-1.0, 1.01, 0.5)
COEF_GRID = np.arange(0.0, 25.1, 5.0)
EXP_GRID = np.arange(0.0, 2.01, 0.5)


@dataclass(frozen=True)
class Law:
    """L = E + Σ_j coef_j / variable_j ^ exponent_j."""

    name: str
    variables: tuple[str, ...]  # DataFrame columns: n_params, tokens, compute
    coefs: tuple[str, ...]  # names of the A_j
    exponents: tuple[str, ...]  # names of the α_j
    formula: str

    @property
    def param_names(self) -> tuple[str, ...]:
        return ("E", *self.coefs, *self.exponents)

    @property
    def n_params(self) -> int:
        return 1 + 2 * len(self.variables)


LAWS = {
    "chinchilla": Law(
        "chinchilla",
        ("n_params", "tokens"),
        ("A", "B"),
        ("alpha", "beta"),
        "L(N, D) = E + A/N^alpha + B/D^beta",
    ),
    "n": Law("n", ("n_params",), ("A",), ("alpha",), "L(N) = E + A/N^alpha"),
    "d": Law("d", ("tokens",), ("B",), ("beta",), "L(D) = E + B/D^beta"),
    "c": Law("c", ("compute",), ("A",), ("alpha",), "L(C) = E + A/C^alpha"),
}


@dataclass
class Fit:
    """A fitted law: parameters by name, the objective reached, and what it was fitted on."""

    law: Law
    params: dict[str, float]
    objective: float
    n_points: int
    converged: bool
    extra: dict = field(default_factory=dict)

    def predict(self, **variables: np.ndarray | float) -> np.ndarray:
        """Predicted loss; pass each of the law's variables by column name, e.g.
        ``fit.predict(n_params=1e6, tokens=1e8)``."""
        total = self.params["E"]
        for var, coef, exp in zip(self.law.variables, self.law.coefs, self.law.exponents):
            x = np.asarray(variables[var], dtype=float)
            total = total + self.params[coef] / x ** self.params[exp]
        return np.asarray(total)

    def describe(self) -> str:
        p = self.params
        text = f"L = {p['E']:.4g}"
        symbols = {"n_params": "N", "tokens": "D", "compute": "C"}
        for var, coef, exp in zip(self.law.variables, self.law.coefs, self.law.exponents):
            text += f" + {p[coef]:.4g} / {symbols[var]}^{p[exp]:.4f}"
        return text


def _theta_to_params(law: Law, theta: np.ndarray) -> dict[str, float]:
    k = len(law.variables)
    params = {"E": float(np.exp(theta[0]))}
    for j in range(k):
        params[law.coefs[j]] = float(np.exp(theta[1 + 2 * j]))
        params[law.exponents[j]] = float(theta[2 + 2 * j])
    return params


def hoffmann_grid(law: Law) -> np.ndarray:
    """Starting points θ = (e, a_1, α_1, a_2, α_2, ...) on Hoffmann et al.'s grid."""
    axes = [E_GRID]
    for _ in law.variables:
        axes += [COEF_GRID, EXP_GRID]
    return np.array(list(itertools.product(*axes)), dtype=float)


def huber_objective(
    log_x: np.ndarray, log_loss: np.ndarray, weights: np.ndarray, delta: float = HUBER_DELTA
):
    """fun_grad(θ, rows) for ``lbfgs_batched``: Σ_i w_i · Huber_δ(log L̂_i − log L_i).

    log_x: (n, k) logs of the law's variables; log_loss: (n,); weights: (S, n), one row per
    problem (all ones for a plain fit, resample counts for a bootstrap)."""
    k = log_x.shape[1]

    def fun_grad(theta: np.ndarray, rows: np.ndarray):
        w = weights[rows]  # (m, n)
        e = theta[:, :1]  # (m, 1)
        a = theta[:, 1::2][:, :k]  # (m, k)
        alpha = theta[:, 2::2][:, :k]
        terms = np.concatenate(
            [
                np.broadcast_to(e[:, :, None], (theta.shape[0], log_x.shape[0], 1)),
                a[:, None, :] - alpha[:, None, :] * log_x[None, :, :],
            ],
            axis=2,
        )  # (m, n, 1 + k)
        top = terms.max(axis=2, keepdims=True)
        expd = np.exp(terms - top)
        total = expd.sum(axis=2, keepdims=True)
        lse = (top + np.log(total))[:, :, 0]
        p = expd / total  # softmax weights (m, n, 1 + k)
        r = lse - log_loss[None, :]
        absr = np.abs(r)
        huber = np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))
        f = (w * huber).sum(axis=1)
        wd = w * np.clip(r, -delta, delta)  # (m, n): w · Huber'(r)
        grad = np.empty_like(theta)
        grad[:, 0] = (wd * p[:, :, 0]).sum(axis=1)
        for j in range(k):
            pj = p[:, :, 1 + j]
            grad[:, 1 + 2 * j] = (wd * pj).sum(axis=1)
            grad[:, 2 + 2 * j] = -(wd * pj * log_x[None, :, j]).sum(axis=1)
        return f, grad

    return fun_grad


def fit_law(
    df: pd.DataFrame,
    law: str | Law = "chinchilla",
    delta: float = HUBER_DELTA,
    starts: np.ndarray | None = None,
) -> Fit:
    """Fit ``law`` to the runs in ``df`` (columns named by the law's variables and
    ``loss``) from Hoffmann et al.'s grid of starts (or ``starts``), keeping the best.

    Raises ValueError for an unknown law, missing columns, or fewer runs than the law
    has parameters."""
    law = resolve_law(law)
    log_x, log_loss = design(df, law)
    starts = hoffmann_grid(law) if starts is None else np.atleast_2d(starts)
    weights = np.ones((starts.shape[0], log_loss.size))
    res = lbfgs_batched(huber_objective(log_x, log_loss, weights, delta), starts)
    best = int(np.nanargmin(res.fun))
    return Fit(
        law=law,
        params=_theta_to_params(law, res.x[best]),
        objective=float(res.fun[best]),
        n_points=int(log_loss.size),
        converged=bool(res.converged[best]),
        extra={"theta": res.x[best].tolist(), "starts": int(starts.shape[0]), "delta": delta},
    )


def resolve_law(law: str | Law) -> Law:
    if isinstance(law, Law):
        return law
    if law not in LAWS:
        raise ValueError(f"unknown law {law!r}; laws are {tuple(LAWS)}")
    return LAWS[law]


def design(df: pd.DataFrame, law: Law) -> tuple[np.ndarray, np.ndarray]:
    """(log of the law's variables (n, k), log loss (n,)), checking there are enough runs."""
    missing = [c for c in (*law.variables, "loss") if c not in df.columns]
    if missing:
        raise ValueError(f"law {law.name!r} needs the columns {missing}")
    if len(df) < law.n_params:
        raise ValueError(
            f"law {law.name!r} ({law.formula}) has {law.n_params} parameters but only "
            f"{len(df)} data points were given; it needs at least {law.n_params}"
        )
    log_x = np.log(df[list(law.variables)].to_numpy(dtype=float))
    return log_x, np.log(df["loss"].to_numpy(dtype=float))

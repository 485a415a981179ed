"""Scaling laws and how they are fitted: Huber loss on log-loss, L-BFGS from a grid of starts.

Approach 3 of Hoffmann et al. ("Training Compute-Optimal Large Language Models", 2022,
appendix D.2): minimise the Huber loss (δ = 1e-3) between predicted and observed log-loss,
the prediction of L = E + A/N^α + B/D^β written in log-sum-exp form

    log L̂ = LSE(e, a − α·log N, b − β·log D),   E = eᵉ, A = eᵃ, B = eᵇ,

by L-BFGS from a grid of starting points, keeping the best. Their grid: α, β ∈ {0, 0.5,
..., 2}, e ∈ {−1, −0.5, ..., 1}, a, b ∈ {0, 5, ..., 25}: 4,500 starts, all run at once in
``analysis.optim.lbfgs_batched``. Every law here is fitted the same way:

- ``chinchilla``  L(N, D) = E + A/N^α + B/D^β                  (Hoffmann et al. 2022)
- ``n``, ``d``, ``c``  L(X) = E + A/X^α for X = N, D, C         (Kaplan et al. 2020 + E)
- ``n_pure``, ``d_pure``, ``c_pure``  L(X) = A/X^α              (Kaplan et al. 2020)
- ``kaplan_nd``  L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D      (Kaplan et al. 2020, eq. 1.5)
- ``data_constrained``  Chinchilla's law with repeated data worth less (Muennighoff et al.
  2023); needs each run's unique tokens

A fit can be weighted per problem, which is how ``analysis.bootstrap`` refits thousands of
resamples in one batch (a resample is a vector of counts over the runs).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

HUBER_DELTA = 1e-3
E_GRID = np.arange(-1.0, 1.01, 0.5)
COEF_GRID = np.arange(0.0, 25.1, 5.0)
EXP_GRID = np.arange(0.0, 2.01, 0.5)
SYMBOLS = {"n_params": "N", "tokens": "D", "compute": "C"}


def huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss of residuals r and its derivative."""
    absr = np.abs(r)
    return np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta)), np.clip(
        r, -delta, delta
    )


class Law:
    """A law: its parameters, how θ maps to them, log L̂ and its gradient, the start grid."""

    name: str
    variables: tuple[str, ...]
    formula: str
    param_names: tuple[str, ...]

    # variables a prediction may leave out (the law's predict has their default)
    optional = ()

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def log_pred(self, theta: np.ndarray, log_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log L̂ (m, n) and its gradient in θ (m, n, P), for θ (m, P), log_x (n, k)."""
        raise NotImplementedError

    def starts(self) -> np.ndarray:
        raise NotImplementedError

    def params(self, theta: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def predict(self, params: dict[str, float], **variables) -> np.ndarray:
        raise NotImplementedError

    def describe(self, params: dict[str, float]) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class PowerLaw(Law):
    """L = [E +] Σ_j coef_j / variable_j ^ exponent_j, fitted in log-sum-exp form."""

    name: str
    variables: tuple[str, ...]
    coefs: tuple[str, ...]
    exponents: tuple[str, ...]
    offset: bool
    formula: str

    @property
    def param_names(self) -> tuple[str, ...]:
        return (("E",) if self.offset else ()) + self.coefs + self.exponents

    def log_pred(self, theta, log_x):
        m, n, k = theta.shape[0], log_x.shape[0], len(self.variables)
        o = 1 if self.offset else 0
        a = theta[:, o::2][:, :k]
        alpha = theta[:, o + 1 :: 2][:, :k]
        terms = a[:, None, :] - alpha[:, None, :] * log_x[None, :, :]  # (m, n, k)
        top = terms.max(axis=2)  # (m, n); the offset e joins the log-sum-exp below
        if self.offset:
            e = theta[:, :1]  # (m, 1)
            top = np.maximum(top, e)
        expd = np.exp(terms - top[:, :, None])
        total = expd.sum(axis=2)
        if self.offset:
            exp_e = np.exp(e - top)
            total = total + exp_e
        lse = top + np.log(total)
        inv = 1.0 / total  # softmax weights of the terms: expd · inv
        grad = np.empty((m, n, theta.shape[1]))
        if self.offset:
            grad[:, :, 0] = exp_e * inv
        for j in range(k):
            w = expd[:, :, j] * inv
            grad[:, :, o + 2 * j] = w
            grad[:, :, o + 2 * j + 1] = -w * log_x[None, :, j]
        return lse, grad

    def starts(self):
        axes = ([E_GRID] if self.offset else []) + [COEF_GRID, EXP_GRID] * len(self.variables)
        return np.array(list(itertools.product(*axes)), dtype=float)

    def params(self, theta):
        o = 1 if self.offset else 0
        out = {"E": float(np.exp(theta[0]))} if self.offset else {}
        for j, (coef, exp) in enumerate(zip(self.coefs, self.exponents)):
            out[coef] = float(np.exp(theta[o + 2 * j]))
            out[exp] = float(theta[o + 2 * j + 1])
        return out

    def predict(self, params, **variables):
        total = params.get("E", 0.0)
        for var, coef, exp in zip(self.variables, self.coefs, self.exponents):
            total = total + params[coef] / np.asarray(variables[var], dtype=float) ** params[exp]
        return np.asarray(total)

    def describe(self, params):
        parts = [f"{params['E']:.4g}"] if self.offset else []
        for var, coef, exp in zip(self.variables, self.coefs, self.exponents):
            parts.append(f"{params[coef]:.4g} / {SYMBOLS[var]}^{params[exp]:.4f}")
        return "L = " + " + ".join(parts)


@dataclass(frozen=True)
class KaplanND(Law):
    """L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D, θ = (log N_c, log D_c, α_N, α_D):

    log L̂ = α_D · LSE(r₁, r₂),  r₁ = (α_N/α_D)(log N_c − log N),  r₂ = log D_c − log D."""

    name: str = "kaplan_nd"
    variables: tuple[str, ...] = ("n_params", "tokens")
    formula: str = "L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"
    param_names: tuple[str, ...] = ("N_c", "D_c", "alpha_N", "alpha_D")

    def log_pred(self, theta, log_x):
        nc, dc, an, ad = (theta[:, i, None] for i in range(4))
        r1 = (an / ad) * (nc - log_x[None, :, 0])
        r2 = dc - log_x[None, :, 1]
        top = np.maximum(r1, r2)
        e1, e2 = np.exp(r1 - top), np.exp(r2 - top)
        s = top + np.log(e1 + e2)
        p1, p2 = e1 / (e1 + e2), e2 / (e1 + e2)
        grad = np.stack([an * p1, ad * p2, p1 * (nc - log_x[None, :, 0]), s - p1 * r1], axis=2)
        return ad * s, grad

    def starts(self):
        axes = [
            np.arange(10.0, 31, 5),
            np.arange(10.0, 31, 5),
            [0.05, 0.1, 0.3, 0.6],
            [0.05, 0.1, 0.3, 0.6],
        ]
        return np.array(list(itertools.product(*axes)), dtype=float)

    def params(self, theta):
        return {
            "N_c": float(np.exp(theta[0])),
            "D_c": float(np.exp(theta[1])),
            "alpha_N": float(theta[2]),
            "alpha_D": float(theta[3]),
        }

    def predict(self, params, **variables):
        n = np.asarray(variables["n_params"], dtype=float)
        d = np.asarray(variables["tokens"], dtype=float)
        p = params
        return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]

    def describe(self, params):
        p = params
        return (
            f"L = [({p['N_c']:.3g}/N)^({p['alpha_N']:.4f}/{p['alpha_D']:.4f}) + "
            f"{p['D_c']:.3g}/D]^{p['alpha_D']:.4f}"
        )


@dataclass(frozen=True)
class DataConstrained(Law):
    """Muennighoff et al. (2023), "Scaling Data-Constrained Language Models", their data
    repetition term: L = E + A/N^α + B/D'^β with the effective data

        D' = U + U·R*·(1 − exp(−R/R*)),   R = D/U − 1 (repeated epochs of U unique tokens),

    so repeated tokens are worth less and less (R* is the number of repetitions after which
    they are worth e⁻¹ of fresh ones; they found R* ≈ 15). With no repetition D' = D and the
    law is Chinchilla's. Parameter repetition (their N') is not modelled. θ = (e, a, α, b,
    β, log R*); the log-sum-exp form and gradients as ``PowerLaw``'s."""

    name: str = "data_constrained"
    variables: tuple[str, ...] = ("n_params", "tokens", "unique_tokens")
    formula: str = "L(N, D, U) = E + A/N^alpha + B/D'^beta, D' = U + U R*(1 - exp(-(D/U - 1)/R*))"
    param_names: tuple[str, ...] = ("E", "A", "alpha", "B", "beta", "R_star")
    optional = ("unique_tokens",)  # left out: fresh data (U = D, so D' = D)

    @staticmethod
    def _effective(log_x, log_r_star):
        """log D' (m, n) and d log D' / d log R* for θ rows of log R* (m, 1)."""
        u = np.exp(log_x[None, :, 2])
        reps = np.maximum(np.exp(log_x[None, :, 1] - log_x[None, :, 2]) - 1.0, 0.0)
        # a line search may try an extreme R*: the result is then non-finite, which the
        # optimizer rejects, so the overflow is not worth a warning
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            r_star = np.exp(log_r_star)
            decay = np.exp(-reps / r_star)
            d_eff = u + u * r_star * (1.0 - decay)
            dlog = u * r_star * ((1.0 - decay) - (reps / r_star) * decay) / d_eff
            return np.log(d_eff), dlog

    def log_pred(self, theta, log_x):
        log_d, dlog = self._effective(log_x, theta[:, 5:6])
        terms = np.stack(
            [
                np.broadcast_to(theta[:, :1], log_d.shape),
                theta[:, 1:2] - theta[:, 2:3] * log_x[None, :, 0],
                theta[:, 3:4] - theta[:, 4:5] * log_d,
            ],
            axis=2,
        )
        top = terms.max(axis=2, keepdims=True)
        expd = np.exp(terms - top)
        total = expd.sum(axis=2, keepdims=True)
        p = expd / total
        grad = np.empty((*log_d.shape, 6))
        grad[:, :, 0] = p[:, :, 0]
        grad[:, :, 1] = p[:, :, 1]
        grad[:, :, 2] = -p[:, :, 1] * log_x[None, :, 0]
        grad[:, :, 3] = p[:, :, 2]
        grad[:, :, 4] = -p[:, :, 2] * log_d
        grad[:, :, 5] = -p[:, :, 2] * theta[:, 4:5] * dlog
        return (top + np.log(total))[:, :, 0], grad

    def starts(self):
        base = LAWS["chinchilla"].starts()
        r_star = np.log([2.0, 15.0, 60.0])
        return np.array([[*b, r] for b in base for r in r_star], dtype=float)

    def params(self, theta):
        return {
            "E": float(np.exp(theta[0])),
            "A": float(np.exp(theta[1])),
            "alpha": float(theta[2]),
            "B": float(np.exp(theta[3])),
            "beta": float(theta[4]),
            "R_star": float(np.exp(theta[5])),
        }

    def predict(self, params, **variables):
        n = np.asarray(variables["n_params"], dtype=float)
        d = np.asarray(variables["tokens"], dtype=float)
        u = np.asarray(variables.get("unique_tokens", d), dtype=float)
        reps = np.maximum(d / u - 1.0, 0.0)
        r = params["R_star"]
        d_eff = u + u * r * (1.0 - np.exp(-reps / r))
        return (
            params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d_eff ** params["beta"]
        )

    def describe(self, params):
        p = params
        return (
            f"L = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D'^{p['beta']:.4f}"
            f", R* = {p['R_star']:.3g}"
        )


def _power(name, variables, offset, formula):
    coefs = tuple("B" if v == "tokens" else "A" for v in variables)
    exps = tuple("beta" if v == "tokens" else "alpha" for v in variables)
    return PowerLaw(name, variables, coefs, exps, offset, formula)


LAWS: dict[str, Law] = {
    "chinchilla": _power(
        "chinchilla", ("n_params", "tokens"), True, "L(N, D) = E + A/N^alpha + B/D^beta"
    ),
    "kaplan_nd": KaplanND(),
    "n": _power("n", ("n_params",), True, "L(N) = E + A/N^alpha"),
    "d": _power("d", ("tokens",), True, "L(D) = E + B/D^beta"),
    "c": _power("c", ("compute",), True, "L(C) = E + A/C^alpha"),
    "n_pure": _power("n_pure", ("n_params",), False, "L(N) = A/N^alpha"),
    "d_pure": _power("d_pure", ("tokens",), False, "L(D) = B/D^beta"),
    "c_pure": _power("c_pure", ("compute",), False, "L(C) = A/C^alpha"),
}
LAWS["data_constrained"] = DataConstrained()


def objective(
    law: Law,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    delta: float = HUBER_DELTA,
):
    """fun_grad(θ, rows) for ``lbfgs_batched``: Σ_i w_i · Huber_δ(log L̂_i − log L_i), one
    weight row per problem (ones for a plain fit, resample counts for a bootstrap)."""

    def fun_grad(theta: np.ndarray, rows: np.ndarray):
        pred, dpred = law.log_pred(theta, log_x)
        h, dh = huber(pred - log_loss[None, :], delta)
        w = weights[rows]
        return (w * h).sum(axis=1), np.einsum("mn,mnp->mp", w * dh, dpred)

    return fun_grad


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

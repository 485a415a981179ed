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
- ``chinchilla_tied``  L(N, D) = E + A/N^α + B/D^α              (α = β: Muennighoff et al.
  2023, Gadre et al. 2024)
- ``gadre``  L(N, M) = E + a/N^α + b/(M·N)^α, M = D/N                (Gadre et al. 2024, their
  form in N and the token multiplier; fitted as they did, least squares on the loss)
- ``data_constrained``  Chinchilla's law with repeated data worth less (Muennighoff et al.
  2023, R_D* only); needs each run's unique tokens
- ``data_constrained_full``  ... and excess parameters worth less too (their R_N*)

Any law can be fitted with some of its parameters held at given values (``fixed``: e.g.
Muennighoff et al.'s two-stage fit, the base law held while R_D*, R_N* are fitted).

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
    # what is fitted: "log_huber" (Huber on log loss, Hoffmann et al.) or "squares" (least
    # squares on the loss, as Gadre et al. fitted theirs)
    fit_space = "log_huber"
    # θ's entries by name, in order, and which of them θ holds as logs
    theta_names: tuple[str, ...] = ()
    logged: frozenset = frozenset()
    # distinct values of the first variable (model sizes) that determine the law's
    # dependence on it: E + A/N^alpha takes three; a rolling-backtest fold fitted on fewer
    # extrapolates by how its optimizer settled, not by the law
    min_sizes = 3

    def theta_of(self, params: dict[str, float]) -> np.ndarray:
        """θ for the given parameter values (the inverse of ``params``)."""
        return np.array(
            [np.log(params[k]) if k in self.logged else params[k] for k in self.theta_names]
        )

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

    @property
    def theta_names(self) -> tuple[str, ...]:
        pairs = tuple(n for pair in zip(self.coefs, self.exponents) for n in pair)
        return (("E",) if self.offset else ()) + pairs

    @property
    def logged(self) -> frozenset:
        return frozenset((("E",) if self.offset else ()) + self.coefs)

    def log_pred(self, theta, log_x):
        # one (m, n) array per term, not an (m, n, k) stack: reductions over a last axis of
        # 2 or 3 are slow in NumPy, and these run at every L-BFGS step of every start
        m, n, k = theta.shape[0], log_x.shape[0], len(self.variables)
        o = 1 if self.offset else 0
        terms = [
            theta[:, o + 2 * j, None] - theta[:, o + 2 * j + 1, None] * log_x[None, :, j]
            for j in range(k)
        ]
        e = theta[:, :1] if self.offset else None  # (m, 1); joins the log-sum-exp below
        top = terms[0].copy()
        for t in terms[1:]:
            np.maximum(top, t, out=top)
        if self.offset:
            np.maximum(top, e, out=top)
        for t in terms:  # in place: each term becomes exp(term − top)
            np.subtract(t, top, out=t)
            np.exp(t, out=t)
        total = terms[0].copy()
        for t in terms[1:]:
            total += t
        if self.offset:
            exp_e = np.exp(e - top)
            total += exp_e
        inv = 1.0 / total  # softmax weights of the terms: exp(term − top) · inv
        lse = np.log(total, out=total)
        lse += top
        grad = np.empty((m, n, theta.shape[1]))
        if self.offset:
            np.multiply(exp_e, inv, out=grad[:, :, 0])
        for j, t in enumerate(terms):
            w = np.multiply(t, inv, out=t)
            grad[:, :, o + 2 * j] = w
            np.multiply(w, -log_x[None, :, j], out=grad[:, :, o + 2 * j + 1])
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
    theta_names: tuple[str, ...] = ("N_c", "D_c", "alpha_N", "alpha_D")
    logged: frozenset = frozenset({"N_c", "D_c"})

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
    theta_names: tuple[str, ...] = ("E", "A", "alpha", "B", "beta", "R_star")
    logged: frozenset = frozenset({"E", "A", "B", "R_star"})
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


@dataclass(frozen=True)
class TiedPowerLaw(Law):
    """L(N, D) = E + A/N^α + B/D^α: Chinchilla's law with one exponent for both terms, as
    Muennighoff et al. (2023) and Gadre et al. (2024) fit it. θ = (e, a, b, α), log-sum-exp
    form as ``PowerLaw``'s."""

    name: str = "chinchilla_tied"
    variables: tuple[str, ...] = ("n_params", "tokens")
    formula: str = "L(N, D) = E + A/N^alpha + B/D^alpha"
    param_names: tuple[str, ...] = ("E", "A", "B", "alpha")
    theta_names: tuple[str, ...] = ("E", "A", "B", "alpha")
    logged: frozenset = frozenset({"E", "A", "B"})
    min_sizes = 2  # alpha is set by the runs' D as well; E and A then by two sizes

    def log_pred(self, theta, log_x):
        e, a, b, alpha = (theta[:, i, None] for i in range(4))
        terms = np.stack(
            [
                np.broadcast_to(e, (theta.shape[0], log_x.shape[0])),
                a - alpha * log_x[None, :, 0],
                b - alpha * log_x[None, :, 1],
            ],
            axis=2,
        )
        top = terms.max(axis=2, keepdims=True)
        expd = np.exp(terms - top)
        total = expd.sum(axis=2, keepdims=True)
        p = expd / total
        grad = np.stack(
            [
                p[:, :, 0],
                p[:, :, 1],
                p[:, :, 2],
                -p[:, :, 1] * log_x[None, :, 0] - p[:, :, 2] * log_x[None, :, 1],
            ],
            axis=2,
        )
        return (top + np.log(total))[:, :, 0], grad

    def starts(self):
        return np.array(list(itertools.product(E_GRID, COEF_GRID, COEF_GRID, EXP_GRID)))

    def params(self, theta):
        return {
            "E": float(np.exp(theta[0])),
            "A": float(np.exp(theta[1])),
            "B": float(np.exp(theta[2])),
            "alpha": float(theta[3]),
        }

    def predict(self, params, **variables):
        n = np.asarray(variables["n_params"], dtype=float)
        d = np.asarray(variables["tokens"], dtype=float)
        p = params
        return np.asarray(p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["alpha"])

    def describe(self, params):
        p = params
        return (
            f"L = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + "
            f"{p['B']:.4g} / D^{p['alpha']:.4f}"
        )


@dataclass(frozen=True)
class Gadre(TiedPowerLaw):
    """Gadre et al. (2024), "Language models scale reliably with over-training and on
    downstream tasks", eq. 4: L(N, M) = E + a/N^α + b/(M·N)^α with the token multiplier
    M = D/N, i.e. the tied law in N and M (their b also absorbs a constant 6^(α/2) from
    writing it in C = 6·N·D). Fitted as they did: least squares on the loss, not Huber on
    its log. Its variables are N and D, as every table has them; M is D/N."""

    name: str = "gadre"
    formula: str = "L(N, M) = E + a/N^alpha + b/(M N)^alpha, M = D/N"
    param_names: tuple[str, ...] = ("E", "a", "b", "alpha")
    theta_names: tuple[str, ...] = ("E", "a", "b", "alpha")
    logged: frozenset = frozenset({"E", "a", "b"})
    fit_space = "squares"

    def params(self, theta):
        p = super().params(theta)
        return {"E": p["E"], "a": p["A"], "b": p["B"], "alpha": p["alpha"]}

    def theta_of(self, params):
        return super().theta_of({**params, "A": params["a"], "B": params["b"]})

    def predict(self, params, **variables):
        return super().predict({**params, "A": params["a"], "B": params["b"]}, **variables)

    def describe(self, params):
        p = params
        return (
            f"L = {p['E']:.4g} + {p['a']:.4g} / N^{p['alpha']:.4f} + "
            f"{p['b']:.4g} / (M N)^{p['alpha']:.4f}, M = D/N"
        )


def _repeated(log_size, log_unique, log_r_star):
    """log of the effective amount U + U·R*·(1 − exp(−R/R*)), R = size/U − 1 ≥ 0."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        u = np.exp(log_unique)
        reps = np.maximum(np.exp(log_size - log_unique) - 1.0, 0.0)
        r_star = np.exp(log_r_star)
        return np.log(u + u * r_star * (1.0 - np.exp(-reps / r_star)))


@dataclass(frozen=True)
class DataConstrainedFull(Law):
    """Muennighoff et al. (2023), eq. 5: L = E + A/N'^α + B/D'^β with effective data D' =
    U_D + U_D·R_D*·(1 − exp(−R_D/R_D*)), R_D = D/U_D − 1, and effective parameters N' =
    U_N + U_N·R_N*·(1 − exp(−R_N/R_N*)), R_N = N/U_N − 1, where U_N = min(N_opt(U_D), N) is
    the compute-optimal size for U_D tokens under the base law (N parameters beyond it are
    excess, worth less and less). θ = (e, a, α, b, β, log R_D*, log R_N*); its gradient is
    by central differences (U_N moves with the base law's parameters)."""

    name: str = "data_constrained_full"
    variables: tuple[str, ...] = ("n_params", "tokens", "unique_tokens")
    formula: str = (
        "L = E + A/N'^alpha + B/D'^beta, D' = U + U R_D*(1 - exp(-(D/U - 1)/R_D*)), "
        "N' likewise with R_N* beyond N_opt(U)"
    )
    param_names: tuple[str, ...] = ("E", "A", "alpha", "B", "beta", "R_D_star", "R_N_star")
    theta_names: tuple[str, ...] = ("E", "A", "alpha", "B", "beta", "R_D_star", "R_N_star")
    logged: frozenset = frozenset({"E", "A", "B", "R_D_star", "R_N_star"})
    optional = ("unique_tokens",)

    @staticmethod
    def _log_values(theta, log_x):
        e, a, alpha, b, beta, lrd, lrn = (theta[:, i, None] for i in range(7))
        log_n, log_d, log_u = log_x[None, :, 0], log_x[None, :, 1], log_x[None, :, 2]
        with np.errstate(all="ignore"):
            # N_opt(U) of the base law: D_opt = U at C/k = (U·G)^(1/b'), N_opt = G·(C/k)^a'
            log_g = (np.log(alpha) + a - np.log(beta) - b) / (alpha + beta)
            log_nopt = log_g + (beta / alpha) * (log_u + log_g)
            log_un = np.minimum(log_nopt, log_n)
            log_n_eff = _repeated(log_n, log_un, lrn)
            log_d_eff = _repeated(log_d, log_u, lrd)
            terms = np.stack(
                [
                    np.broadcast_to(e, log_n_eff.shape),
                    a - alpha * log_n_eff,
                    b - beta * log_d_eff,
                ],
                axis=2,
            )
            top = terms.max(axis=2, keepdims=True)
            return (top + np.log(np.exp(terms - top).sum(axis=2, keepdims=True)))[:, :, 0]

    def log_pred(self, theta, log_x):
        value = self._log_values(theta, log_x)
        grad = np.empty((*value.shape, theta.shape[1]))
        h = 1e-6
        for j in range(theta.shape[1]):
            up, down = theta.copy(), theta.copy()
            up[:, j] += h
            down[:, j] -= h
            grad[:, :, j] = (self._log_values(up, log_x) - self._log_values(down, log_x)) / (2 * h)
        return value, grad

    # the law nests ``data_constrained`` (R_N* → ∞): its joint fit starts from that law's
    # best solutions, each with R_N* on this grid (``fit_law``), not from a 7-D grid
    nested = "data_constrained"
    R_N_STARTS = (1.0, 3.0, 10.0, 30.0, 1e3)

    def starts(self):
        axes = [
            [-1.0, 0.0, 1.0],
            COEF_GRID,
            [0.25, 0.5, 1.0],
            COEF_GRID,
            [0.25, 0.5, 1.0],
            np.log([5.0, 15.0, 60.0]),
            np.log([2.0, 5.0, 20.0]),
        ]
        return np.array(list(itertools.product(*axes)), dtype=float)

    def starts_from_nested(self, nested_thetas: np.ndarray) -> np.ndarray:
        """Starts from solutions of the nested law (θ = e, a, α, b, β, log R*)."""
        return np.array(
            [[*t, np.log(r)] for t in nested_thetas for r in self.R_N_STARTS], dtype=float
        )

    def params(self, theta):
        return {
            k: float(np.exp(v)) if k in self.logged else float(v)
            for k, v in zip(self.theta_names, theta)
        }

    def predict(self, params, **variables):
        n = np.asarray(variables["n_params"], dtype=float)
        d = np.asarray(variables["tokens"], dtype=float)
        u = np.asarray(variables.get("unique_tokens", d), dtype=float)
        theta = self.theta_of(params)[None, :]
        shape = np.broadcast(n, d, u).shape
        log_x = np.log(np.stack([np.broadcast_to(v, shape).ravel() for v in (n, d, u)], axis=1))
        return np.exp(self._log_values(theta, log_x)[0]).reshape(shape)

    def describe(self, params):
        p = params
        return (
            f"L = {p['E']:.4g} + {p['A']:.4g} / N'^{p['alpha']:.4f} + {p['B']:.4g} / "
            f"D'^{p['beta']:.4f}, R_D* = {p['R_D_star']:.3g}, R_N* = {p['R_N_star']:.3g}"
        )


@dataclass(frozen=True)
class Fixed(Law):
    """``base`` with some parameters held at given values, the others fitted: its
    parameters are the free ones (``params``); predictions use both."""

    base: Law
    fixed: tuple[tuple[str, float], ...]

    def __post_init__(self):
        unknown = [k for k, _ in self.fixed if k not in self.base.theta_names]
        if unknown:
            raise ValueError(
                f"law {self.base.name!r} has no parameter {unknown[0]!r} to hold fixed; its "
                f"parameters are {self.base.param_names}"
            )
        if len(self.fixed) >= len(self.base.theta_names):
            raise ValueError(f"holding every parameter of {self.base.name!r} leaves none to fit")

    @property
    def name(self):
        return self.base.name

    @property
    def variables(self):
        return self.base.variables

    @property
    def optional(self):
        return self.base.optional

    @property
    def min_sizes(self):
        return self.base.min_sizes

    @property
    def fit_space(self):
        return self.base.fit_space

    @property
    def formula(self):
        held = ", ".join(f"{k} = {v:.6g}" for k, v in self.fixed)
        return f"{self.base.formula} ({held} held fixed)"

    @property
    def values(self) -> dict[str, float]:
        return dict(self.fixed)

    @property
    def free(self) -> list[int]:
        return [i for i, k in enumerate(self.base.theta_names) if k not in self.values]

    @property
    def theta_names(self):
        return tuple(self.base.theta_names[i] for i in self.free)

    @property
    def logged(self):
        return self.base.logged

    @property
    def param_names(self):
        return self.theta_names

    def _full(self, theta: np.ndarray) -> np.ndarray:
        template = self.base.theta_of({**{k: 1.0 for k in self.base.theta_names}, **self.values})
        full = np.repeat(template[None, :], theta.shape[0], axis=0)
        full[:, self.free] = theta
        return full

    def log_pred(self, theta, log_x):
        value, grad = self.base.log_pred(self._full(theta), log_x)
        return value, grad[:, :, self.free]

    def starts(self):
        return np.unique(self.base.starts()[:, self.free], axis=0)

    def params(self, theta):
        full = self.base.params(self._full(np.atleast_2d(theta))[0])
        return {k: full[k] for k in self.theta_names}

    def predict(self, params, **variables):
        return self.base.predict({**self.values, **params}, **variables)

    def describe(self, params):
        return (
            self.base.describe({**self.values, **params})
            + " ("
            + ", ".join(f"{k} held" for k, _ in self.fixed)
            + ")"
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
LAWS["chinchilla_tied"] = TiedPowerLaw()
LAWS["gadre"] = Gadre()
LAWS["data_constrained"] = DataConstrained()
LAWS["data_constrained_full"] = DataConstrainedFull()


def objective(
    law: Law,
    log_x: np.ndarray,
    log_loss: np.ndarray,
    weights: np.ndarray,
    delta: float = HUBER_DELTA,
):
    """fun_grad(θ, rows) for ``lbfgs_batched``: Σ_i w_i · Huber_δ(log L̂_i − log L_i) (or
    Σ_i w_i (L̂_i − L_i)² for a law fitted by least squares), one weight row per problem
    (ones for a plain fit, resample counts for a bootstrap)."""

    loss = np.exp(log_loss)

    def fun_grad(theta: np.ndarray, rows: np.ndarray):
        pred, dpred = law.log_pred(theta, log_x)
        w = weights[rows]
        if law.fit_space == "squares":  # Σ w (L̂ − L)², L̂ = exp(log L̂)
            with np.errstate(over="ignore", invalid="ignore"):
                lhat = np.exp(pred)
                r = lhat - loss[None, :]
                return (w * r * r).sum(axis=1), np.einsum("mn,mnp->mp", 2 * w * r * lhat, dpred)
        h, dh = huber(pred - log_loss[None, :], delta)
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

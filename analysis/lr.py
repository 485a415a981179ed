"""The best learning rate per model size, and how it moves with size (``lab-analyze lr``).

Runs that differ only in ``optim.lr`` (and the seed) form one learning-rate sweep: same N,
same D, same everything else (the runs table's ``hparams_but_lr``). For each sweep:

- the loss at each rate is the mean over its seeds;
- the best rate comes from a parabola in log(lr) through the lowest point and its two
  neighbours on the grid (the usual way to read an lr sweep, e.g. Wortsman et al. 2023;
  Porian et al. 2024), not the grid's argmin; an optimum at the edge of the grid, or a
  parabola that opens downwards, falls back to the grid's best and is flagged (the true
  optimum may lie outside the grid);
- then lr*(N) = c·N^(−γ) is fitted by least squares in log-log over the sweeps' optima
  (lr*(N, D) = c·N^(−γ)·D^(−δ) when D varies across them), with bootstrap intervals from
  resampling the sweeps.

``lr.json`` holds the law, the sweeps, their optima and flags, and the parametrization
the runs used (a law fitted under sp does not transfer to mup; ``optim.lr_law`` checks).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.load import read_runs_table
from lab.config.record import (
    DEFAULT_LOSS,
    DEFAULT_N_CONVENTION,
    N_CONVENTIONS,
)
from lab.runs.files import write_text_atomic

MIN_RATES = 3  # a parabola needs three points


def best_rate(lrs, losses) -> dict:
    """The best rate of one sweep: {lr, loss, method: parabola | grid, edge, ...}. ``lrs``
    need not be sorted; repeated rates should already be averaged."""
    order = np.argsort(lrs)
    rates = np.asarray(lrs, dtype=float)[order]
    x = np.log(rates)
    y = np.asarray(losses, dtype=float)[order]
    i = int(np.argmin(y))
    out = {"grid_lr": float(rates[i]), "grid_loss": float(y[i]), "edge": i in (0, len(x) - 1)}
    if out["edge"]:
        return {**out, "lr": out["grid_lr"], "loss": out["grid_loss"], "method": "grid (edge)"}
    a, b, c = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    if not a > 0:  # flat or concave: no interior minimum to read
        return {**out, "lr": out["grid_lr"], "loss": out["grid_loss"], "method": "grid"}
    x_star = float(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))
    loss = float(a * x_star**2 + b * x_star + c)
    return {**out, "lr": float(np.exp(x_star)), "loss": loss, "method": "parabola"}


def sweeps(df: pd.DataFrame) -> list[dict]:
    """The learning-rate sweeps among the finished runs of ``df`` (a runs table)."""
    out = []
    keys = ["n_params", "tokens", "hparams_but_lr"]
    for (n, d, _), g in df.groupby(keys, sort=True):
        per_lr = g.groupby("lr")["loss"].agg(["mean", "count"]).reset_index()
        row = {
            "n_params": float(n),
            "tokens": float(d),
            "model": str(g["model"].iloc[0]),
            "lrs": per_lr["lr"].tolist(),
            "losses": per_lr["mean"].tolist(),
            "seeds": per_lr["count"].tolist(),
            "runs": g["run"].tolist(),
        }
        if len(per_lr) >= MIN_RATES:
            row.update(best_rate(per_lr["lr"], per_lr["mean"]))
        out.append(row)
    return out


def _fit_log_linear(groups: list[dict], with_d: bool) -> np.ndarray:
    """Least squares of log lr* on [1, log N(, log D)]: (log c, −γ(, −δ))."""
    X = [np.ones(len(groups)), np.log([g["n_params"] for g in groups])]
    if with_d:
        X.append(np.log([g["tokens"] for g in groups]))
    coef, *_ = np.linalg.lstsq(np.stack(X, 1), np.log([g["lr"] for g in groups]), rcond=None)
    return coef


def fit_lr_law(groups: list[dict], resamples: int = 1000, seed: int = 0, level: float = 0.95):
    """lr*(N) = c·N^(−γ) (and ·D^(−δ) when D varies) over the sweeps' optima, with
    bootstrap intervals. Raises ValueError with fewer than 2 sizes."""
    sizes = {g["n_params"] for g in groups}
    if len(sizes) < 2:
        raise ValueError(
            f"lr*(N) needs sweeps at 2 or more model sizes; these runs have {len(sizes)}"
        )
    with_d = len({g["tokens"] for g in groups}) > 1 and len(groups) >= 4
    coef = _fit_log_linear(groups, with_d)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        pick = [groups[i] for i in rng.integers(0, len(groups), len(groups))]
        if len({g["n_params"] for g in pick}) < 2 or (
            with_d and len({g["tokens"] for g in pick}) < 2
        ):
            continue  # a resample that cannot identify the slope
        draws.append(_fit_log_linear(pick, with_d))
    draws = np.array(draws) if draws else np.empty((0, coef.size))
    tail = (1 - level) / 2 * 100

    def summary(values, point):
        if values.size < 10:
            return {"value": float(point), "low": float("nan"), "high": float("nan")}
        lo, hi = np.percentile(values, [tail, 100 - tail])
        return {"value": float(point), "low": float(lo), "high": float(hi)}

    params = {
        "c": summary(np.exp(draws[:, 0]), np.exp(coef[0])),
        "gamma": summary(-draws[:, 1], -coef[1]),
    }
    if with_d:
        params["delta"] = summary(-draws[:, 2], -coef[2])
    formula = "lr*(N, D) = c·N^-gamma·D^-delta" if with_d else "lr*(N) = c·N^-gamma"
    return {"formula": formula, "params": params, "resamples": int(len(draws)), "level": level}


def analyze_lr(
    path: str | Path,
    n_convention: str = DEFAULT_N_CONVENTION,
    loss: str = DEFAULT_LOSS,
    resamples: int = 1000,
    seed: int = 0,
    parametrization: str | None = None,
    records: pd.DataFrame | None = None,
) -> dict:
    """The lr sweeps under ``path`` (a sweep folder or its table), their optima and the fitted law, for
    the runs of one parametrization (``parametrization``; None: the runs must all share
    one). ``records``: the folder's runs table when the caller has read it already. Raises
    ValueError when nothing can be fitted: no records, no sweep with 3+ rates, or runs of
    more than one parametrization and none chosen."""
    path = Path(path)
    raw = read_runs_table(path) if records is None else records
    raw = raw[(raw["status"] == "ok") & raw[loss].notna()]
    if parametrization is not None:
        raw = raw[raw["parametrization"] == parametrization]
    params = sorted(set(raw["parametrization"].dropna()))
    if len(params) > 1:
        raise ValueError(
            f"the runs under {path} mix parametrizations {params}: an lr law holds for one; "
            "analyse each on its own folder"
        )
    df = pd.DataFrame(
        {
            "run": raw["run"],
            "model": raw["model"],
            "lr": raw["lr"].astype(float),
            "n_params": raw[N_CONVENTIONS[n_convention]].astype(float),
            "tokens": raw["tokens"].astype(float),
            "loss": raw[loss].astype(float),
            "hparams_but_lr": raw["hparams_but_lr"],
        }
    )
    df["parametrization"] = params[0] if params else "sp"
    return analyze_lr_frame(df, path, loss, n_convention, resamples, seed)


LR_ALIASES = ("lr", "learning_rate", "optim.lr", "peak_lr", "max_lr", "eta")


def lr_frame(table: pd.DataFrame, path) -> pd.DataFrame:
    """An lr sweep's runs from a table of runs (``load_runs``'s frame of a CSV / JSONL /
    Parquet file: n_params, tokens, loss, and a learning-rate column under one of
    ``LR_ALIASES``); the runs at one (N, D) form one sweep. Raises ValueError without a
    learning-rate column."""
    column = next((c for c in table.columns if str(c).strip().lower() in LR_ALIASES), None)
    if column is None:
        raise ValueError(
            f"{path} has no learning-rate column (one of {', '.join(LR_ALIASES)}; it has "
            f"{', '.join(map(str, table.columns))})"
        )
    model = (
        table["model"].astype(str)
        if "model" in table
        else table["n_params"].map(lambda n: f"N={n:.3g}")
    )
    df = pd.DataFrame(
        {
            "run": table["run"].astype(str),
            "model": model,
            "lr": pd.to_numeric(table[column], errors="coerce"),
            "n_params": table["n_params"].astype(float),
            "tokens": table["tokens"].astype(float),
            "loss": table["loss"].astype(float),
            "hparams_but_lr": "",
        }
    )
    bad = ~(np.isfinite(df["lr"]) & (df["lr"] > 0))
    if bad.all():
        raise ValueError(f"{path}: column {column!r} holds no positive learning rate")
    params = table["parametrization"].dropna().unique() if "parametrization" in table else []
    if len(params) > 1:
        raise ValueError(
            f"the runs in {path} mix parametrizations {sorted(params)}: an lr law holds for "
            "one; filter them with --where"
        )
    df["parametrization"] = params[0] if len(params) else "sp"
    return df[~bad].reset_index(drop=True)


def analyze_lr_frame(
    df: pd.DataFrame, path, loss: str, n_convention: str, resamples: int, seed: int
) -> dict:
    """``analyze_lr`` on runs already read: run, model, lr, n_params, tokens, loss,
    hparams_but_lr, parametrization."""
    groups = sweeps(df)
    fitted = [g for g in groups if "lr" in g]
    if not fitted:
        most = max((len(g["lrs"]) for g in groups), default=0)
        raise ValueError(
            f"no learning-rate sweep to read under {path}: each (N, D, setting) needs "
            f"{MIN_RATES}+ rates, and these runs have at most {most} per size"
        )
    # an optimum at the grid's edge is only a bound on the true one: the law is fitted on
    # the interior optima when at least two sizes have one
    interior = [g for g in fitted if not g["edge"]]
    used = interior if len({g["n_params"] for g in interior}) >= 2 else fitted
    result = {
        "source": str(path),
        "loss": loss,
        "n_convention": n_convention,
        "parametrization": str(df["parametrization"].iloc[0]) if len(df) else "sp",
        "sweeps": groups,
        "edge_optima": [g["model"] for g in fitted if g["edge"]],
        "law_fitted_on": [g["model"] for g in used],
    }
    try:
        result["law"] = fit_lr_law(used, resamples, seed)
    except ValueError as e:
        result["law"] = None
        result["law_error"] = str(e)
    result["moves"] = movement(used, result["law"])
    return result


def movement(fitted: list[dict], law: dict | None) -> dict | None:
    """How far the best rate moves across the sizes: the ratio of the largest to the
    smallest optimum, and the law's ratio over the same range of N, (N_max/N_min)^γ, with
    the interval γ's gives (a transfer check: μP aims for a ratio near 1)."""
    if len({g["n_params"] for g in fitted}) < 2:
        return None
    optima = [g["lr"] for g in fitted]
    out = {"optima_ratio": float(max(optima) / min(optima))}
    if law and "delta" not in law["params"]:
        span = max(g["n_params"] for g in fitted) / min(g["n_params"] for g in fitted)
        gamma = law["params"]["gamma"]

        def ratio(g):
            return float(span ** abs(g)) if np.isfinite(g) else float("nan")

        ends = sorted([ratio(gamma["low"]), ratio(gamma["high"])])
        straddles = np.isfinite(gamma["low"]) and gamma["low"] <= 0 <= gamma["high"]
        out["law_ratio"] = {
            "value": ratio(gamma["value"]),
            "low": 1.0 if straddles else ends[0],
            "high": ends[1],
            "n_span": float(span),
        }
    return out


def figure(result: dict, path: Path) -> Path:
    """Loss against lr, one curve per sweep with its optimum marked; beside it lr*(N) with
    the fitted law and its band."""
    from analysis.plot import plt, save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = result["sweeps"]
    for i, g in enumerate(groups):
        color = plt.cm.viridis(i / max(1, len(groups) - 1))
        label = f"{g['model']} (N={g['n_params']:.3g}, D={g['tokens']:.3g})"
        left.plot(g["lrs"], g["losses"], "o-", color=color, label=label)
        if "lr" in g:
            marker = "x" if g["edge"] else "*"
            left.plot([g["lr"]], [g["loss"]], marker, color=color, ms=12, mec="k")
            right.plot([g["n_params"]], [g["lr"]], "o" if not g["edge"] else "x", color=color)
    left.set_xscale("log")
    left.set_xlabel("learning rate")
    left.set_ylabel(result["loss"])
    left.set_title("loss against lr (★ optimum from a parabola; × at the grid's edge)", fontsize=8)
    left.legend(fontsize=6)
    left.grid(alpha=0.3, which="both")
    law = result.get("law")
    fitted = [g for g in groups if "lr" in g]
    if law and "delta" not in law["params"]:
        ns = np.geomspace(
            min(g["n_params"] for g in fitted) / 2, max(g["n_params"] for g in fitted) * 2
        )
        p = law["params"]
        right.plot(ns, p["c"]["value"] * ns ** -p["gamma"]["value"], "k-", lw=1.2)
        if np.isfinite(p["gamma"]["low"]):
            # the band: the law at the interval's ends of gamma, pivoting at the data's centre
            centre = np.exp(np.mean(np.log([g["n_params"] for g in fitted])))
            at_centre = p["c"]["value"] * centre ** -p["gamma"]["value"]
            lo = at_centre * (ns / centre) ** -p["gamma"]["low"]
            hi = at_centre * (ns / centre) ** -p["gamma"]["high"]
            right.fill_between(ns, np.minimum(lo, hi), np.maximum(lo, hi), color="k", alpha=0.1)
        g_text = p["gamma"]
        interval = (
            f" [{g_text['low']:.2f}, {g_text['high']:.2f}]" if np.isfinite(g_text["low"]) else ""
        )
        right.set_title(
            f"lr* = {p['c']['value']:.3g}·N^-{g_text['value']:.3f}{interval}", fontsize=8
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel(f"N ({result['n_convention']})")
    right.set_ylabel("best learning rate")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path, formats=(".png",))[0]


def write(result: dict, out: Path, suffix: str = "") -> tuple[Path, Path]:
    """lr{suffix}.json and lr{suffix}.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"lr{suffix}.json"
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    return path, figure(result, out / f"lr{suffix}.png")

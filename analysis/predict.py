"""Predict before you train: a fitted law's loss at target runs, with prediction intervals
and how far each target extrapolates (``lab-analyze predict``).

A target is (N, D), or a compute budget C at the law's compute-optimal allocation
(approach 3; L(N, D) laws). Each prediction says how far it reaches beyond the fitted runs
(× the largest fitted N, D and C) and is flagged when that is farther than the ladder's own
rolling backtest reached (its predictions of larger sizes from the smaller ones), where
nothing has tested the law. The intervals are calibrated on that backtest
(``analysis.calibration``) when it was possible.

A fit is saved in ``fit.json`` (``saved``: the law, its parameters and fixed ones, the
bootstrap refits' parameters, the log residuals, the fitted ranges, the backtest's reach),
so ``--from fit.json`` predicts without refitting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.approaches import chinchilla_optimum
from analysis.calibration import Calibration, calibrated_interval, largest, log_ratio
from analysis.fitting import residuals, simulate_interval
from analysis.laws import LAWS, Fixed, Law
from analysis.study import Study

SAVED_VERSION = 3


def saved(study: Study) -> dict:
    """What ``predict`` needs from a study, JSON-ready (``fit.json``'s ``saved``)."""
    fit, df = study.fit, study.df
    fixed = dict(getattr(fit.law, "values", {}))
    rb = study.result.get("rolling_backtest")
    reach = rb["reach"] if rb else None
    ratio = log_ratio(df)  # each run's log D/N: where its residual sits (local_sigma)
    return {
        "version": SAVED_VERSION,
        "law": fit.law.name,
        "params": fit.params,
        "fixed": fixed,
        "samples": fit.samples,
        "residuals": residuals(df, fit).tolist(),
        "residual_log_ratio": None if ratio is None else ratio.tolist(),
        "flops_per_param_token": study.result["flops_per_param_token"],
        "largest": largest(df),
        "backtest_reach": reach,
        "backtest_variable": rb["variable"] if rb else None,
        "calibration": rb["calibration"] if rb else None,
        "calibration_summary": study.result.get("calibration"),
        "choice": study.result.get("choice"),
        "conventions": study.result.get("conventions"),
        "filters": study.result.get("filters"),
        "source": study.result.get("source"),
    }


def law_of(saved_fit: dict) -> Law:
    """The law a saved fit was fitted with (its fixed parameters held)."""
    if saved_fit.get("version") != SAVED_VERSION:
        raise ValueError(
            "this fit.json was written by an older lab-analyze: run lab-analyze fit again"
        )
    law = LAWS[saved_fit["law"]]
    if saved_fit.get("fixed"):
        law = Fixed(law, tuple(sorted(saved_fit["fixed"].items())))
    return law


def targets(
    at: list[float] | None = None,
    table: str | None = None,
    compute: list[float] | None = None,
    saved_fit: dict | None = None,
) -> pd.DataFrame:
    """The targets as a frame of n_params, tokens (and compute): pairs from ``at``, rows of a
    CSV ``table`` (columns n_params, tokens; unique_tokens optional), or budgets ``compute``
    at the compute-optimal allocation of a ``chinchilla`` or ``chinchilla_tied`` fit. Raises
    ValueError for odd pairs, missing columns or non-positive values."""
    given = sum(x is not None for x in (at, table, compute))
    if given != 1:
        raise ValueError("give exactly one of --at N D [N D ...], --targets FILE, --compute C")
    k = (saved_fit or {}).get("flops_per_param_token", 6.0)
    if at is not None:
        if len(at) % 2:
            raise ValueError(f"--at takes pairs N D; got {len(at)} numbers")
        pairs = np.asarray(at, dtype=float).reshape(-1, 2)
        df = pd.DataFrame({"n_params": pairs[:, 0], "tokens": pairs[:, 1]})
    elif table is not None:
        df = pd.read_csv(table)
        missing = {"n_params", "tokens"} - set(df.columns)
        if missing:
            raise ValueError(
                f"{table} lacks the columns {sorted(missing)} (needs n_params, tokens)"
            )
    else:
        law = saved_fit["law"] if saved_fit else None
        if law not in ("chinchilla", "chinchilla_tied"):
            raise ValueError(
                f"--compute needs the compute-optimal allocation of L(N, D) = E + A/N^alpha + "
                f"B/D^beta (--law chinchilla or chinchilla_tied); this fit is {law!r}: give "
                "--at N D instead"
            )
        params = {**saved_fit.get("fixed", {}), **saved_fit["params"]}
        params.setdefault("beta", params["alpha"])  # tied: one exponent for N and D
        opt = chinchilla_optimum(params, compute, k=k)
        df = pd.DataFrame({"n_params": opt["N_opt"], "tokens": opt["D_opt"]})
        df["compute"] = np.asarray(compute, dtype=float)
    values = df[["n_params", "tokens"]].to_numpy(dtype=float)
    if not (np.isfinite(values) & (values > 0)).all():
        raise ValueError("every target needs a positive, finite N and D")
    if "compute" not in df:
        df["compute"] = k * df["n_params"] * df["tokens"]
    return df.reset_index(drop=True)


def predict(saved_fit: dict, target: pd.DataFrame, level: float = 0.95, seed: int = 0) -> dict:
    """Each target's predicted loss, prediction interval and extrapolation, and the notes
    (``predict.json``)."""
    law = law_of(saved_fit)
    points = {v: target[v].to_numpy(dtype=float) for v in law.variables if v in target}
    missing = [v for v in law.variables if v not in points and v not in law.optional]
    if missing:
        raise ValueError(f"law {law.name!r} needs the targets' {missing}")
    top = saved_fit["largest"]
    pieces = (law, saved_fit["params"], saved_fit["samples"], saved_fit["residuals"], points)
    if saved_fit.get("calibration"):
        cal = Calibration.from_json(saved_fit["calibration"])
        pi = calibrated_interval(
            *pieces, top, cal, level, resid_ratio=saved_fit.get("residual_log_ratio")
        )
    else:
        pi = simulate_interval(*pieces, level, seed)
    reach, var = saved_fit.get("backtest_reach"), saved_fit.get("backtest_variable")
    rows, notes = [], []
    for i in range(len(target)):
        beyond = {
            f"x_largest_{v}": float(target[v].iloc[i] / top[v])
            for v in ("n_params", "tokens", "compute")
        }
        row = {
            "n_params": float(target["n_params"].iloc[i]),
            "tokens": float(target["tokens"].iloc[i]),
            "compute": float(target["compute"].iloc[i]),
            "predicted": float(pi["predicted"][i]),
            "low": float(pi["low"][i]),
            "high": float(pi["high"][i]),
            **beyond,
            **({"distance": float(pi["distance"][i])} if "distance" in pi else {}),
        }
        far = reach is not None and var and beyond[f"x_largest_{var}"] > reach
        row["beyond_backtests"] = bool(far)
        if far:
            notes.append(
                f"target N = {row['n_params']:.3g}, D = {row['tokens']:.3g} reaches "
                f"{beyond[f'x_largest_{var}']:.3g}x the largest fitted {var}, farther than the "
                f"ladder's own backtests reached ({reach:.3g}x): nothing has tested the law "
                "that far; the calibrated interval carries the backtests' growth of the error "
                "with distance past where it was measured"
            )
        elif reach is None:
            row["beyond_backtests"] = None
        rows.append(row)
    if reach is None:
        notes.append("no rolling backtest in this fit: how far the law holds is untested")
    if not saved_fit.get("calibration"):
        notes.append(
            "the intervals are the bootstrap's, not calibrated on backtests: they leave out "
            "the error of extrapolating the law"
        )
    return {
        "law": law.name,
        "level": level,
        "predictions": rows,
        "backtest_reach": reach,
        "interval": "calibrated" if saved_fit.get("calibration") else "bootstrap",
        "calibration": saved_fit.get("calibration_summary"),
        "choice": saved_fit.get("choice"),
        "notes": notes,
        "source": saved_fit.get("source"),
        "conventions": saved_fit.get("conventions"),
        "filters": saved_fit.get("filters"),
    }


def with_metric(result: dict, metric_fit, seed: int = 0) -> dict:
    """Each prediction's metric (``--metric COLUMN``): the metric's law in the loss chained
    with the predicted loss and its interval (``analysis.downstream``)."""
    p = result["predictions"]
    pred, low, high = metric_fit.chain(
        [r["predicted"] for r in p],
        [r["low"] for r in p],
        [r["high"] for r in p],
        result["level"],
        seed,
    )
    for r, y, lo, hi in zip(p, pred, low, high):
        r["metric"] = {"column": metric_fit.column, "predicted": y, "low": lo, "high": hi}
    result["metric"] = metric_fit.summary()
    result["notes"] += metric_fit.notes
    return result


def table(result: dict) -> str:
    """The predictions, one line each, for a terminal."""
    level = int(result["level"] * 100)
    metric = result.get("metric")
    head = f"{'N':>9} {'D':>9} {'C':>9} {'loss':>7} {f'{level}% interval':>17}  ×N     ×D     ×C"
    if metric:
        head += f"     {metric['column']:>8} {f'{level}% interval':>17}"
    lines = [head]
    for r in result["predictions"]:
        line = (
            f"{r['n_params']:9.3g} {r['tokens']:9.3g} {r['compute']:9.3g} {r['predicted']:7.4f} "
            f"[{r['low']:7.4f}, {r['high']:7.4f}]  {r['x_largest_n_params']:<6.3g} "
            f"{r['x_largest_tokens']:<6.3g} {r['x_largest_compute']:<6.3g}"
        )
        if metric:
            m = r["metric"]
            line += f" {m['predicted']:8.4f} [{m['low']:7.4f}, {m['high']:7.4f}]"
        lines.append(line + ("  beyond the backtests" if r["beyond_backtests"] else ""))
    if metric:
        bt = metric["backtest"]
        par = ", ".join(f"{k} = {v:.4g}" for k, v in metric["params"].items())
        check = (
            f"; its backtest: {bt['coverage']:.0%} of {bt['checked']} inside, median width "
            f"{bt['median_width']:.3g}"
            if bt.get("coverage") is not None
            else ""
        )
        lines.append(
            f"{metric['column']} from the loss: {metric['form']}, {par} on {metric['runs']} "
            f"runs (scatter {metric['sigma']:.3g}){check}"
        )
    if (result.get("choice") or {}).get("text"):
        lines.append(result["choice"]["text"])
    cal = result.get("calibration") or {}
    if cal.get("text"):
        lines.append(cal["text"])
    return "\n".join(lines + [f"warning: {n}" for n in result["notes"]])


def figure(result: dict, runs: pd.DataFrame | None = None):
    """Loss against compute: the fitted runs (when given) and each target's predicted loss
    with its interval; targets beyond the backtests' reach drawn hollow."""
    from analysis.plot import plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if runs is not None:
        ax.scatter(runs["compute"], runs["loss"], s=12, c="0.5", label="fitted runs")
    p = result["predictions"]
    c = np.array([r["compute"] for r in p])
    y = np.array([r["predicted"] for r in p])
    err = np.array([[r["predicted"] - r["low"], r["high"] - r["predicted"]] for r in p]).T
    far = np.array([bool(r["beyond_backtests"]) for r in p])
    for mask, face, label in ((~far, "C3", "targets"), (far, "none", "beyond the backtests")):
        if mask.any():
            ax.errorbar(
                c[mask],
                y[mask],
                yerr=err[:, mask],
                fmt="o",
                color="C3",
                mfc=face,
                capsize=3,
                label=label,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title(
        f"{result['law']}: predicted loss with {int(result['level'] * 100)}% prediction intervals",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_figure(result: dict, runs: pd.DataFrame | None = None):
    """The metric against the loss (``--metric``): the runs, the fitted law and each
    target's chained prediction with both intervals (loss across, metric up)."""
    from analysis.downstream import value
    from analysis.plot import plt

    metric = result["metric"]
    col = metric["column"]
    fig, ax = plt.subplots(figsize=(6, 4))
    p = result["predictions"]
    xs = [r["low"] for r in p] + [r["high"] for r in p]
    if runs is not None and col in runs:
        ax.scatter(runs["loss"], runs[col], s=12, c="0.5", label="runs")
        xs += runs["loss"].tolist()
    grid = np.linspace(min(xs), max(xs), 200)
    ax.plot(grid, value(metric["params"], grid), c="C0", lw=1, label=metric["form"])
    x = np.array([r["predicted"] for r in p])
    y = np.array([r["metric"]["predicted"] for r in p])
    ax.errorbar(
        x,
        y,
        xerr=np.array([[r["predicted"] - r["low"], r["high"] - r["predicted"]] for r in p]).T,
        yerr=np.array(
            [
                [m["predicted"] - m["low"], m["high"] - m["predicted"]]
                for m in (r["metric"] for r in p)
            ]
        ).T,
        fmt="o",
        color="C3",
        capsize=3,
        label="targets",
    )
    ax.set_xlabel("loss")
    ax.set_ylabel(col)
    ax.set_title(
        f"{col} from the loss, {int(result['level'] * 100)}% intervals of both steps", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

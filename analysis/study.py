"""One call for a whole scaling analysis of a set of runs: the law's fit with bootstrap
intervals, the compute-optimal allocation by each applicable approach, a backtest and the
design warnings, as one JSON-ready result (what ``lab-analyze`` writes as fit.json)."""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from analysis import approaches
from analysis.bootstrap import bootstrap_fit, interval, summarize
from analysis.calibration import Calibration, calibrated_interval, largest, log_ratio
from analysis.fitting import Fit, choose_law, fit_law, prediction_interval, residuals
from analysis.isoflop import every_method
from analysis.laws import Fixed
from analysis.validity import backtest, design_warnings, rolling_backtest


@dataclass
class Study:
    df: pd.DataFrame
    fit: Fit
    samples: list[dict]
    result: dict
    notes: list[str] = field(default_factory=list)
    isoflop_points: pd.DataFrame | None = None  # approach 2's points when not the runs


def flops_per_param_token(df: pd.DataFrame) -> float:
    """k of C = k·N·D for these runs under their conventions: 6 for C = 6ND; more when C
    counts attention (whose FLOPs per token grow with the context, not with N), where the
    runs' median ratio stands in and N*, D* solve the budget constraint approximately."""
    return float(np.median(df["compute"] / (df["n_params"] * df["tokens"])))


def default_budgets(df: pd.DataFrame) -> list[float]:
    """The largest compute in the runs, and 10× and 100× beyond it."""
    top = float(df["compute"].max())
    return [top, 10 * top, 100 * top]


def analyze(
    df: pd.DataFrame,
    law: str = "auto",
    resamples: int = 1000,
    seed: int = 0,
    budgets: list[float] | None = None,
    level: float = 0.95,
    warn: bool = True,
    isoflop_method: str = "auto",
    isoflop_points: pd.DataFrame | None = None,
    seed_sd_log: float | None = None,
    seed_noise: float | None = None,
    fixed: dict[str, float] | None = None,
) -> Study:
    """Fit, bootstrap, compute-optimal allocation, backtest and warnings for ``df``'s runs.
    Approach 2 uses ``isoflop_points`` when given (``analysis.curves.curve_points``: the
    runs' loss curves read at many budgets), else the runs' final losses, by
    ``isoflop_method`` (``analysis.isoflop``; ``seed_noise``: the sd of a run's loss across
    seeds, for ``porian``; from ``seed_sd_log`` when that is given); its a and b under
    every method are in ``result["approach_2_methods"]``.
    The warnings are in ``result["warnings"]``, and also issued as Python warnings when
    ``warn``.

    Raises ValueError for an unknown law or too few runs for it."""
    law_name = choose_law(df) if law == "auto" else law
    k = flops_per_param_token(df)
    fit = fit_law(df, law_name, fixed=fixed)
    samples = bootstrap_fit(df, fit, resamples, seed) if resamples > 0 else []
    fit.samples, fit.data = samples, df  # the Fit predicts with intervals
    dropped_resamples = resamples - len(samples) if resamples > 0 else 0
    notes = design_warnings(df, fit.law)
    selection = df.attrs.get("selection")
    if selection:
        notes.insert(0, selection["text"])
    repeats = "epochs" in df and bool((df["epochs"] > 1).any())
    constrained = fit.law.name.startswith("data_constrained")
    if repeats:
        repeated = df[df["epochs"] > 1]
        notes.append(
            f"{len(repeated)} run(s) repeat their data (up to {repeated['epochs'].max():.3g} "
            "epochs): repeated tokens are worth less than fresh ones (Muennighoff et al. "
            "2023)"
            + (
                ""
                if constrained
                else "; --law data_constrained (or data_constrained_full) fits that"
            )
        )
    elif constrained and not repeats:
        notes.append(f"{fit.law.name}: no run repeats its data, so R* is not identified")
    result = {
        "law": fit.law.name,
        "formula": fit.law.formula,
        "fit_text": fit.describe(),
        "params": summarize(fit.params, samples, level),
        "objective": fit.objective,
        "huber_delta": fit.extra["delta"],
        "fit_space": fit.law.fit_space,
        "starts": fit.extra["starts"],
        "converged": fit.converged,
        "n_points": fit.n_points,
        "bootstrap": {
            "resamples": len(samples),
            "dropped": dropped_resamples,
            "interval": level,
            "seed": seed,
        },
        "conventions": df.attrs.get("conventions"),
        "selection": selection,
        "filters": df.attrs.get("filters"),
        "fixed": dict(fixed) if fixed else None,
        "flops_per_param_token": k,
        "source": df.attrs.get("source"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    fold_fits = []  # the rolling backtest's fold fits; its last is the backtest's
    try:
        result["rolling_backtest"] = rolling_backtest(
            df, fit.law, resamples=min(resamples, 100), level=level, fits=fold_fits
        )
    except ValueError as e:
        result["rolling_backtest"] = None
        notes.append(f"rolling backtest not possible: {e}")
    result["calibration"] = calibration_summary(result["rolling_backtest"], level)
    if result["calibration"].get("outside"):
        notes.append(result["calibration"]["text"])
    if fit.law.name == "chinchilla":
        budgets = budgets or default_budgets(df)
        result["params"].update(_exponents(fit, samples, level))
        result["compute_optimal"] = _at_budgets(fit, samples, budgets, level, k)
        opt = approaches.chinchilla_optimum(fit.params, budgets, k=k)
        pi = interval_at(fit, df, result, {"n_params": opt["N_opt"], "tokens": opt["D_opt"]})
        for row, lo, hi in zip(result["compute_optimal"], pi["low"], pi["high"]):
            row["loss_prediction_interval"] = [float(lo), float(hi)]  # a run's loss, not the law's
    result["approach_1"] = _approach(approaches.envelope, df, resamples, seed, level, notes)
    points = df if isoflop_points is None else isoflop_points
    if seed_noise is None and seed_sd_log is not None:
        seed_noise = seed_sd_log * float(points["loss"].median())
    isoflop = functools.partial(
        approaches.isoflop, method=isoflop_method, k=k, seed_noise=seed_noise, seed=seed
    )
    result["approach_2"] = _approach(isoflop, points, resamples, seed, level, notes, result)
    if result["approach_2"] is not None or "approach_2_not_possible" in result:
        result["approach_2_methods"] = every_method(points, k, seed_noise, result["approach_2"])
    if result["approach_2"] is not None:
        result["approach_2"]["source"] = (
            "final losses of the runs"
            if isoflop_points is None
            else f"the runs' loss curves read at {points['budget'].nunique()} budgets"
        )
    try:
        result["backtest"] = backtest(df, fit.law, fit=fold_fits[-1] if fold_fits else None)
    except ValueError as e:
        result["backtest"] = None
        notes.append(f"backtest not possible: {e}")
    result["noise"] = noise_comparison(df, fit, seed_sd_log)
    if result["noise"]:
        notes.append(result["noise"]["text"])
    result["health"] = fit_health(df, fit, result["params"], dropped_resamples, resamples)
    result["health"] += identification(df, fit)
    result["outliers"] = outliers(df, fit)
    if result["outliers"]:
        result["health"].append(result["outliers"]["text"])
    notes.extend(result["health"])
    result["warnings"] = notes
    if warn:
        for note in notes:
            warnings.warn(note, stacklevel=2)
    return Study(
        df=df, fit=fit, samples=samples, result=result, notes=notes, isoflop_points=isoflop_points
    )


def interval_at(fit: Fit, df: pd.DataFrame, result: dict, points: dict) -> dict:
    """The prediction interval at ``points``: calibrated on the rolling backtest when it
    could be (``analysis.calibration``), else the bootstrap's."""
    level = result["bootstrap"]["interval"]
    rb = result.get("rolling_backtest")
    if rb:
        cal = Calibration.from_json(rb["calibration"])
        resid, ratio = residuals(df, fit), log_ratio(df)
        return calibrated_interval(
            fit.law, fit.params, fit.samples, resid, points, largest(df), cal, level, ratio
        )
    return prediction_interval(fit, fit.samples, df, points, level)


def calibration_summary(rb: dict | None, level: float) -> dict:
    """How the intervals were calibrated and how they held out of sample, with one line of
    text (``fit.json``'s ``calibration``; the line ``lab-analyze fit`` prints)."""
    if not rb:
        return {
            "calibrated": False,
            "text": "calibration: not possible without a rolling backtest; the intervals are "
            "the bootstrap's and leave out the error of extrapolating the law",
        }
    cal = rb["calibration"]
    out = {
        "calibrated": True,
        "level": level,
        "folds": rb["folds"],
        "backtest_predictions": cal["predictions"],
        "kappa": cal["kappa"],
        "q": cal["q"],
        "checked": rb["checked"],
        "coverage": rb["coverage"],
        "median_width": rb["median_width"],
        "bootstrap_coverage": rb["bootstrap_coverage"],
        "bootstrap_median_width": rb["bootstrap_median_width"],
    }
    text = (
        f"calibration: {level:.0%} intervals scaled on {cal['predictions']} backtest "
        f"predictions from {rb['folds']} fold(s) (extrapolation error {cal['kappa']:.3g} per "
        f"unit of log distance, q = {cal['q']:.3g})"
    )
    if not cal["enough"]:
        m = cal["predictions"]
        text += (
            f"; too few for a {level:.0%} conformal quantile, so q is the largest score, "
            f"which covers about {m / (m + 1):.0%}"
        )
    if rb["coverage"] is None:
        text += "; not checked out of sample: it takes two folds or more"
    else:
        n = rb["checked"]
        text += (
            f"; out of sample (each fold's next size, calibrated on the others): "
            f"{rb['coverage']:.0%} of {n} inside, median width {rb['median_width']:.1%} "
            f"(bootstrap alone: {rb['bootstrap_coverage']:.0%}, "
            f"{rb['bootstrap_median_width']:.1%})"
        )
        lo, hi = _binomial_range(n, level)
        if not lo <= rb["coverage"] <= hi:
            text += f"; outside the {lo:.0%}–{hi:.0%} that {n} predictions would show"
            out["outside"] = True
        if n < 20:
            text += f"; {n} predictions, and those of one fold move together, measure it loosely"
    out["text"] = text
    return out


def _binomial_range(n: int, level: float) -> tuple[float, float]:
    """The central 95% range of the share inside among n predictions at ``level``."""
    sd = float(np.sqrt(level * (1 - level) / max(n, 1)))
    return max(0.0, level - 2 * sd), min(1.0, level + 2 * sd)


def _exponents(fit: Fit, samples: list[dict], level: float) -> dict:
    """a = β/(α+β) and b = α/(α+β) with intervals (approach 3)."""

    def ab(p):
        return {
            "a": p["beta"] / (p["alpha"] + p["beta"]),
            "b": p["alpha"] / (p["alpha"] + p["beta"]),
        }

    return summarize(ab(fit.params), [ab(s) for s in samples], level)


def _at_budgets(
    fit: Fit, samples: list[dict], budgets: list[float], level: float, k: float
) -> list[dict]:
    """N*(C), D*(C), tokens per parameter and predicted loss at each budget, with intervals."""
    point = approaches.chinchilla_optimum(fit.params, budgets, k=k)
    boot = [approaches.chinchilla_optimum(s, budgets, k=k) for s in samples]
    rows = []
    for i, c in enumerate(budgets):
        row = {"compute": float(c)}
        for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
            lo, hi = interval([b[key][i] for b in boot], level) if boot else (np.nan, np.nan)
            row[key] = {"value": float(point[key][i]), "low": lo, "high": hi}
        rows.append(row)
    return rows


APPROACH_RESAMPLES = 200  # approaches 1 and 2 refit per resample: a 95% interval's worth


def _approach(fn, df, resamples, seed, level, notes, result=None) -> dict | None:
    """The approach's result with bootstrap intervals on a and b, or None when it is not
    possible (the reason in ``notes``; what it found on the way, such as approach 2's
    dropped budgets, in ``result["approach_2_not_possible"]``)."""
    name = "approach 1" if fn is approaches.envelope else "approach 2"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = fn(df)
    except ValueError as e:
        notes.extend(str(w.message) for w in caught)
        notes.append(f"{name} not possible: {e}")
        details = getattr(e, "details", None)
        if details and result is not None:
            result[f"{name.replace(' ', '_')}_not_possible"] = {"reason": str(e), **details}
        return None
    notes.extend(str(w.message) for w in caught)
    n_boot = min(resamples, APPROACH_RESAMPLES)
    boot, dropped = approaches.bootstrap_approach(fn, df, n_boot, seed) if n_boot else ([], 0)
    r["exponents"] = summarize({"a": r["a"], "b": r["b"]}, boot, level)
    r["bootstrap"] = {"resamples": len(boot), "dropped": dropped}
    if n_boot and dropped > n_boot // 10:
        notes.append(
            f"{name}: {dropped} of {n_boot} bootstrap resamples could not be fitted and were "
            f"dropped; its interval rests on the other {len(boot)}"
        )
    return r


def noise_comparison(df: pd.DataFrame, fit: Fit, seed_sd_log: float | None) -> dict | None:
    """The fit's residual scatter (RMS of log residuals, corrected for the parameters fitted)
    beside the run-to-run noise: ``seed_sd_log`` (from ``lab-analyze noise``), else the
    spread of runs repeated at the same (N, D) among these. None when neither is known."""

    source = "seeds sweep"
    if seed_sd_log is None:
        groups = df.groupby(["n_params", "tokens"])["loss"]
        sizes = groups.size()
        if (sizes > 1).any():
            dof = (sizes[sizes > 1] - 1).to_numpy()
            var = groups.apply(lambda v: np.log(v).var(ddof=1))[sizes > 1].to_numpy()
            seed_sd_log, source = float(np.sqrt((dof * var).sum() / dof.sum())), "repeated runs"
    if not seed_sd_log:
        return None
    r = residuals(df, fit)
    rms = float(np.sqrt(np.sum(r**2) / max(1, r.size - fit.law.n_params)))
    ratio = rms / seed_sd_log
    verdict = (
        "the law explains the runs to within their noise"
        if ratio < 1.5
        else "more scatter than noise: the law misses something (or the runs were not all "
        "trained alike)"
    )
    return {
        "residual_rms_log": rms,
        "seed_sd_log": seed_sd_log,
        "ratio": ratio,
        "noise_from": source,
        "text": f"residuals are {ratio:.2g}× seed noise ({rms:.3g} vs {seed_sd_log:.3g} in log "
        f"loss, noise from {source}): {verdict}",
    }


def fit_health(df: pd.DataFrame, fit: Fit, params: dict, dropped: int, resamples: int) -> list[str]:
    """What a researcher should know before trusting the fit's numbers: parameters at a
    bound of what the law can express, intervals of zero width, resamples dropped."""
    notes, p, law = [], fit.params, fit.law.name
    floor = 1e-3 * float(df["loss"].min())
    if "E" in p and p["E"] < floor:
        notes.append(
            f"{law}: E = {p['E']:.3g} collapsed to 0 (its bound): the runs do not pin down an "
            "irreducible loss, so E, and the exponents traded against it, are not results; "
            "add runs at larger N and D, or fit a law without E"
        )
    elif "E" in params and np.isfinite(params["E"]["low"]) and params["E"]["low"] < floor:
        notes.append(
            f"{law}: E = {p['E']:.3g}, but its interval reaches 0 "
            f"([{params['E']['low']:.2g}, {params['E']['high']:.3g}]): the runs bound the "
            "irreducible loss from above, not from below"
        )
    for name, value in p.items():
        if name in ("alpha", "beta", "alpha_N", "alpha_D") and not 1e-3 < value < 5:
            notes.append(f"{law}: {name} = {value:.3g} is at the edge of what a power law can fit")
        if name in ("A", "B", "N_c", "D_c") and not 1e-30 < value < 1e30:
            notes.append(f"{law}: {name} = {value:.3g} ran off to a bound; the fit is degenerate")
    flat = [
        n
        for n, q in params.items()
        if np.isfinite(q["low"]) and q["high"] - q["low"] <= 1e-9 * max(1.0, abs(q["value"]))
    ]
    if flat and resamples > 0:
        notes.append(
            f"{law}: zero-width interval for {', '.join(flat)}: every resample gave the same "
            "value, which means a parameter stuck at a bound, not certainty"
        )
    if resamples > 0 and dropped > 0:
        notes.append(f"{law}: {dropped} of {resamples} bootstrap refits failed and were dropped")
    return notes


OUTLIER_Z = 4.0  # a residual this many robust standard deviations out is an outlier
OUTLIER_SHARE = 0.05  # ... when such runs are at most this share of them (else: misfit)


def outliers(df: pd.DataFrame, fit: Fit) -> dict | None:
    """A few runs whose log residuals lie far outside the rest's (more than ``OUTLIER_Z``
    robust standard deviations, from the median absolute deviation): their rows, and a
    note. None when there are none, or so many that the law, not the runs, is off."""
    r = residuals(df, fit)
    mad = float(np.median(np.abs(r - np.median(r))))
    if mad <= 0 or r.size < 10:
        return None
    z = (r - np.median(r)) / (1.4826 * mad)
    far = np.flatnonzero(np.abs(z) > OUTLIER_Z)
    if far.size == 0 or far.size > max(1, int(OUTLIER_SHARE * r.size)):
        return None
    far = far[np.argsort(-np.abs(z[far]))]
    rows = [
        {
            "run": str(df["run"].iloc[i]) if "run" in df else int(i),
            "n_params": float(df["n_params"].iloc[i]),
            "tokens": float(df["tokens"].iloc[i]),
            "loss": float(df["loss"].iloc[i]),
            "residual_log": float(r[i]),
            "z": float(z[i]),
        }
        for i in far
    ]
    shown = "; ".join(
        f"{row['run']} (loss {row['loss']:.4g}, {row['z']:+.0f} sd)" for row in rows[:6]
    )
    top = _highest_among(df, far)
    hint = f"--drop-highest {top}" if top else "--where"
    return {
        "rows": rows,
        "text": f"{len(rows)} run(s) lie far outside the rest's scatter about the law (more "
        f"than {OUTLIER_Z:g} robust sd): {shown}; if they are faulty runs, leave them out "
        f"({hint}) and refit: the fit above includes them",
        "highest_loss_outliers": top,
    }


def _highest_among(df: pd.DataFrame, far: np.ndarray) -> int:
    """How many of the highest-loss runs, counted from the top, are among ``far``."""
    ranked = np.argsort(-df["loss"].to_numpy(dtype=float), kind="stable")
    count = 0
    while count < ranked.size and ranked[count] in set(far.tolist()):
        count += 1
    return count


FLAT = 0.01  # a parameter is not identified when doubling or halving it moves the objective < 1%


def identification(df: pd.DataFrame, fit: Fit) -> list[str]:
    """Where the runs cannot pin a law's parameters down: as many parameters as runs, or
    one fewer (the fit passes through the points, whatever the law), and a repetition
    constant R* whose
    doubling or halving, the other parameters refitted, changes the objective by less than
    ``FLAT`` (Muennighoff et al.'s R_D* sits on such a plateau)."""
    law, notes = fit.law, []
    if fit.n_points <= law.n_params + 1:
        notes.append(
            f"{law.name}: {law.n_params} parameters from {fit.n_points} runs: the law can pass "
            "through (nearly) every run, so the fit cannot test its form and its intervals "
            "are not uncertainty; extrapolations from it rest on the form alone"
        )
    for name in law.param_names:
        if not name.startswith("R_") or fit.n_points <= law.n_params:
            continue
        rise = _profile_rise(df, fit, name)
        if rise is not None and rise < FLAT:
            notes.append(
                f"{law.name}: {name} = {fit.params[name]:.3g} is not identified by these runs: "
                f"halving or doubling it (the other parameters refitted) changes the objective "
                f"by {max(rise, 0.0):.2%}; read it as a plateau, not a value"
            )
    return notes


def _profile_rise(df: pd.DataFrame, fit: Fit, name: str) -> float | None:
    """The smaller relative rise of the objective with ``name`` held at half and at twice
    its fitted value, the other parameters refitted from the fit's optimum."""
    base = getattr(fit.law, "base", fit.law)
    held = dict(getattr(fit.law, "values", {}))
    rises = []
    for factor in (0.5, 2.0):
        law = Fixed(base, tuple(sorted({**held, name: fit.params[name] * factor}.items())))
        start = law.theta_of({**held, **fit.params})
        try:
            refit = fit_law(df, law, starts=start)
        except ValueError:
            return None
        rises.append((refit.objective - fit.objective) / max(fit.objective, 1e-300))
    return float(min(rises))

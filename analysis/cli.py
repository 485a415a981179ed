"""``lab-analyze``: fit scaling laws to runs, with intervals, plots and a report.

    lab-analyze fit PATH     print the fit and write fit.json and the main figure
    lab-analyze plot PATH    ... and every figure
    lab-analyze report PATH  ... and report.md, a Markdown report with the figures
    lab-analyze table PATH   every run of a sweep, any status
    lab-analyze compare PATH --by KEY   one law per value of a config key, side by side
    lab-analyze lr PATH      the best learning rate per size, and lr*(N); lr.json

    options: --law auto|chinchilla|chinchilla_tied|gadre|kaplan_nd|data_constrained|
                   data_constrained_full|n|d|c|n_pure|d_pure|c_pure  --fix NAME=VALUE,...
             --isoflop-method auto|hoffmann|porian|local|akima  --seed-noise SD
             --where EXPR  --drop-highest K  --columns NAME=COLUMN,...  --holdout EXPR
             --bootstrap N (resamples, default 1000; 0: none)  --budget C [C ...]
             --n-convention non_embedding|total  --compute 6N|6N_attn|6N_attn_head
             --loss val_loss|train_loss  --seed S  --out DIR

PATH is a sweep directory (its ``result.json`` records), the lab's runs.csv, or a CSV /
JSONL / Parquet file with columns n_params, tokens, loss under their usual names (and
optionally compute, run, budget, unique_tokens), for every command.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import choice as choice_mod
from analysis import plot, predict
from analysis.curves import curve_points
from analysis.fitting import choose_law
from analysis.isoflop import ALIASES, ISOFLOP_METHODS
from analysis.laws import LAWS
from analysis.load import (
    C_CONVENTIONS,
    LOSSES,
    N_CONVENTIONS,
    format_si,
    format_value,
    is_lab_table,
    load_runs,
    read_runs_table,
    read_table,
)
from analysis.noise import seed_noise, sensitivity
from analysis.report import write_report
from analysis.study import Study, analyze, default_budgets
from lab.config.record import DEFAULT_C_CONVENTION, DEFAULT_LOSS, DEFAULT_N_CONVENTION, LOSS_UNITS
from lab.runs.files import write_text_atomic


def runs_table(df: pd.DataFrame) -> str:
    """One line per run: N, D, C, loss."""
    conv = df.attrs.get("conventions", {})
    lines = [f"{'N':>8} {'D':>8} {'C':>8} {'loss':>7}  run"]
    for _, r in df.iterrows():
        mark = ""
        if "epochs" in r and r["epochs"] > 1:
            mark = f"  (repeated data: {r['epochs']:.2g} epochs)"
        lines.append(
            f"{format_si(r['n_params']):>8} {format_si(r['tokens']):>8} "
            f"{format_si(r['compute']):>8} {r['loss']:>7.4f}  {r['run']}{mark}"
        )
    lines.append(
        f"N: {conv.get('n_params')} parameters; C: {conv.get('compute')} FLOPs; "
        f"loss: {conv.get('loss')} ({LOSS_UNITS.get(conv.get('loss'), 'as given')})"
    )
    return "\n".join(lines)


def _with_interval(p: dict) -> str:
    if np.isfinite(p["low"]):
        return f"{format_value(p['value'])} [{format_value(p['low'])}, {format_value(p['high'])}]"
    return format_value(p["value"])


def summary(study: Study) -> str:
    """What the fit found, for a terminal: the law, each parameter with its interval, the
    compute-optimal allocation, the backtest and the warnings."""
    r = study.result
    level = int(r["bootstrap"]["interval"] * 100)
    objective = (
        "least squares on the loss"
        if r.get("fit_space") == "squares"
        else f"Huber δ={r['huber_delta']} on log loss"
    )
    lines = [
        f"fitted {r['formula']} to {r['n_points']} runs ({objective}, L-BFGS "
        f"from {r['starts']} starts; {level}% intervals from {r['bootstrap']['resamples']} "
        f"bootstrap resamples):",
        f"  {r['fit_text']}",
    ]
    lines += [f"  {name:>8} = {_with_interval(p)}" for name, p in r["params"].items()]
    for row in r.get("compute_optimal", []):
        lines.append(
            f"  at C = {format_si(row['compute'])}: N* = {_with_interval(row['N_opt'])}, "
            f"D* = {_with_interval(row['D_opt'])}, D*/N* = {_with_interval(row['tokens_per_param'])}, "
            f"loss {_with_interval(row['loss'])}"
        )
    for key, name in (
        ("approach_1", "approach 1 (envelope)"),
        ("approach_2", "approach 2 (IsoFLOP)"),
    ):
        if r.get(key):
            ex = r[key]["exponents"]
            how = f" by {r[key]['method']}" if key == "approach_2" else ""
            lines.append(
                f"  {name}{how}: a = {_with_interval(ex['a'])}, b = {_with_interval(ex['b'])}"
            )
            used = r[key].get("methods_used")
            if used:
                lines[-1] += " (budgets: " + ", ".join(f"{v} {m}" for m, v in used.items()) + ")"
    if any(m.get("a") is not None for m in (r.get("approach_2_methods") or {}).values()):
        lines.append("  approach 2's a by method: " + method_line(r["approach_2_methods"]))
    rb = r.get("rolling_backtest")
    if rb:
        lines.append(
            f"  rolling backtest ({rb['folds']} folds; {len(rb['predictions'])} checked "
            f"predictions of the next {rb['variable']} from the smaller): mean |error| "
            f"{rb['mean_abs_relative_error']:.1%}"
        )
    if r.get("calibration"):
        lines.append(f"  {r['calibration']['text']}")
    if (r.get("choice") or {}).get("text"):
        lines.append(f"  {r['choice']['text']}")
    ho = r.get("holdout")
    if ho:
        lines.append(
            f"  held out ({ho['where']}): {len(ho['runs'])} run(s), mean |error| "
            f"{ho['mean_abs_error']:.2%}, {ho['coverage']:.0%} inside their prediction intervals"
        )
        for row in ho["runs"]:
            lines.append(
                f"    {row['run']}: N = {format_si(row['n_params'])}, D = "
                f"{format_si(row['tokens'])}: loss {row['loss']:.4f}, predicted "
                f"{row['predicted']:.4f} [{row['low']:.4f}, {row['high']:.4f}], "
                f"error {row['error']:+.2%}"
            )
    bt = r.get("backtest")
    if bt:
        errs = ", ".join(f"{e:+.1%}" for e in bt["relative_error"])
        lines.append(
            f"  backtest: fitted without {bt['held_out']}; predicted their loss with "
            f"mean |error| {bt['mean_abs_relative_error']:.1%} ({errs})"
        )
    for note in r["warnings"]:
        lines.append(f"  warning: {note}")
    if r.get("sensitivity"):
        lines.append(sensitivity_table(r["sensitivity"]))
    return "\n".join(lines)


def method_line(methods: dict) -> str:
    """a under each IsoFLOP method, side by side (— where a method gives no result)."""
    return ", ".join(
        f"{m} {v['a']:.4f}" if v.get("a") is not None else f"{m} —" for m, v in methods.items()
    )


def sensitivity_table(rows: list[dict]) -> str:
    """The refits under every convention, one line each."""
    head = (
        f"  {'N':>14} {'C':>13} {'alpha':>7} {'beta':>7} {'a':>6} {'b':>6}  N*, D* at the budgets"
    )
    lines = ["sensitivity to the counting conventions (point fits):", head]
    for r in rows:
        opt = ", ".join(
            f"{format_si(n)}/{format_si(d)}" for n, d in zip(r.get("N_opt", []), r.get("D_opt", []))
        )
        lines.append(
            f"  {r['n_convention']:>14} {r['compute']:>13} {r.get('alpha', float('nan')):7.4f} "
            f"{r.get('beta', float('nan')):7.4f} {r.get('a', float('nan')):6.3f} "
            f"{r.get('b', float('nan')):6.3f}  {opt}"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace, figures: str) -> int:
    held = None
    if args.holdout:  # fitted without those rows; their loss predicted
        held = _load(args, where=args.holdout, drop_highest=0)
        args.where = (
            f"({args.where}) and not ({args.holdout})" if args.where else (f"not ({args.holdout})")
        )
    df = _load(args)
    points = None
    if args.isoflop_curves:
        if not Path(args.path).is_dir():
            raise ValueError("--isoflop-curves reads loss curves: PATH must be a sweep folder")
        if args.isoflop_curves < 3:
            raise ValueError(f"--isoflop-curves must be >= 3 budgets, got {args.isoflop_curves}")
        points = curve_points(
            args.path, args.isoflop_curves, args.n_convention, args.compute, args.loss
        )
    seed_sd = seed_noise(args.noise, args.loss)["pooled_sd_log"] if args.noise else None
    df, law, choice = chosen(df, args.law, args.choose)
    study = analyze(
        df,
        law,
        args.bootstrap,
        args.seed,
        args.budget,
        warn=False,
        isoflop_method=args.isoflop_method,
        isoflop_points=points,
        seed_sd_log=seed_sd,
        seed_noise=args.seed_noise,
        fixed=args.fix,
    )
    study.result["choice"] = choice
    if held is not None:
        study.result["holdout"] = holdout(study, held, args.holdout)
    study.result["saved"] = predict.saved(study)  # what lab-analyze predict --from reads
    if args.sensitivity:
        budgets = [row["compute"] for row in study.result.get("compute_optimal", [])]
        budgets = budgets or default_budgets(df)
        study.result["sensitivity"] = sensitivity(args.path, study.fit.law.name, budgets, args.loss)
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    fit_path = out / "fit.json"
    write_text_atomic(fit_path, json.dumps(study.result, indent=2, default=_json_default) + "\n")
    if figures == "main":  # plot and report: every figure, SVG too
        fig = plot.loss_vs_variables(study)
        written = plot.save_figure(fig, out / plot.figure_name(study), formats=(".png",))
    else:
        written = plot.all_figures(study, out)
    print(runs_table(df))
    print()
    print(summary(study))
    print()
    print(f"fit:    {fit_path}")
    if figures == "report":
        print(f"report: {write_report(study, out, written)}")
    for f in written:
        if f.suffix == ".png":
            print(f"plot:   {f}")
    return 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cmd_table(args: argparse.Namespace) -> int:
    """``lab-analyze table PATH``: every run of a sweep folder or its table, any status."""
    df = read_runs_table(args.path)
    cols = [
        "run",
        "status",
        "mixer",
        "n_params_non_embedding",
        "tokens",
        "flops_6N_attn",
        "lr",
        "val_loss",
        "wall_time_s",
    ]
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(df[cols].to_string(index=False))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``lab-analyze compare PATH --by KEY``: a law per group; compare.json and .png."""
    from analysis import compare

    df = _load(args, (args.by,), all_runs=True)
    result = compare.compare(
        df, args.by, args.law, args.bootstrap, args.seed, all_runs=args.all_runs
    )
    out = _out_dir(args)
    json_path, png = compare.write(result, out)
    print(compare.table(result))
    print(f"compare: {json_path}")
    print(f"plot:    {png}")
    return 0


def cmd_lr(args: argparse.Namespace) -> int:
    """``lab-analyze lr PATH``: each size's best rate and the fitted lr*(N); lr.json. PATH is
    a sweep folder, its runs table, or any table of runs with a learning-rate column."""
    from analysis import lr

    src = Path(args.path)
    out = _out_dir(args)
    if src.is_file() and not is_lab_table(read_table(src)):
        table = _load(args, all_runs=True)
        result = lr.analyze_lr_frame(
            lr.lr_frame(table, src), src, "loss", args.n_convention, args.bootstrap, args.seed
        )
        _print_lr(result, "loss", *lr.write(result, out))
        return 0
    if args.where or args.drop_highest or args.columns:
        raise ValueError(
            "--where, --drop-highest and --columns filter a table of runs; for a sweep "
            "folder, give lab-analyze lr a folder of the runs wanted"
        )
    table = read_runs_table(args.path)
    found = sorted(set(table["parametrization"].dropna()))
    if len(found) > 1:  # e.g. the mup_transfer sweep: one analysis per parametrization
        for p in found:
            result = lr.analyze_lr(
                args.path, args.n_convention, args.loss, args.bootstrap, args.seed, p, table
            )
            _print_lr(result, args.loss, *lr.write(result, out, suffix=f"_{p}"))
            print()
        return 0
    result = lr.analyze_lr(
        args.path, args.n_convention, args.loss, args.bootstrap, args.seed, records=table
    )
    _print_lr(result, args.loss, *lr.write(result, out))
    return 0


def _print_lr(result: dict, loss: str, json_path: Path, png: Path) -> None:
    print(f"best learning rate per sweep ({loss}, {result['parametrization']}):")
    print(f"{'model':>8} {'N':>8} {'D':>8} {'rates':>5} {'best lr':>9} {'loss':>7}  how")
    for g in result["sweeps"]:
        best = (
            f"{g['lr']:9.3g} {g['loss']:7.4f}  {g['method']}"
            if "lr" in g
            else "(fewer than 3 rates)"
        )
        print(
            f"{g['model']:>8} {format_si(g['n_params']):>8} {format_si(g['tokens']):>8} "
            f"{len(g['lrs']):>5} {best}"
        )
    law = result["law"]
    if law:
        parts = []
        for name, p in law["params"].items():
            interval = f" [{p['low']:.4g}, {p['high']:.4g}]" if np.isfinite(p["low"]) else ""
            parts.append(f"{name} = {p['value']:.4g}{interval}")
        print(f"{law['formula']}: " + ", ".join(parts))
    else:
        print(f"no lr law: {result['law_error']}")
    moves = result.get("moves")
    if moves:
        line = f"the best rate moves {moves['optima_ratio']:.2f}x across these sizes (optima)"
        if "law_ratio" in moves:
            m = moves["law_ratio"]
            line += (
                f"; {m['value']:.2f}x [{m['low']:.2f}, {m['high']:.2f}] by the law over "
                f"{m['n_span']:.3g}x in N"
            )
        print(line)
    if result["edge_optima"]:
        excluded = [m for m in result["edge_optima"] if m not in result["law_fitted_on"]]
        print(
            "warning: the best rate is at the edge of the grid for "
            + ", ".join(result["edge_optima"])
            + ": widen the grid there"
            + (f" (left out of the law: {', '.join(excluded)})" if excluded else "")
        )
    print(f"lr:     {json_path}")
    print(f"plot:   {png}")


def chosen(df: pd.DataFrame, law: str, how: str) -> tuple[pd.DataFrame, str, dict | None]:
    """The runs and law to fit: as given (``how == "none"``), or chosen by the ladder's
    backtest (``analysis.choice``; the law too when it is ``auto``)."""
    if how == "none":
        return df, law, None
    base = choose_law(df) if law == "auto" else law
    try:
        choice = choice_mod.choose(df, base, None if law == "auto" else (base,))
    except ValueError as e:
        return df, law, {"text": f"choice by backtest not possible: {e}"}
    kept = df[choice.pop("mask")]
    choice["text"] = choice_mod.describe(choice)
    return kept, choice["law"], choice


def _out_dir(args: argparse.Namespace) -> Path:
    """Where a command writes: --out, else PATH/analysis (beside PATH for a table file)."""
    src = Path(args.path)
    return Path(args.out) if args.out else (src if src.is_dir() else src.parent) / "analysis"


def cmd_predict(args: argparse.Namespace) -> int:
    """``lab-analyze predict PATH|--from fit.json``: the loss at target runs; predict.json."""
    runs = metric_fit = None
    if args.from_fit and args.metric:
        raise ValueError(
            "--metric fits the metric's law on the runs: give PATH (the runs), not --from"
        )
    if args.from_fit:
        source = Path(args.from_fit)
        try:
            saved_fit = json.loads(source.read_text())["saved"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(
                f"--from {source}: not a fit.json that lab-analyze fit wrote ({e})"
            ) from None
        out = Path(args.out) if args.out else source.parent
    else:
        if not args.path:
            raise ValueError("give PATH (runs to fit) or --from fit.json (a saved fit)")
        loaded = _load(args)
        if args.metric:  # before the loss fit: a bad column is one line, early
            from analysis.downstream import fit_metric

            metric_fit = fit_metric(loaded, args.metric, args.level, seed=args.seed)
        runs, law, choice = chosen(loaded, args.law, args.choose)
        study = analyze(runs, law, args.bootstrap, args.seed, warn=False, level=args.level)
        study.result["choice"] = choice
        saved_fit = predict.saved(study)
        out = _out_dir(args)
    target = predict.targets(args.at, args.targets, args.budgets, saved_fit)
    result = predict.predict(saved_fit, target, args.level, args.seed)
    if metric_fit is not None:
        result = predict.with_metric(result, metric_fit, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "predict.json"
    write_text_atomic(path, json.dumps(result, indent=2, default=_json_default) + "\n")
    written = plot.save_figure(predict.figure(result, runs), out / "predict", formats=(".png",))
    if metric_fit is not None:
        fig = predict.metric_figure(result, loaded)
        written += plot.save_figure(fig, out / "predict_metric", formats=(".png",))
    print(predict.table(result))
    print(f"predict: {path}")
    for f in written:
        print(f"plot:    {f}")
    return 0


def _sizes(args, ladder, conventions: dict) -> dict[str, float]:
    """The candidate model sizes: --sizes (the lab's model names or numbers), else every
    size of the lab's ladder, under the runs' N convention."""
    lab = ladder["sizes"]() if ladder else {}
    total = "total" in str(conventions.get("n_params", ""))
    given = [x.strip() for x in args.sizes.split(",") if x.strip()] if args.sizes else list(lab)
    if not given:
        raise ValueError("give --sizes N,N,... (the model sizes the next runs may have)")
    out = {}
    for x in given:
        if x in lab:
            out[x] = float(lab[x]["total" if total else "non_embedding"])
            continue
        try:
            out[x] = float(x)
        except ValueError:
            raise ValueError(
                f"--sizes {x!r}: neither a number nor a model of the lab ({', '.join(lab)})"
            ) from None
        if not out[x] > 0:
            raise ValueError(f"--sizes {x!r}: a size must be positive")
    return out


def _like(args, ladder) -> tuple[str | None, dict | None]:
    """The ladder's own sweep (--like NAME, or the one its sweep folder was run from) and
    its settings, which the design's runs copy."""
    from analysis.design import like_settings

    name = args.like
    if name is None:
        runs_file = Path(args.path) / "multirun.yaml"
        if runs_file.is_file():
            found = re.search(r"\+sweeps=([\w-]+)", runs_file.read_text())
            name = found.group(1) if found else None
    if name is None or not ladder:
        return None, None
    path = Path(ladder["sweeps_dir"]()) / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"--like {name}: no sweep file {path}")
    return name, like_settings(path.read_text())


def _by_design(path: Path) -> bool:
    """Whether a sweep file was written by ``lab-analyze design`` (which may replace it)."""
    from analysis import design

    return path.read_text().startswith("# @package _global_\n" + design.MARK)


def _write_sweep(files: dict[str, str], root: Path) -> list[Path]:
    """Write the design's sweep files under ``root``, refusing links and files that a
    design did not write (a sweep of the researcher's own is never overwritten)."""
    paths = []
    for rel in files:
        path = root / rel
        for p in (path, path.parent):
            if p.is_symlink():
                raise ValueError(f"{p} is a link: the design writes only files it made")
        if path.exists() and not _by_design(path):
            raise ValueError(
                f"{path} exists and was not written by lab-analyze design: choose --sweep NAME"
            )
        paths.append(path)
    group = root / next(iter(files)).split("/")[0]
    if group.is_dir():  # runs of an earlier design with this name
        for old in group.glob("run*.yaml"):
            if _by_design(old):
                old.unlink()
    for path, text in zip(paths, files.values()):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    return paths


def cmd_design(args: argparse.Namespace, ladder: dict | None = None) -> int:
    """``lab-analyze design PATH --target N D --budget C``: the next runs, a sweep file."""
    from analysis import design
    from analysis.fitting import fit as fit_runs
    from analysis.study import flops_per_param_token

    n_t, d_t = args.target
    if not (n_t > 0 and d_t > 0 and args.budget > 0):
        raise ValueError("--target N D and --budget C must be positive")
    df = _load(args)
    law = LAWS[args.law]
    if set(law.variables) != {"n_params", "tokens"}:
        raise ValueError(f"design needs a law of N and D; {args.law!r} is of {law.variables}")
    sizes = _sizes(args, ladder, df.attrs.get("conventions", {}))
    like_name, like = _like(args, ladder)  # a bad --like is one line before any fit
    if args.max_tokens is not None and args.max_tokens < 0:
        raise ValueError(f"--max-tokens must be positive (0: no bound), got {args.max_tokens:g}")
    if args.max_tokens is None:
        most = design.max_tokens(df)
        bound = (
            f"{design.EPOCHS} epochs of the runs' {most / design.EPOCHS:.3g} unique tokens"
            if most
            else "none: the runs record no corpus size (--max-tokens D sets one)"
        )
    else:
        most = args.max_tokens or None
        bound = "--max-tokens" if most else "none (--max-tokens 0)"
    fit = fit_runs(df, law, resamples=args.bootstrap, seed=args.seed)
    k = flops_per_param_token(df)
    proposal = design.propose(fit, df, (n_t, d_t), args.budget, sizes, k, most)
    if not proposal["runs"]:
        raise ValueError("no run within the budget shrinks the target's interval")
    proposal["max_tokens"] = most
    proposed = pd.DataFrame(proposal["runs"])
    uniform = design.uniform_grid(sizes, len(proposed), proposal["compute"], k, most)
    proposal["expected_sd_uniform"] = design.expected_sd(fit, df, (n_t, d_t), uniform)
    result = {
        "target": {"n_params": n_t, "tokens": d_t},
        "law": law.name,
        **proposal,
        "uniform_grid": uniform.to_dict("records"),
        "flops_per_param_token": k,
        "source": str(args.path),
    }
    if args.simulate:
        result["simulation"] = design.simulate(
            fit,
            df,
            (n_t, d_t),
            {"proposed": proposed, "uniform grid": uniform},
            reps=args.simulate,
            resamples=min(args.bootstrap, 100),
            seed=args.seed,
            k=k,
        )
    out = _out_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"design for the loss at N = {n_t:.3g}, D = {d_t:.3g} within C = {args.budget:.3g} "
        f"FLOPs ({law.name}, {len(df)} runs so far); at most "
        + (f"{most:.3g} tokens a run ({bound}):" if most else f"any tokens a run ({bound}):"),
        f"  {'model':>8} {'N':>9} {'D':>9} {'D/N':>6} {'C':>9}",
    ]
    for r in proposal["runs"]:
        lines.append(
            f"  {r['label']:>8} {r['n_params']:9.3g} {r['tokens']:9.3g} "
            f"{r['tokens'] / r['n_params']:6.0f} {r['compute']:9.3g}"
        )
    lines.append(
        f"  {len(proposed)} runs, C = {proposal['compute']:.3g} "
        f"({proposal['compute'] / args.budget:.0%} of the budget); the target's expected log "
        f"sd {proposal['expected_sd_before']:.4f} -> {proposal['expected_sd_after']:.4f} "
        f"(a uniform grid of the same compute: {proposal['expected_sd_uniform']:.4f})"
    )
    for name, s in result.get("simulation", {}).items():
        lines.append(
            f"  simulated ({args.simulate} ladders from the fit), {name} ({s['runs']} runs): "
            f"the law's {int(args.level * 100)}% interval at the target {s['median_law_width']:.2%} "
            f"wide, a new run's {s['median_width']:.2%}; error {s['median_abs_error']:.2%}; "
            f"held the law's loss {s['covered']:.0%}"
        )
    if ladder and all(r["label"] in ladder["sizes"]() for r in proposal["runs"]):
        note = (
            f"{design.MARK[2:]} from {args.path}: the runs that most shrink the "
            f"interval of the loss at N = {n_t:.3g}, D = {d_t:.3g} within C = {args.budget:.3g}"
            + (f";\nsettings as sweeps/{like_name}.yaml" if like_name else "")
        )
        files = design.sweep_files(args.sweep, proposal["runs"], like, note)
        written = _write_sweep(files, Path(ladder["sweeps_dir"]()))
        result["sweep"] = [str(p) for p in written]
        lines.append(f"  sweep: {written[-1]} (lab-sweep {args.sweep})")
    else:
        lines.append("  no sweep file: the sizes are not all models of the lab (numbers)")
    path = out / "design.json"
    write_text_atomic(path, json.dumps(result, indent=2, default=_json_default) + "\n")
    print("\n".join(lines))
    print(f"design: {path}")
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    """``lab-analyze noise PATH``: the seed standard deviation per config; noise.json."""
    result = seed_noise(args.path, args.loss)
    src = Path(args.path)
    print(f"seed noise of {args.loss} ({LOSS_UNITS[args.loss]}), per config:")
    print(
        f"{'model':>8} {'N':>8} {'D':>8} {'seeds':>5} {'mean':>8} {'sd':>8} {'sd %':>6} {'eval se':>8}"
    )
    for r in result["configs"]:
        se = r["eval_se"]
        print(
            f"{str(r['model']):>8} {format_si(r['n_params'] or float('nan')):>8} "
            f"{format_si(r['tokens'] or float('nan')):>8} {r['seeds']:>5} {r['mean']:8.4f} "
            f"{r['sd']:8.4f} {100 * r['sd'] / r['mean']:5.2f}% "
            f"{(f'{se:.4f}' if isinstance(se, float) else '-'):>8}"
        )
    print(f"pooled sd of log loss: {result['pooled_sd_log']:.4g}")
    out = (src if src.is_dir() else src.parent) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "noise.json", json.dumps(result, indent=2) + "\n")
    print(f"noise:  {out / 'noise.json'}")
    return 0


def _mapping(text: str) -> dict[str, str]:
    """NAME=VALUE,NAME=VALUE as a dict (for --columns)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {part!r}")
        out[name.strip()] = value.strip()
    return out


def _fixed(text: str) -> dict[str, float]:
    """NAME=NUMBER,... as a dict (for --fix)."""
    out = {}
    for name, value in _mapping(text).items():
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--fix {name}={value}: not a number") from None
    return out


def holdout(study: Study, held: pd.DataFrame, expr: str) -> dict:
    """The fit's predictions of the held-out runs, with their prediction intervals and the
    relative errors (predicted / observed − 1)."""
    variables = {v: held[v].to_numpy() for v in study.fit.law.variables if v in held}
    pi = study.fit.predict_interval(**variables, level=study.result["bootstrap"]["interval"])
    rows = []
    for i, (_, r) in enumerate(held.iterrows()):
        pred, lo, hi = (float(np.atleast_1d(v)[i]) for v in pi)
        rows.append(
            {
                "run": str(r["run"]),
                "n_params": float(r["n_params"]),
                "tokens": float(r["tokens"]),
                "loss": float(r["loss"]),
                "predicted": pred,
                "low": lo,
                "high": hi,
                "error": pred / float(r["loss"]) - 1,
                "inside": bool(lo <= r["loss"] <= hi),
            }
        )
    errors = np.abs([row["error"] for row in rows])
    return {
        "where": expr,
        "runs": rows,
        "mean_abs_error": float(errors.mean()),
        "coverage": float(np.mean([row["inside"] for row in rows])),
    }


def _load(
    args: argparse.Namespace,
    config_keys: tuple = (),
    all_runs: bool | None = None,
    where: str | None = None,
    drop_highest: int | None = None,
):
    """The runs PATH names, under the command's conventions and cleaning options (``where``
    and ``drop_highest`` in place of the command's own)."""
    return load_runs(
        args.path,
        args.n_convention,
        getattr(args, "compute", DEFAULT_C_CONVENTION),
        args.loss,
        config_keys,
        all_runs=args.all_runs if all_runs is None else all_runs,
        keep_duplicates=args.keep_duplicates,
        where=args.where if where is None else where,
        drop_highest=args.drop_highest if drop_highest is None else drop_highest,
        columns=args.columns,
    )


def _common_options(p: argparse.ArgumentParser, compute: bool = True) -> None:
    """The options every fitting command takes: output folder, bootstrap, seed, and the
    N, C (unless ``compute`` is False) and loss conventions."""
    p.add_argument("--out", default=None, help="output folder (default: PATH/analysis)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples (0: no intervals)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-convention", default=DEFAULT_N_CONVENTION, choices=list(N_CONVENTIONS))
    if compute:
        p.add_argument(
            "--compute",
            default=DEFAULT_C_CONVENTION,
            choices=list(C_CONVENTIONS),
            help="compute convention: 6N_attn (default: 6N plus the attention FLOPs), 6N, or "
            "6N_attn_head (plus the output layer)",
        )
    p.add_argument("--loss", default=DEFAULT_LOSS, choices=list(LOSSES))
    p.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="fit rows that repeat another row exactly (default: dropped, with a warning)",
    )
    p.add_argument(
        "--where",
        default=None,
        metavar="EXPR",
        help="fit only the rows where EXPR holds, a pandas query over the table's (or the "
        'records\') columns, e.g. "epochs <= 2.5" or "dataset == \'rpj\' and N < 1e9"',
    )
    p.add_argument(
        "--drop-highest",
        type=int,
        default=0,
        metavar="K",
        help="leave out the K runs of highest loss (Besiroglu et al. 2024 drop 5 of the "
        "Chinchilla runs)",
    )
    p.add_argument(
        "--columns",
        type=_mapping,
        default=None,
        metavar="NAME=COLUMN,...",
        help="which of a table's columns hold n_params, tokens, compute, loss, "
        "unique_tokens, e.g. loss=loss_c4_val,n_params=N_total (default: the usual names)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab-analyze",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, figures, text in (
        ("fit", "main", "fit a law; write fit.json and the main figure"),
        ("plot", "all", "fit, and write every figure"),
        ("report", "report", "fit, every figure, and report.md"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "path", help="sweep directory, or CSV/JSONL/Parquet of n_params, tokens, loss"
        )
        p.add_argument("--law", default="auto", choices=["auto", *LAWS])
        p.add_argument(
            "--fix",
            type=_fixed,
            default=None,
            metavar="NAME=VALUE,...",
            help="hold these parameters of the law at the given values and fit the others, "
            "e.g. Muennighoff et al.'s two-stage fit: --law data_constrained_full --fix "
            "E=1.869,A=520.8,B=1488.9,alpha=0.3527,beta=0.3527",
        )
        _common_options(p)
        p.add_argument(
            "--budget",
            type=float,
            nargs="+",
            default=None,
            help="compute budgets (FLOPs) for N*, D* (default: the largest run's, ×10, ×100)",
        )
        p.add_argument(
            "--isoflop-curves",
            type=int,
            default=0,
            metavar="K",
            help="approach 2 from each run's loss curve read at K compute budgets (a sweep "
            "folder whose runs log curves; best with constant or WSD schedules)",
        )
        p.add_argument(
            "--isoflop-method",
            default="auto",
            choices=[*ISOFLOP_METHODS, *ALIASES],
            help="approach 2: each budget's optimum by hoffmann (one parabola through every "
            "size), porian (Akima interpolation with a seed-noise bootstrap, weighted), local "
            "(a parabola around the lowest size), akima, or auto (hoffmann where a curve is "
            "centred, akima where it is lopsided; default)",
        )
        p.add_argument(
            "--seed-noise",
            type=float,
            default=None,
            metavar="SD",
            help="the sd of a run's final loss across seeds, in loss units, for "
            "--isoflop-method porian (default: from --noise, else 0.2%% of the loss)",
        )
        p.add_argument(
            "--choose",
            default="none",
            choices=["none", "backtest"],
            help="backtest: choose the runs to fit on and (with --law auto) free or tied "
            "exponents by the ladder's own backtest, as predict does by default (default: "
            "none, the runs and law as given)",
        )
        p.add_argument(
            "--holdout",
            default=None,
            metavar="EXPR",
            help="fit without the rows where EXPR holds and predict their loss, with "
            'prediction intervals and errors (e.g. the largest models: "N_total > 1e9")',
        )
        p.add_argument(
            "--sensitivity",
            action="store_true",
            help="also refit under every N and C convention and tabulate the exponents and "
            "N*, D* (a sweep folder)",
        )
        p.add_argument(
            "--noise",
            metavar="SEEDS_PATH",
            default=None,
            help="a sweep with repeated seeds (lab-sweep seeds): compare the fit's residuals to "
            "its run-to-run noise",
        )
        p.add_argument(
            "--all-runs",
            action="store_true",
            help="fit every run, even where runs at one (N, D) differ in a hyperparameter "
            "(default: the best setting's runs there)",
        )
        p.set_defaults(func=lambda a, figures=figures: _run(a, figures))
    n = sub.add_parser("noise", help="run-to-run (seed) noise of the final loss, per config")
    n.add_argument("path", help="a sweep whose configs ran with several train.seed values")
    n.add_argument("--loss", default=DEFAULT_LOSS, choices=list(LOSSES))
    n.set_defaults(func=cmd_noise)
    c = sub.add_parser("compare", help="fit one law per value of a config key, side by side")
    c.add_argument("path", help="sweep directory, or a table file with the --by column")
    c.add_argument("--by", required=True, help="a config key, e.g. model.mixer or model.norm")
    c.add_argument("--law", default="auto", choices=["auto", *LAWS])
    _common_options(c)
    c.add_argument(
        "--all-runs",
        action="store_true",
        help="every run of a group, even where its runs at one (N, D) differ in a "
        "hyperparameter (default: the best setting there)",
    )
    c.set_defaults(func=cmd_compare)
    lr_p = sub.add_parser("lr", help="the best learning rate per size, and lr*(N)")
    lr_p.add_argument(
        "path",
        help="a sweep folder whose runs differ in optim.lr, its runs table, or a table of "
        "runs with n_params, tokens, loss and lr columns",
    )
    _common_options(lr_p, compute=False)
    lr_p.set_defaults(func=cmd_lr)
    pr = sub.add_parser("predict", help="the loss at target runs, with prediction intervals")
    pr.add_argument("path", nargs="?", help="runs to fit (as for fit); or give --from")
    pr.add_argument("--from", dest="from_fit", metavar="FIT_JSON", help="a saved fit.json")
    pr.add_argument("--law", default="auto", choices=["auto", *LAWS])
    pr.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    pr.add_argument("--at", type=float, nargs="+", metavar="N D", help="targets: N D pairs")
    pr.add_argument("--targets", metavar="CSV", help="targets: a CSV of n_params, tokens")
    pr.add_argument(
        "--compute",
        dest="budgets",
        type=float,
        nargs="+",
        metavar="C",
        help="targets: compute budgets, at the compute-optimal allocation (--law chinchilla)",
    )
    _common_options(pr, compute=False)  # --compute names the targets' budgets here
    pr.add_argument("--all-runs", action="store_true", help="as for fit")
    pr.add_argument(
        "--choose",
        default="backtest",
        choices=["backtest", "none"],
        help="backtest (default): which runs to fit on (all, without the least-trained, "
        "without the smallest size) and, with --law auto, free or tied exponents, chosen by "
        "the ladder's own backtest; none: the runs and law as given",
    )
    pr.add_argument(
        "--metric",
        metavar="COLUMN",
        help="also predict this error or accuracy column of the runs: its law in the loss, "
        "y = epsilon - k*exp(-gamma*L) (Gadre et al. 2024), chained with the predicted loss",
    )
    pr.set_defaults(func=cmd_predict)
    de = sub.add_parser(
        "design", help="the next runs within a compute budget that most shrink a target's interval"
    )
    de.add_argument("path", help="the runs so far (as for fit)")
    de.add_argument("--target", type=float, nargs=2, metavar=("N", "D"), required=True)
    de.add_argument(
        "--budget", type=float, required=True, metavar="C", help="FLOPs for the new runs"
    )
    de.add_argument("--law", default="chinchilla", choices=list(LAWS))
    de.add_argument(
        "--sizes",
        help="the model sizes the new runs may have: the lab's model names or numbers, "
        "comma-separated (default: every model in conf/model)",
    )
    de.add_argument(
        "--max-tokens",
        type=float,
        default=None,
        metavar="D",
        help="no new run takes more tokens than D (default: 4 epochs of the largest corpus "
        "the runs record, their unique_tokens; 0: no bound)",
    )
    de.add_argument("--sweep", default="design", help="the sweep file to write: sweeps/NAME.yaml")
    de.add_argument(
        "--like",
        metavar="SWEEP",
        help="train the new runs with this sweep's settings (default: the sweep PATH was run from)",
    )
    de.add_argument(
        "--simulate",
        type=int,
        default=8,
        metavar="R",
        help="synthetic ladders drawn from the fit to check the design against a uniform grid "
        "of the same compute (0: none)",
    )
    de.add_argument("--level", type=float, default=0.95)
    _common_options(de, compute=False)
    de.set_defaults(bootstrap=200)
    de.add_argument("--all-runs", action="store_true", help="as for fit")
    de.set_defaults(func=cmd_design)
    t = sub.add_parser("table", help="print every run of a sweep, any status")
    t.add_argument("path")
    t.set_defaults(func=cmd_table)
    return parser


def main(argv: list[str] | None = None, ladder: dict | None = None) -> int:
    """The ``lab-analyze`` command; ``ladder``, the lab's model sizes and sweep folder
    (``lab.cli.ladder.LADDER``; the console command passes it), for ``design``."""
    args = build_parser().parse_args(argv)
    if args.func is cmd_design:
        args.func = functools.partial(cmd_design, ladder=ladder)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"lab-analyze: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

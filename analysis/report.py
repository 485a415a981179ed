"""A Markdown report of a study: the runs, the fitted law with intervals, the compute-optimal
allocation by each approach, the backtest, the warnings, and the figures."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from analysis.load import format_si, format_value
from lab.config.record import LOSS_UNITS
from lab.runs.files import write_text_atomic


def _text(value) -> str:
    """A name for a Markdown table cell: HTML escaped, pipes escaped, one line."""
    text = html.escape(str(value)).replace("|", "\\|")
    return " ".join(text.split())


def _cell(p: dict) -> str:
    f = format_value
    if np.isfinite(p.get("low", np.nan)):
        return f"{f(p['value'])} ({f(p['low'])} – {f(p['high'])})"
    return f(p["value"])


def write_report(study, out: Path, figures: list[Path]) -> Path:
    """Write ``out/report.md`` and return its path."""
    r, df = study.result, study.df
    level = int(r["bootstrap"]["interval"] * 100)
    conv = r.get("conventions") or {}
    md = [
        "# Scaling-law report",
        "",
        f"Source: `{r.get('source')}` — {r['n_points']} runs. N: {conv.get('n_params')} "
        f"parameters; C: {conv.get('compute')} FLOPs; loss: {conv.get('loss')} ({LOSS_UNITS.get(conv.get('loss'), 'as given')}).",
        "",
        "## Fitted law",
        "",
        f"{r['formula']}, fitted by Huber loss (δ = {r['huber_delta']}) on log-loss with L-BFGS "
        f"from {r['starts']} starting points; {level}% intervals from "
        f"{r['bootstrap']['resamples']} bootstrap resamples of the runs.",
        "",
        f"**{r['fit_text']}**",
        "",
        "| parameter | value (interval) |",
        "|---|---|",
        *[f"| {k} | {_cell(v)} |" for k, v in r["params"].items()],
        "",
    ]
    if r.get("compute_optimal"):
        md += [
            "## Compute-optimal allocation (approach 3)",
            "",
            "| C (FLOPs) | N* | D* | D*/N* | predicted loss |",
            "|---|---|---|---|---|",
        ]
        for row in r["compute_optimal"]:
            md.append(
                f"| {format_si(row['compute'])} | {_cell(row['N_opt'])} | {_cell(row['D_opt'])} "
                f"| {_cell(row['tokens_per_param'])} | {_cell(row['loss'])} |"
            )
        md.append("")
    md += [
        "## Exponents by approach (N* ∝ C^a, D* ∝ C^b)",
        "",
        "| approach | a | b |",
        "|---|---|---|",
    ]
    if "a" in r["params"]:
        md.append(f"| 3 (parametric fit) | {_cell(r['params']['a'])} | {_cell(r['params']['b'])} |")
    for key, name in (("approach_1", "1 (envelope)"), ("approach_2", "2 (IsoFLOP)")):
        if r.get(key):
            ex = r[key]["exponents"]
            md.append(f"| {name} | {_cell(ex['a'])} | {_cell(ex['b'])} |")
        else:
            md.append(f"| {name} | not applicable to these runs | |")
    md.append("")
    bt = r.get("backtest")
    md += ["## Backtest", ""]
    if bt:
        md += [
            f"Fitted without the runs at {bt['held_out']} ({bt['fitted_on']} runs left), then "
            f"asked to predict them: mean absolute relative error "
            f"**{bt['mean_abs_relative_error']:.2%}**.",
            "",
            "| run | observed | predicted | error |",
            "|---|---|---|---|",
        ]
        for run, o, p, e in zip(
            bt["runs"] or [""] * len(bt["observed"]),
            bt["observed"],
            bt["predicted"],
            bt["relative_error"],
        ):
            md.append(f"| {run} | {o:.4f} | {p:.4f} | {e:+.2%} |")
    else:
        md.append("Not possible with these runs.")
    rb = r.get("rolling_backtest")
    if rb:
        md += [
            "",
            "## Rolling backtest",
            "",
            f"Fitted on the runs up to each of {rb['folds']} cuts of {rb['variable']}, then "
            f"asked to predict every larger run: mean absolute error of the next size "
            f"**{rb['mean_abs_relative_error']:.2%}**. The intervals are calibrated on those "
            "errors (their scale grows with the distance beyond the fitted runs); each "
            "fold's next-size predictions below carry the interval calibrated on the other "
            "folds only.",
            "",
            _text((r.get("calibration") or {}).get("text", "")),
            "",
            "| fitted up to | predicted | run | observed | predicted | interval | error | inside |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p in rb["predictions"]:
            md.append(
                f"| {format_si(p['fitted_up_to'])} | {format_si(p['predicted_size'])} "
                f"| {_text(p['run'])} | {p['observed']:.4f} | {p['predicted']:.4f} "
                f"| [{p['low']:.4f}, {p['high']:.4f}] | {p['relative_error']:+.2%} "
                f"| {'yes' if p['inside'] else 'no'} |"
            )
    md += ["", "## Warnings", ""]
    md += [f"- {_text(w)}" for w in r["warnings"]] or ["None."]
    md += ["", "## Figures", ""]
    md += [f"![{f.stem}]({f.name})" for f in figures if f.suffix == ".png"]
    md += ["", "## Runs", "", "| run | N | D | C | loss |", "|---|---|---|---|---|"]
    for _, row in df.iterrows():
        md.append(
            f"| {_text(row['run'])} | {format_si(row['n_params'])} | {format_si(row['tokens'])} "
            f"| {format_si(row['compute'])} | {row['loss']:.4f} |"
        )
    path = out / "report.md"
    write_text_atomic(path, "\n".join(md) + "\n")
    return path

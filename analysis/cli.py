"""``lab-analyze``: fit scaling laws to a sweep's runs and plot them.

    lab-analyze fit PATH [--law auto|chinchilla|n|d|c] [--out DIR]
                         [--n-convention non_embedding|total] [--compute 6N|6N_attn|6N_attn_head]
                         [--loss val_loss|train_loss]
    lab-analyze table PATH      the sweep's runs, every status

PATH is a sweep directory (its ``result.json`` records) or a CSV / JSONL / Parquet file
with columns n_params, tokens, loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from analysis.laws import LAWS, Fit, fit_law
from analysis.load import C_CONVENTIONS, LOSSES, N_CONVENTIONS, format_si, load_runs, read_records
from analysis.plot import plot_loss_vs_n_and_d


def choose_law(df: pd.DataFrame) -> str:
    """L(N, D) when the runs vary both N and D and are enough for it, else L(N) or L(D)."""
    varies_n, varies_d = df["n_params"].nunique() > 1, df["tokens"].nunique() > 1
    if varies_n and varies_d and len(df) >= LAWS["chinchilla"].n_params:
        return "chinchilla"
    return "d" if varies_d and not varies_n else "n"


def runs_table(df: pd.DataFrame) -> str:
    """One line per run: N, D, C, loss."""
    conv = df.attrs.get("conventions", {})
    lines = [f"{'N':>8} {'D':>8} {'C':>8} {'loss':>7}  run"]
    for _, r in df.iterrows():
        lines.append(
            f"{format_si(r['n_params']):>8} {format_si(r['tokens']):>8} "
            f"{format_si(r['compute']):>8} {r['loss']:>7.4f}  {r['run']}"
        )
    lines.append(
        f"N: {conv.get('n_params')} parameters; C: {conv.get('compute')} FLOPs; "
        f"loss: {conv.get('loss')} (nats/token)"
    )
    return "\n".join(lines)


def fit_to_json(fit: Fit, df: pd.DataFrame) -> dict:
    return {
        "law": fit.law.name,
        "formula": fit.law.formula,
        "params": fit.params,
        "objective": fit.objective,
        "huber_delta": fit.extra.get("delta"),
        "starts": fit.extra.get("starts"),
        "converged": fit.converged,
        "n_points": fit.n_points,
        "conventions": df.attrs.get("conventions"),
        "source": df.attrs.get("source"),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def cmd_fit(args: argparse.Namespace) -> int:
    df = load_runs(args.path, args.n_convention, args.compute, args.loss)
    law = choose_law(df) if args.law == "auto" else args.law
    fit = fit_law(df, law)
    out = (
        Path(args.out)
        if args.out
        else (Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent) / "analysis"
    )
    out.mkdir(parents=True, exist_ok=True)
    fit_path = out / "fit.json"
    fit_path.write_text(json.dumps(fit_to_json(fit, df), indent=2) + "\n")
    figures = plot_loss_vs_n_and_d(df, fit, out / "loss_vs_n_and_d")
    print(runs_table(df))
    print()
    print(
        f"fitted {fit.law.formula} to {fit.n_points} runs (Huber δ={fit.extra['delta']}, "
        f"L-BFGS from {fit.extra['starts']} starts):"
    )
    print(f"  {fit.describe()}")
    print("  " + "  ".join(f"{k}={v:.4g}" for k, v in fit.params.items()))
    print()
    print(f"fit:  {fit_path}")
    for f in figures:
        print(f"plot: {f}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    df = read_records(args.path)
    if df.empty:
        raise ValueError(f"no result.json records under {args.path}")
    cols = [
        "run",
        "status",
        "n_params_non_embedding",
        "tokens",
        "flops_6N",
        "val_loss",
        "wall_time_s",
    ]
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(df[cols].to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab-analyze",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="fit a scaling law, write fit.json and plots")
    p.add_argument("path", help="sweep directory, or CSV/JSONL/Parquet of n_params, tokens, loss")
    p.add_argument("--law", default="auto", choices=["auto", *LAWS])
    p.add_argument("--out", default=None, help="output folder (default: PATH/analysis)")
    p.add_argument("--n-convention", default="non_embedding", choices=list(N_CONVENTIONS))
    p.add_argument("--compute", default="6N", choices=list(C_CONVENTIONS))
    p.add_argument("--loss", default="val_loss", choices=list(LOSSES))
    p.set_defaults(func=cmd_fit)
    t = sub.add_parser("table", help="print every run of a sweep, any status")
    t.add_argument("path")
    t.set_defaults(func=cmd_table)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"lab-analyze: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""IsoFLOP points from loss curves: each run's validation curve read at many compute
budgets, so a few runs give approach 2 many budgets (as Hoffmann et al. 2022 read their
training curves, and later IsoFLOP analyses interpolate theirs).

A run's curve (``metrics.jsonl``: tokens seen and validation loss at each evaluation) is
put on the compute axis with the run's own FLOPs per token (its record's C / D under the
chosen convention) and interpolated linearly in log C at each budget it passed through.
Caveat: a point in the middle of a run is a run trained to that budget only when the
learning-rate schedule does not depend on the run's length (constant, or the stable phase
of WSD); mid-run losses of a cosine run sit above what a run ending there reaches. Runs
with a cosine schedule are flagged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lab.config.record import (
    C_CONVENTIONS,
    DEFAULT_C_CONVENTION,
    DEFAULT_LOSS,
    DEFAULT_N_CONVENTION,
    METRICS_NAME,
    N_CONVENTIONS,
)
from lab.runs.files import read_jsonl
from lab.runs.records import find_records, read_record


def _curve(run_dir: Path, loss: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(tokens, loss) of a run's evaluations, finite losses only, or None."""
    path = run_dir / METRICS_NAME
    if not path.exists():
        return None
    rows = []
    lines, torn = read_jsonl(path)
    if torn:
        warnings.warn(f"{path}: line(s) {torn} are not whole JSON rows; skipped", stacklevel=3)
    for row in lines:
        value = row.get(loss)
        if isinstance(value, int | float) and np.isfinite(value) and row.get("tokens"):
            rows.append((float(row["tokens"]), float(value)))
    if len(rows) < 2:
        return None
    tokens, values = np.array(rows).T
    return tokens, values


def curve_points(
    path: str | Path,
    budgets: int = 12,
    n_convention: str = DEFAULT_N_CONVENTION,
    compute_convention: str = DEFAULT_C_CONVENTION,
    loss: str = DEFAULT_LOSS,
) -> pd.DataFrame:
    """Points (n_params, tokens, compute, loss, budget, run) read off every finished run's
    curve under ``path`` at ``budgets`` log-spaced compute budgets (from the earliest compute
    past the first tenth of some curve to the largest compute reached; a run contributes at
    the budgets its curve spans).

    Raises ValueError when fewer than 2 runs have a curve."""
    curves, cosine = [], []
    for record_path in find_records(path):
        rec = read_record(record_path.parent)
        if not rec or rec.get("status") != "ok" or not rec.get("tokens"):
            continue
        curve = _curve(record_path.parent, loss)
        flops = rec.get(C_CONVENTIONS[compute_convention])
        n = rec.get(N_CONVENTIONS[n_convention])
        if curve is None or not flops or not n:
            continue
        per_token = float(flops) / float(rec["tokens"])
        tokens, values = curve
        name = record_path.parent.relative_to(path).as_posix()
        curves.append((name, float(n), per_token, tokens * per_token, values))
        schedule = ((rec.get("config") or {}).get("optim") or {}).get("schedule")
        if schedule == "cosine":
            cosine.append(name)
    if len(curves) < 2:
        raise ValueError(
            f"loss curves: fewer than 2 finished runs with a {METRICS_NAME} under {path}"
        )
    if cosine:
        warnings.warn(
            f"loss curves: {len(cosine)} run(s) used a cosine schedule, whose mid-run losses "
            "overstate what a run ending at that budget reaches (use constant or WSD runs)",
            stacklevel=2,
        )
    lo = min(c[3][0] + 0.1 * (c[3][-1] - c[3][0]) for c in curves)
    hi = max(c[3][-1] for c in curves)
    grid = np.geomspace(lo, hi, budgets)
    rows = []
    for name, n, per_token, compute, values in curves:
        inside = (grid >= compute[0]) & (grid <= compute[-1])
        for c in grid[inside]:
            value = float(np.interp(np.log(c), np.log(compute), values))
            rows.append(
                {
                    "run": f"{name}@{c:.3g}",
                    "n_params": n,
                    "tokens": c / per_token,
                    "compute": c,
                    "loss": value,
                    "budget": c,
                }
            )
    return pd.DataFrame(rows)

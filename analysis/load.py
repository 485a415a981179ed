"""Read training runs into a DataFrame with the counting convention chosen explicitly.

Sources: a sweep directory (every ``result.json`` below it), or a CSV / JSONL file with
at least the columns ``n_params, tokens, loss`` (``compute`` optional; 6·N·D when absent).
The returned frame always has ``n_params``, ``tokens``, ``compute`` and ``loss``; which
N, which C and which loss they hold is in ``df.attrs["conventions"]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lab.records import read_records
from lab.schema import (  # the record schema, shared with the lab that writes the records
    C_CONVENTIONS,
    LOSSES,
    N_CONVENTIONS,
    RECORD_NAME,
    format_si,
)


def load_runs(
    path: str | Path,
    n_convention: str = "non_embedding",
    compute_convention: str = "6N",
    loss: str = "val_loss",
) -> pd.DataFrame:
    """Finished runs as a frame with ``n_params, tokens, compute, loss`` under the chosen
    conventions (see module doc). Rows with a NaN, infinite, zero or negative value are
    dropped with a warning naming them.

    Raises FileNotFoundError for a missing path and ValueError for an unknown convention,
    a file without the required columns, or no usable runs."""
    if n_convention not in N_CONVENTIONS:
        raise ValueError(
            f"n_convention must be one of {tuple(N_CONVENTIONS)}, got {n_convention!r}"
        )
    if compute_convention not in C_CONVENTIONS:
        raise ValueError(
            f"compute_convention must be one of {tuple(C_CONVENTIONS)}, got {compute_convention!r}"
        )
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such sweep directory or file: {path}")
    if path.is_dir():
        raw = read_records(path)
        if raw.empty:
            raise ValueError(f"no {RECORD_NAME} records under {path}")
        raw = raw[raw["status"] == "ok"]
        df = pd.DataFrame(
            {
                "run": raw["run"],
                "model": raw["model"],
                "n_params": raw[N_CONVENTIONS[n_convention]],
                "tokens": raw["tokens"],
                "compute": raw[C_CONVENTIONS[compute_convention]],
                "loss": raw[loss],
            }
        )
        if raw["budget"].notna().any():  # an IsoFLOP sweep: runs grouped by their budget
            df["budget"] = raw["budget"]
        conventions = {"n_params": n_convention, "compute": compute_convention, "loss": loss}
    else:
        df = _read_table(path)
        missing = {"n_params", "tokens", "loss"} - set(df.columns)
        if missing:
            raise ValueError(
                f"{path} lacks the columns {sorted(missing)} (needs n_params, tokens, loss)"
            )
        if "compute" not in df.columns:
            df["compute"] = 6.0 * df["n_params"] * df["tokens"]
        if "run" not in df.columns:
            df["run"] = [f"row{i}" for i in range(len(df))]
        conventions = {"n_params": "as given", "compute": "as given or 6ND", "loss": "loss"}
    df = drop_bad_rows(df.reset_index(drop=True), ["n_params", "tokens", "compute", "loss"])
    if df.empty:
        raise ValueError(f"no usable runs in {path}")
    df = df.sort_values(["n_params", "tokens"]).reset_index(drop=True)
    df.attrs["conventions"] = conventions
    df.attrs["source"] = str(path)
    return df


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"unsupported file type {suffix!r} for {path}: use .csv, .jsonl or .parquet")


def drop_bad_rows(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Drop rows where any of ``columns`` is NaN, infinite, zero or negative, warning with
    the rows' names."""
    values = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0)).all(axis=1)
    if bad.any():
        names = df.loc[bad, "run"].astype(str).tolist() if "run" in df else df.index[bad].tolist()
        shown = ", ".join(map(str, names[:10])) + (" ..." if len(names) > 10 else "")
        warnings.warn(
            f"dropped {int(bad.sum())} row(s) with NaN, infinite, zero or negative "
            f"{'/'.join(columns)}: {shown}",
            stacklevel=2,
        )
    out = df.loc[~bad].copy()
    for c in columns:
        out[c] = out[c].astype(float)
    return out


def format_value(x: float) -> str:
    """A fitted quantity for tables: 1.23M for large values, 4 significant digits otherwise."""
    return format_si(x) if abs(x) >= 1e4 else f"{x:.4g}"

"""Read training runs into a DataFrame with the counting convention chosen explicitly.

Sources: a sweep directory (every ``result.json`` below it), the table a sweep writes
(``runs.csv`` or ``runs.parquet``: read as its records are), or any CSV / JSONL / Parquet
file with at least the columns ``n_params, tokens, loss`` under their usual names
(``compute`` optional; 6·N·D when absent).
The returned frame always has ``n_params``, ``tokens``, ``compute`` and ``loss``; which
N, which C and which loss they hold is in ``df.attrs["conventions"]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lab.config.record import (  # the record schema, shared with the lab that writes the records
    C_CONVENTIONS,
    DEFAULT_C_CONVENTION,
    DEFAULT_LOSS,
    DEFAULT_N_CONVENTION,
    LOSSES,
    N_CONVENTIONS,
    RECORD_NAME,
    SWEEP_TABLE,
    format_si,
)
from lab.runs.files import read_jsonl
from lab.runs.records import read_records


def load_runs(
    path: str | Path,
    n_convention: str = DEFAULT_N_CONVENTION,
    compute_convention: str = DEFAULT_C_CONVENTION,
    loss: str = DEFAULT_LOSS,
    config_keys: tuple[str, ...] = (),
    all_runs: bool = False,
    keep_duplicates: bool = False,
    where: str | None = None,
    drop_highest: int = 0,
    columns: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Finished runs as a frame with ``n_params, tokens, compute, loss`` under the chosen
    conventions (see module doc), plus a column per dotted config key of ``config_keys``
    (a sweep folder; a table file must have columns of those names). Rows with a NaN,
    infinite, zero or negative value are dropped with a warning naming them. Where runs at
    one (N, D) differ in a hyperparameter (optim.lr, or any other; seeds are repeats, not
    settings), only the best setting's runs are kept (``keep_best_setting``) unless
    ``all_runs``; ``df.attrs["selection"]`` says what was dropped. A row that repeats
    another exactly (the same N, D, C, loss and settings: a copied folder, a table pasted
    twice) is dropped with a warning unless ``keep_duplicates``: it is not a second run.

    Cleaning a researcher states, kept in ``df.attrs["filters"]``: ``where``, a row filter
    (a pandas query over the table's or the records' columns, e.g. ``"epochs <= 2.5"`` or
    ``"dataset == 'rpj'"``; a table's columns also by the lab's names, ``n_params`` ...);
    ``drop_highest``, the K runs of highest loss left out (Besiroglu et al. 2024's filter of
    the Chinchilla runs: 5); ``columns``, a table's columns named explicitly
    (``{"loss": "loss_c4_val"}``), beside the usual aliases.

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
    path, chosen = Path(path), (n_convention, compute_convention, loss)
    if not path.exists():
        raise FileNotFoundError(f"no such sweep directory or file: {path}")
    table = None if path.is_dir() else read_table(path)
    if table is None or is_lab_table(table):  # a sweep folder, or the table it writes
        raw = read_runs_table(path, config_keys, table)
        raw = _where(raw, where, path)
        df, conventions = _from_records(raw, path, chosen, config_keys)
    else:
        df = _from_table(table, path, config_keys, columns or {})
        df, conventions = _where(df, where, path), TABLE_CONVENTIONS
    refuse_wrong_types(df, path, ["n_params", "tokens", "compute", "loss"])
    df = drop_bad_rows(df.reset_index(drop=True), ["n_params", "tokens", "compute", "loss"])
    if df.empty:
        raise ValueError(f"no usable runs in {path}")
    refuse_implausible(df, path)
    if not keep_duplicates:
        df = drop_duplicates(df)
    filters = {"where": where, "drop_highest": int(drop_highest), "rows": len(df)}
    if drop_highest:
        df, filters["dropped_highest"] = _drop_highest(df, int(drop_highest), path)
    df = df.sort_values(["n_params", "tokens"]).reset_index(drop=True)
    selection = None
    if "hparams" in df and not all_runs:
        df, selection = keep_best_setting(df)
    df.attrs["selection"] = selection
    filters["kept"] = len(df)
    df.attrs["filters"] = filters if (where or drop_highest) else None
    df.attrs["conventions"] = conventions
    df.attrs["source"] = str(path)
    return df


TABLE_CONVENTIONS = {"n_params": "as given", "compute": "as given or 6ND", "loss": "loss"}
# the lab's table names these config keys' columns without their section
TABLE_CONFIG_COLUMNS = {
    "model.name": "model",
    "model.mixer": "mixer",
    "model.parametrization": "parametrization",
    "optim.lr": "lr",
    "train.seed": "seed",
}


def is_lab_table(table: pd.DataFrame) -> bool:
    """Whether a table is the lab's own (``runs.csv`` / ``runs.parquet``, one row a record)."""
    return {"status", "tokens", *N_CONVENTIONS.values(), *C_CONVENTIONS.values()} <= set(
        table.columns
    )


def read_runs_table(
    path: str | Path, config_keys: tuple[str, ...] = (), table: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every run (any status) of a sweep folder, or of the table a sweep writes
    (``runs.csv``, ``runs.parquet``), one row a run as ``read_records`` gives them, with a
    column per dotted key of ``config_keys``. ``table``: the file, already read. Raises
    FileNotFoundError for a missing path, ValueError for a folder without records or a
    file that is not the lab's table."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such sweep directory or file: {path}")
    if path.is_dir():
        raw = read_records(path, tuple(config_keys))
        if raw.empty:
            raise ValueError(f"no {RECORD_NAME} records under {path}")
        return raw
    table = read_table(path) if table is None else table
    if not is_lab_table(table):
        raise ValueError(
            f"{path} is not a table of the lab's runs ({SWEEP_TABLE} or its .parquet: one "
            "row a record); give its sweep folder, or a table for lab-analyze fit"
        )
    return _with_config_keys(table, path, config_keys)


def _with_config_keys(table: pd.DataFrame, path: Path, config_keys) -> pd.DataFrame:
    """The lab's table with a column per dotted config key (from the column of the same
    name, or the table's short column for it: ``model.mixer`` is ``mixer``)."""
    table = table.copy()
    for key in config_keys:
        if key in table.columns:
            continue
        if TABLE_CONFIG_COLUMNS.get(key) in table.columns:
            table[key] = table[TABLE_CONFIG_COLUMNS[key]]
        else:
            raise ValueError(
                f"{path} has no column for {key!r}; give the sweep folder instead (its "
                "records hold every config key)"
            )
    return table


def _from_records(raw: pd.DataFrame, path: Path, conventions: tuple, config_keys) -> tuple:
    """Finished runs of a records table (``read_records``, or the sweep's table) under the
    chosen conventions (N, C, loss), and the conventions."""
    n_convention, compute_convention, loss = conventions
    raw = raw[raw["status"] == "ok"]
    for option, column in (("--compute", C_CONVENTIONS[compute_convention]),):
        if len(raw) and raw[column].isna().all():
            raise ValueError(
                f"{option} {compute_convention}: no finished run under {path} records "
                f"{column} (records written before it existed); choose another convention"
            )
    if len(raw) and raw[loss].isna().all():
        raise ValueError(
            f"--loss {loss}: no finished run under {path} has it (records written before "
            "bits per byte existed, or runs on pre-tokenized data, have no *_bpb)"
        )
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
    df["hparams"] = raw["hparams"]
    for key in config_keys:
        df[key] = raw[key]
    if raw["budget"].notna().any():  # an IsoFLOP sweep: runs grouped by their budget
        df["budget"] = raw["budget"]
    se = raw.get(f"{loss}_se")  # the final evaluation's standard error, when recorded
    if se is not None and se.notna().all():
        df["loss_se"] = se.astype(float)
    for column in ("unique_tokens", "epochs"):  # repeated data (epochs > 1)
        if raw[column].notna().all():
            df[column] = raw[column].astype(float)
    return df, {"n_params": n_convention, "compute": compute_convention, "loss": loss}


def _where(df: pd.DataFrame, where: str | None, path) -> pd.DataFrame:
    """The rows for which ``where`` holds (a pandas query). Raises ValueError naming the
    expression when it cannot be evaluated or keeps no row."""
    if not where:
        return df
    try:
        kept = df.query(where, engine="python")
    except Exception as e:  # a query's failures are of many kinds; each is the user's input
        names = ", ".join(map(str, df.columns[:30]))
        raise ValueError(
            f"--where {where!r} cannot be evaluated on {path} ({type(e).__name__}: {e}); its "
            f"columns are {names}"
        ) from None
    if not isinstance(kept, pd.DataFrame):
        raise ValueError(f"--where {where!r} is not a condition on the rows of {path}")
    if kept.empty:
        raise ValueError(f"--where {where!r} keeps none of the {len(df)} rows of {path}")
    return kept


def _drop_highest(df: pd.DataFrame, k: int, path) -> tuple[pd.DataFrame, list]:
    """``df`` without its ``k`` highest-loss rows, and those rows' names and losses."""
    if k < 0:
        raise ValueError(f"--drop-highest must be >= 0, got {k}")
    if k >= len(df):
        raise ValueError(f"--drop-highest {k} would leave none of the {len(df)} runs of {path}")
    worst = df.nlargest(k, "loss")
    dropped = [{"run": str(r["run"]), "loss": float(r["loss"])} for _, r in worst.iterrows()]
    return df.drop(index=worst.index), dropped


def _from_table(
    table: pd.DataFrame, path: Path, config_keys, columns: dict[str, str] | None = None
) -> pd.DataFrame:
    """Runs of a published or hand-made table: ``n_params``, ``tokens`` (or ``compute``)
    and ``loss`` under any of their usual names, or the names ``columns`` gives (lab name
    → the table's column). The table's own columns stay beside the lab's names."""
    columns = columns or {}
    absent = [c for c in columns.values() if c not in table.columns]
    if absent:
        raise ValueError(
            f"{path} has no column {absent[0]!r} (it has {', '.join(map(str, table.columns))})"
        )
    table = table.copy()
    for name, column in columns.items():
        table[name] = table[column]
    df = _standard_columns(table)
    if "tokens" not in df.columns and {"n_params", "compute"} <= set(df.columns):
        n, c = (pd.to_numeric(df[k], errors="coerce") for k in ("n_params", "compute"))
        df["tokens"] = c / (6.0 * n)  # C = 6ND, the convention published tables use
    missing = {"n_params", "tokens", "loss"} - set(df.columns)
    if missing:
        raise ValueError(
            f"{path} lacks the columns {sorted(missing)} (needs n_params, tokens or "
            f"compute, and loss; it has {', '.join(map(str, df.columns))})"
        )
    if "compute" not in df.columns:
        n, d = (pd.to_numeric(df[c], errors="coerce") for c in ("n_params", "tokens"))
        df["compute"] = 6.0 * n * d  # a row whose N or D is not a number is dropped below
    if "run" not in df.columns:
        df["run"] = [f"row{i}" for i in range(len(df))]
    absent = [k for k in config_keys if k not in df.columns]
    if absent:
        raise ValueError(
            f"{path} has no column {absent[0]!r} (it has {', '.join(map(str, df.columns))})"
        )
    if "unique_tokens" in df.columns and "epochs" not in df.columns:
        df["epochs"] = pd.to_numeric(df["tokens"], errors="coerce") / pd.to_numeric(
            df["unique_tokens"], errors="coerce"
        )
    return df


def keep_best_setting(df: pd.DataFrame) -> tuple[pd.DataFrame, dict | None]:
    """At each (N, D) where the runs come from more than one setting (``hparams``: the
    config without its seed), keep the runs of the setting with the lowest mean loss: a
    scaling fit through every rate of an lr sweep at once would mix well- and badly-tuned
    runs (Porian et al. 2024). Returns the kept runs and what was dropped (None when
    nothing was)."""
    dropped, groups = [], 0
    keep = pd.Series(True, index=df.index)
    for _, g in df.groupby(["n_params", "tokens"]):
        if g["hparams"].nunique() < 2:
            continue
        groups += 1
        best = g.groupby("hparams")["loss"].mean().idxmin()
        lose = g.index[g["hparams"] != best]
        keep[lose] = False
        dropped += df.loc[lose, "run"].astype(str).tolist()
    if not dropped:
        return df, None
    text = (
        f"kept the best setting at each of {groups} (N, D) point(s) where runs differ in a "
        f"hyperparameter (e.g. optim.lr): dropped {len(dropped)} of {len(df)} runs "
        "(--all-runs keeps them)"
    )
    kept = df[keep].reset_index(drop=True)
    return kept, {"groups": groups, "dropped": dropped, "kept": len(kept), "text": text}


# Other names published tables give the columns (case and spaces ignored).
COLUMN_ALIASES = {
    "n_params": (
        "n",
        "params",
        "parameters",
        "model_size",
        "model size",
        "num_params",
        "non_embedding_params",
    ),
    "tokens": ("d", "data", "training_tokens", "training tokens", "num_tokens", "dataset_size"),
    "compute": ("c", "flops", "training_flop", "training flop", "training_flops", "c_6nd"),
    "budget": ("compute_budget", "isoflop_budget", "flop_budget", "budget_flops"),
    "loss": ("l", "final_loss", "val_loss", "validation_loss", "eval_loss", "loss_final"),
    "unique_tokens": ("u", "unique", "unique_data", "u_d"),
    "run": ("name", "run_name", "model_name", "run_id"),
}


def _standard_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the lab's name beside each aliased column (``Model Size``, ``Training
    FLOP``, ``final_loss``, ``L``, ...), unless the lab's name is already there."""
    df = df.copy()
    for name, aliases in COLUMN_ALIASES.items():
        if name in df.columns:
            continue
        for column in df.columns:
            if str(column).strip().lower().replace("-", "_") in aliases:
                df[name] = df[column]
                break
    return df


def read_table(path: Path) -> pd.DataFrame:
    """The table in ``path``. Raises ValueError naming the file when it is empty, has no
    rows, or cannot be parsed."""
    suffix = path.suffix.lower()
    readers = {
        ".csv": pd.read_csv,
        ".jsonl": _read_jsonl_table,
        ".ndjson": _read_jsonl_table,
        ".parquet": pd.read_parquet,
    }
    if suffix not in readers:
        raise ValueError(
            f"unsupported file type {suffix!r} for {path}: use .csv, .jsonl or .parquet"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    try:
        df = readers[suffix](path)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise ValueError(f"{path} could not be read as {suffix[1:]}: {e}") from e
    if df.empty:
        raise ValueError(f"{path} has no rows")
    return df


def _read_jsonl_table(path: Path) -> pd.DataFrame:
    """A JSON-lines table, one object a line; a line that is not one (a torn write) is
    skipped with a warning giving its number."""
    rows, torn = read_jsonl(path)
    if torn:
        warnings.warn(
            f"{path}: line(s) {', '.join(map(str, torn))} are not JSON objects; skipped",
            stacklevel=3,
        )
    return pd.DataFrame(rows)


# Larger than any training run (N, D, C) or any loss in nats or bits (loss): a unit or
# column mix-up, not a run; it would overflow the fits.
PLAUSIBLE_BELOW = {"n_params": 1e16, "tokens": 1e18, "compute": 1e32, "loss": 1e4}


def refuse_wrong_types(df: pd.DataFrame, path, columns: list[str]) -> None:
    """ValueError naming a column of dates, durations or booleans where numbers belong (a
    column of numbers with a few non-numbers is left to ``drop_bad_rows``)."""
    for column in columns:
        kind = df[column].dtype
        if pd.api.types.is_datetime64_any_dtype(kind) or pd.api.types.is_timedelta64_dtype(kind):
            raise ValueError(f"{path}: column {column!r} holds {kind} values, not numbers")
        if pd.api.types.is_bool_dtype(kind):
            raise ValueError(f"{path}: column {column!r} holds true/false values, not numbers")


def refuse_implausible(df: pd.DataFrame, path) -> None:
    """ValueError naming the first column with a value no run has (``PLAUSIBLE_BELOW``)."""
    for column, limit in PLAUSIBLE_BELOW.items():
        bad = df[df[column] >= limit]
        if len(bad):
            row = bad.iloc[0]
            raise ValueError(
                f"{path}: {column} = {row[column]:.3g} in row {row.get('run', bad.index[0])} "
                f"is not a plausible value (at least {limit:.0e}); fix the table or drop the row"
            )


def drop_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """The runs without rows that repeat an earlier one in every column but its name,
    with a warning naming them."""
    columns = [c for c in df.columns if c not in ("run", "run_dir")]
    repeated = df.duplicated(subset=columns, keep="first")
    if not repeated.any():
        return df
    names = df.loc[repeated, "run"].astype(str).tolist() if "run" in df else []
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    warnings.warn(
        f"dropped {int(repeated.sum())} row(s) repeating another row exactly ({shown}): a "
        "repeat is not a second run (--keep-duplicates keeps them)",
        stacklevel=3,
    )
    return df[~repeated].reset_index(drop=True)


def drop_bad_rows(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Drop rows where any of ``columns`` is NaN, infinite, zero or negative, warning with
    the rows' names."""
    numeric = df[columns].apply(pd.to_numeric, errors="coerce")
    not_numbers = numeric.isna() & df[columns].notna()
    for column in columns:
        rows = not_numbers.index[not_numbers[column]]
        if len(rows):
            names = df.loc[rows, "run"].astype(str).tolist() if "run" in df else list(rows)
            shown = ", ".join(f"{n}: {df.loc[r, column]!r}" for n, r in zip(names[:5], rows[:5]))
            warnings.warn(
                f"dropped {len(rows)} row(s) whose {column} is not a number ({shown})",
                stacklevel=2,
            )
    values = numeric.to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0)).all(axis=1)
    bad &= ~not_numbers.any(axis=1).to_numpy()  # reported above
    values_ok = ~not_numbers.any(axis=1).to_numpy()
    if bad.any():
        names = df.loc[bad, "run"].astype(str).tolist() if "run" in df else df.index[bad].tolist()
        shown = ", ".join(map(str, names[:10])) + (" ..." if len(names) > 10 else "")
        warnings.warn(
            f"dropped {int(bad.sum())} row(s) with NaN, infinite, zero or negative "
            f"{'/'.join(columns)}: {shown}",
            stacklevel=2,
        )
    out = df.loc[~bad & values_ok].copy()
    for c in columns:
        out[c] = out[c].astype(float)
    return out


def format_value(x: float) -> str:
    """A fitted quantity for tables: 1.23M for large values, 4 significant digits otherwise."""
    return format_si(x) if abs(x) >= 1e4 else f"{x:.4g}"

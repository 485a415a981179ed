"""Result records: one JSON file per run, written atomically, plus the facts that make a
run reproducible (package versions, git commit of the lab)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from lab.config.record import ADDED_FIELDS, RECORD_NAME, TABLE_COLUMNS, canonical_config


def atomic_temp(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` (same filesystem, so a rename replaces ``path``
    atomically), with the permissions a plain ``open`` would give it under the process's
    umask (mkstemp's own are 0600: teammates on a shared sweep folder could not read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temporary file beside ``path``, synced, then renamed over
    ``path``: a reader (or a killed run) never sees half a file, and a failed write leaves
    nothing behind. Every file the lab writes whole goes through here."""
    fd, tmp = atomic_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as JSON, written atomically (``write_atomic``)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    write_atomic(path, lambda f: f.write(text.encode()))


def write_csv_atomic(path: Path, table: pd.DataFrame) -> None:
    """``table.to_csv`` (or ``to_parquet`` for a ``.parquet`` path, with typed columns),
    written atomically (two sweeps ending at once on one folder each leave a whole table)."""
    if path.suffix == ".parquet":
        write_atomic(path, lambda f: typed_table(table).to_parquet(f, index=False))
    else:
        write_atomic(path, lambda f: f.write(table.to_csv(index=False).encode()))


TEXT_COLUMNS = (
    "run",
    "status",
    "model",
    "mixer",
    "parametrization",
    "config_hash",
    "hparams",
    "hparams_but_lr",
    "error",
    "run_dir",
)


def typed_table(table: pd.DataFrame) -> pd.DataFrame:
    """The runs table with a type per column: text as strings, every other column numeric
    (float, NaN where a run has no value)."""
    out = table.copy()
    for column in out.columns:
        if column in TEXT_COLUMNS:
            out[column] = out[column].astype("string")
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    return out


def read_record(run_dir: Path) -> dict | None:
    """The run's record, or None when it has none, or one that is unreadable (not JSON, not
    a JSON object, or not ours to read)."""
    path = Path(run_dir) / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def find_records(root: str | Path) -> list[Path]:
    """Every record file under ``root``, in path order."""
    return sorted(Path(root).rglob(RECORD_NAME))


def config_value(config: dict | None, key: str):
    """The value of a dotted config key ("model.mixer") in a record's config; for a field
    added after the record was written, the value that kept the old behaviour
    (``lab.config.record.ADDED_FIELDS``); None for a key the record does not have."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ADDED_FIELDS.get(key)
        node = node[part]
    return node


def hparams_digest(config: dict | None, drop: tuple[str, ...] = ()) -> str | None:
    """A short digest of a record's config without the seed, the fields that do not change
    a run's result (``HASH_EXCLUDED``), the fields ``drop`` names, and fields added after
    records existed when they hold their old-behaviour value (so old and new records of one
    setting agree). None without a config."""
    if not isinstance(config, dict):
        return None
    d = canonical_config(config, ("train.seed", *drop))
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def read_records(root: str | Path, config_keys: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every run record under ``root`` (any status) as one flat row per run, with a column
    per dotted key of ``config_keys`` (``config_value``) after the table's columns."""
    rows = []
    for path in find_records(root):
        rec = read_record(path.parent)
        if rec is None:
            warnings.warn(f"unreadable record skipped: {path}", stacklevel=2)
            continue
        row = {k: rec.get(k) for k in TABLE_COLUMNS}
        row["run"] = path.parent.relative_to(root).as_posix() if path.parent != Path(root) else "."
        config = rec.get("config")
        model = config.get("model") if isinstance(config, dict) else None
        row["model"] = model.get("name") if isinstance(model, dict) else None
        row["mixer"] = config_value(config, "model.mixer")
        row["parametrization"] = config_value(config, "model.parametrization")
        row["lr"] = config_value(config, "optim.lr")  # with optim.lr_law: the rate it gave
        row["seed"] = config_value(config, "train.seed")
        row["hparams"] = hparams_digest(config)
        row["hparams_but_lr"] = hparams_digest(config, ("optim.lr", "optim.lr_law"))
        row["run_dir"] = str(path.parent)
        for key in config_keys:
            row[key] = config_value(config, key)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, *config_keys])

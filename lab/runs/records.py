"""Reading result records back: one run's (``read_record``), every run under a folder as
one table (``read_records``), and the config values and digests the table is built from.
They are written by ``lab.runs.files.write_json_atomic``."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from lab.config.record import ADDED_FIELDS, RECORD_NAME, TABLE_COLUMNS, canonical_config

if TYPE_CHECKING:
    import pandas as pd


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
    import pandas as pd

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

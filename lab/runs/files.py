"""How the lab writes and reads the files of a run folder, safely on a shared folder:

- every file written whole (records, checkpoints, tables, figures) goes through a temporary
  file beside it and a rename (``write_atomic``): a reader, or a killed run, never sees
  half a file, and the rename replaces a symbolic link planted at the name, never the
  file it points to;
- the one file appended to, ``metrics.jsonl``, is opened with ``O_NOFOLLOW``
  (``open_append``), and ``read_jsonl`` drops a torn last line (what a crash or a full
  disk mid-write leaves) with the line's number, instead of failing;
- ``refuse_links``: a run folder whose files are links is refused in one line.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import pandas as pd



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


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` (UTF-8), written atomically (``write_atomic``)."""
    data = text.encode()
    write_atomic(path, lambda f: f.write(data))


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
    import pandas as pd

    out = table.copy()
    for column in out.columns:
        if column in TEXT_COLUMNS:
            out[column] = out[column].astype("string")
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    return out


def open_append(path: Path):
    """``path`` opened to append text (created with the umask's mode), never through a
    symbolic link: one there is an OSError naming it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"{path} is a symbolic link; the lab writes through none", str(path)) from None
        raise
    return os.fdopen(fd, "a")


def write_empty(path: Path) -> None:
    """Start ``path`` empty (atomically: a link at the name is replaced, not followed)."""
    write_atomic(path, lambda f: None)


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """The rows of a JSON-lines file, and the numbers of the lines that are not a JSON
    object (a torn write), which are left out."""
    rows, bad = [], []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(number)
    return rows, bad


# What the lab writes in a run folder: none of them may be a link it did not make.
RUN_FILES = (
    "result.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "checkpoint.dcp",
    ".lock",
    "snapshot.pt",
    "tensorboard",
)


def refuse_links(folder: Path) -> None:
    """ValueError naming the first of the run folder's files (and its branch folders') that
    is a symbolic link: the lab would write through it."""
    folders = [folder, *(p for p in folder.glob("branch_D=*"))] if folder.is_dir() else []
    for f in folders:
        if f != folder and f.is_symlink():
            raise ValueError(f"{f} is a symbolic link; the lab writes no run file through one")
        for name in RUN_FILES:
            if (f / name).is_symlink():
                raise ValueError(
                    f"{f / name} is a symbolic link; the lab writes no run file through one "
                    "(remove it, or train in another folder)"
                )

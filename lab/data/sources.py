"""Where text comes from: documents streamed from the embedded default corpus or a user's
files, never loaded whole.

``data.path`` may be:
- nothing: the Python standard library's ``.py`` files (sorted paths), the default corpus;
- a text file (cut into documents of about 16 KB at line ends), a folder (every file a
  document), or a glob (``'~/books/*.txt'``);
- ``.jsonl`` / ``.ndjson``, ``.parquet`` or ``.arrow`` files (or folders or globs of them):
  one document per record, its text in ``data.text_field``. A folder holding any of these
  is read for them only (a dataset snapshot's README and licence are not text to train on);
- a Hugging Face dataset saved with ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``),
  read through the ``datasets`` library (the ``datasets`` extra), as are ``.arrow`` files.
  A ``DatasetDict`` with a ``train`` split and a ``validation`` (or ``valid``, ``val``,
  ``test``) split keeps its split; otherwise documents are held out by the hash rule;
- pre-tokenized ``.bin`` token files in nanoGPT's layout (a folder with ``train.bin`` and
  ``val.bin``, or one ``.bin`` file), read through a memory map (see ``lab.data.corpus``).

Binary and non-UTF-8 files, and JSONL lines that are not JSON objects with a text field, are
skipped and counted; a corpus whose bytes were mostly skipped is an error naming the share
(``MAX_SKIPPED_SHARE``). ``data.max_bytes`` caps the text read (0: no cap).
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
import stat
import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("lab.data")

SINGLE_FILE_DOC_BYTES = 16_384
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".parquet", ".arrow"}
BATCH_ROWS = 4096
MAX_SKIPPED_SHARE = 0.5  # more of the bytes read skipped than this: not a text corpus
VALIDATION_SPLITS = ("validation", "valid", "val", "test")  # a DatasetDict's held-out split
DATASETS_EXTRA = "pip install -e '.[datasets]'"


def is_validation(name: str, val_fraction: float) -> bool:
    """The split rule: a document is held out when a hash of its name falls below the
    fraction. Stable across runs, machines and corpus growth."""
    return zlib.crc32(name.encode()) % 10_000 < val_fraction * 10_000


def is_dataset_folder(path: Path) -> bool:
    """A folder ``datasets``' ``save_to_disk`` wrote: a DatasetDict or a Dataset."""
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "data.path: reading a Hugging Face dataset needs the datasets library: "
            + DATASETS_EXTRA
        ) from None
    datasets.disable_progress_bars()
    return datasets


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's .py files in sorted relative-path order (no site-packages)."""
    root = stdlib_root()
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in ("site-packages", "dist-packages")]
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _is_text(data: bytes, cut: bool = False) -> bool:
    """UTF-8 without NUL bytes; ``cut``: ``data`` is a file's first bytes, so a character
    the cut split at the end does not count against it."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return cut and e.reason == "unexpected end of data" and e.start >= len(data) - 3
    return True


def _read(path: Path, limit: int | None) -> bytes:
    """A file's bytes, at most ``limit`` of them: data.max_bytes bounds what is read, not
    only what is kept (a 400 MB file under a 4 MB cap reads 4 MB)."""
    with open(path, "rb") as f:
        return f.read() if limit is None else f.read(limit)


class TextSource:
    """Documents from files: each text file whole (or cut, for a single file), each record of
    a JSONL / Parquet file. ``documents()`` can be iterated more than once."""

    def __init__(
        self,
        files: list[Path],
        root: Path,
        description: str,
        max_bytes: int,
        text_field: str = "text",
        split_single: bool = False,
    ):
        self.files, self.root, self.description = files, root, description
        self.max_bytes, self.text_field, self.split_single = max_bytes, text_field, split_single
        self.skipped: list[str] = []
        self.skipped_bytes = 0  # of the bytes read, those skipped (binary, bad records)
        self.held_out_split: str | None = None  # a DatasetDict's validation split, once seen
        self._left: int | None = None  # bytes still to read under max_bytes

    def held_out(self, name: str, val_fraction: float) -> bool:
        """Whether the document ``name`` is for validation: a dataset's own validation
        split when it has one, else the hash rule."""
        if self.held_out_split is not None:
            return name.startswith(self.held_out_split + "#")
        return is_validation(name, val_fraction)

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path != self.root else path.name

    def documents(self) -> Iterator[tuple[str, bytes]]:
        """(name, UTF-8 bytes) for every document, in a fixed order, up to max_bytes."""
        self.skipped, self.skipped_bytes = [], 0
        total = 0
        for path in self.files:
            self._left = self.max_bytes - total if self.max_bytes else None
            for name, data in self._file_documents(path):
                if self.max_bytes and total >= self.max_bytes:
                    return
                if self.max_bytes:
                    data = data[: self.max_bytes - total]
                total += len(data)
                yield name, data

    def _file_documents(self, path: Path) -> Iterator[tuple[str, bytes]]:
        suffix = path.suffix.lower()
        name = self._name(path)
        if path.is_dir():  # a dataset save_to_disk wrote
            yield from self._dataset_folder(path)
        elif suffix in (".jsonl", ".ndjson"):
            yield from self._jsonl(path, name)
        elif suffix == ".parquet":
            yield from self._parquet(path, name)
        elif suffix == ".arrow":
            yield from self._rows(_datasets().Dataset.from_file(str(path)), name, path)
        else:
            data = _read(path, self._left)
            if not _is_text(data, cut=self._left is not None and len(data) == self._left):
                self.skipped.append(name)
                self.skipped_bytes += len(data)
            elif data.strip():
                yield from (_cut(name, data) if self.split_single else [(name, data)])

    def _jsonl(self, path: Path, name: str) -> Iterator[tuple[str, bytes]]:
        with open(path, "rb") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    self.skipped.append(f"{name}#L{i + 1}")
                    self.skipped_bytes += len(line)
                    continue
                if not isinstance(record, dict) or self.text_field not in record:
                    if i == 0:
                        raise ValueError(
                            f"data.text_field: {self.text_field!r} is not a field of the records in {path}"
                        )
                    self.skipped.append(f"{name}#L{i + 1}")
                    self.skipped_bytes += len(line)
                    continue
                text = record[self.text_field]
                if isinstance(text, str) and text.strip():
                    yield f"{name}#L{i + 1}", text.encode("utf-8")

    def _parquet(self, path: Path, name: str) -> Iterator[tuple[str, bytes]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        self._require_column(pf.schema_arrow.names, path)
        batches = pf.iter_batches(batch_size=BATCH_ROWS, columns=[self.text_field])
        yield from _numbered_rows(name, (batch.column(0).to_pylist() for batch in batches))

    def _require_column(self, columns: list[str], path: Path) -> None:
        if self.text_field not in columns:
            raise ValueError(
                f"data.text_field: {self.text_field!r} is not a column of {path} "
                f"(columns: {columns})"
            )

    def _dataset_folder(self, path: Path) -> Iterator[tuple[str, bytes]]:
        """A saved Dataset's rows, or a DatasetDict's, split by split (``train`` first);
        with a validation split beside ``train``, that split is the held-out one."""
        loaded = _datasets().load_from_disk(str(path))
        if not hasattr(loaded, "keys"):  # one Dataset
            yield from self._rows(loaded, "train", path)
            return
        splits = sorted(loaded.keys(), key=lambda k: (k != "train", k))
        held = next((v for v in VALIDATION_SPLITS if v in splits), None)
        if "train" in splits and held is not None:
            self.held_out_split = held
            splits = ["train", held]  # a third split (test beside validation) is left out
        for split in splits:
            yield from self._rows(loaded[split], split, path)

    def _rows(self, dataset, name: str, path: Path) -> Iterator[tuple[str, bytes]]:
        """A ``datasets.Dataset``'s rows, its text in ``data.text_field``."""
        self._require_column(dataset.column_names, path)
        batches = dataset.select_columns([self.text_field]).iter(batch_size=BATCH_ROWS)
        yield from _numbered_rows(name, (batch[self.text_field] for batch in batches))


def _numbered_rows(name: str, batches) -> Iterator[tuple[str, bytes]]:
    """(``name#R<row>``, UTF-8 bytes) for each non-blank text of batches of a column's
    values, rows numbered from 1 over all batches (a Parquet file's, a dataset's)."""
    row = 0
    for texts in batches:
        for text in texts:
            row += 1
            if isinstance(text, str) and text.strip():
                yield f"{name}#R{row}", text.encode("utf-8")


def _cut(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """Cut one file into documents of about SINGLE_FILE_DOC_BYTES at line ends."""
    start, i = 0, 0
    while start < len(data):
        end = data.find(b"\n", start + SINGLE_FILE_DOC_BYTES)
        end = len(data) if end < 0 else end + 1
        yield f"{name}#{i}", data[start:end]
        start, i = end, i + 1


class BinSource:
    """Pre-tokenized token ids (nanoGPT's layout): train.bin and val.bin, or one file whose
    last val_fraction of tokens is held out (a token stream has no documents to split)."""

    def __init__(self, train: Path, val: Path | None, description: str):
        self.train, self.val, self.description = train, val, description
        self.skipped: list[str] = []


def open_source(path: str | None, max_bytes: int, text_field: str = "text"):
    """The source ``data.path`` names. Raises FileNotFoundError for a path (or a glob) that
    matches nothing."""
    if path is None:
        root = stdlib_root()
        return TextSource(stdlib_files(), root, f"python-stdlib:{root}", max_bytes)
    expanded = os.path.expanduser(path)
    if any(c in expanded for c in "*?["):
        files = sorted(Path(p) for p in globlib.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"data.path: the glob {path!r} matches no file")
        if all(f.suffix == ".bin" for f in files):
            return _bin_source(files)
        root = Path(os.path.commonpath([str(f.parent) for f in files]))
        return TextSource(files, root, f"glob:{expanded}", max_bytes, text_field)
    p = Path(expanded)
    if not p.exists():
        raise FileNotFoundError(f"data.path does not exist: {path}")
    if not (p.is_dir() or p.is_file()):  # a FIFO blocks, a device never ends
        kind = "FIFO" if stat.S_ISFIFO(p.stat().st_mode) else "device or socket"
        raise ValueError(f"data.path: {path} is a {kind}, not a file or folder of text")
    if p.is_dir():
        if (p / "train.bin").exists():
            return BinSource(
                p / "train.bin",
                p / "val.bin" if (p / "val.bin").exists() else None,
                str(p.resolve()),
            )
        if is_dataset_folder(p):
            return TextSource([p], p, f"dataset:{p.resolve()}", max_bytes, text_field)
        files = sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.as_posix())
        return TextSource(_record_files(files, p), p, str(p.resolve()), max_bytes, text_field)
    if p.suffix == ".bin":
        return _bin_source([p])
    single_text = p.suffix.lower() not in RECORD_SUFFIXES
    return TextSource([p], p, str(p.resolve()), max_bytes, text_field, split_single=single_text)


def _record_files(files: list[Path], folder: Path) -> list[Path]:
    """A folder's files to read: its record files (JSONL, Parquet, Arrow) alone when it has
    any (a dataset snapshot's README and licence left out, in one warning), else all;
    datasets' own metadata (state.json, dataset_info.json) never."""
    records = [f for f in files if f.suffix.lower() in RECORD_SUFFIXES]
    if not records:
        return files
    others = [f.relative_to(folder).as_posix() for f in files if f not in set(records)]
    shown = [o for o in others if Path(o).name not in ("state.json", "dataset_info.json")]
    if shown:
        log.warning(
            "data.path: %s holds record files (%d); reading those only, %d other files left "
            "out: %s",
            folder,
            len(records),
            len(shown),
            ", ".join(shown[:5]) + (" ..." if len(shown) > 5 else ""),
        )
    return records


def _bin_source(files: list[Path]) -> BinSource:
    names = {f.name: f for f in files}
    if "train.bin" in names:
        return BinSource(
            names["train.bin"], names.get("val.bin"), str(names["train.bin"].parent.resolve())
        )
    if len(files) > 1:
        raise ValueError(
            f"data.path: several .bin files and no train.bin among them: {[f.name for f in files]}"
        )
    return BinSource(files[0], None, str(files[0].resolve()))

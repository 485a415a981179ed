"""Corpora, the byte tokenizer, the train/validation split and batches.

The embedded default corpus is text every Python installation carries: the standard
library's ``.py`` files, taken in sorted path order up to a byte budget. A user's text
file or folder (``data.path``) replaces it. Documents (files; for a single file, blocks of
lines) go wholly to train or to validation by a hash of their name, so the split is
stable across runs and machines and no document is on both sides. A content hash of
what was read goes into every result record, so runs on different machines (different
Python versions ship different standard libraries) can be told apart.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lab.config import DataConfig

SINGLE_FILE_DOC_BYTES = 16_384  # a single text file is cut into documents of about this size


class ByteTokenizer:
    """UTF-8 bytes as tokens 0-255, plus 256 as the end-of-document token."""

    vocab_size = 257
    eot = 256
    name = "bytes"

    def encode(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        raw = bytes(int(i) for i in ids if int(i) < 256)
        return raw.decode("utf-8", errors="replace")


@dataclass
class Corpus:
    """Token streams of the two splits (documents joined by the end-of-document token)."""

    train: np.ndarray
    val: np.ndarray
    content_hash: str
    source: str
    n_bytes: int
    n_docs_train: int
    n_docs_val: int
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "content_hash": self.content_hash,
            "bytes": self.n_bytes,
            "docs_train": self.n_docs_train,
            "docs_val": self.n_docs_val,
            "tokens_train": int(self.train.size),
            "tokens_val": int(self.val.size),
            "skipped_files": len(self.skipped),
        }


def _read_text(path: Path) -> bytes | None:
    """The file's bytes if it is UTF-8 text, else None (binary or another encoding)."""
    data = path.read_bytes()
    if b"\x00" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return data


def stdlib_files() -> list[Path]:
    """The standard library's .py files in sorted relative-path order (no site-packages)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in ("site-packages", "dist-packages")]
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _documents_from_files(
    files: list[Path], root: Path, max_bytes: int
) -> tuple[list[tuple[str, bytes]], list[str]]:
    docs, skipped, total = [], [], 0
    for path in files:
        if total >= max_bytes:
            break
        data = _read_text(path)
        name = path.relative_to(root).as_posix() if path != root else path.name
        if data is None:
            skipped.append(name)
            continue
        if not data.strip():
            continue
        data = data[: max_bytes - total]
        docs.append((name, data))
        total += len(data)
    return docs, skipped


def _split_single_file(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Cut one file into documents of about SINGLE_FILE_DOC_BYTES at line ends."""
    docs, start, i = [], 0, 0
    while start < len(data):
        end = data.find(b"\n", start + SINGLE_FILE_DOC_BYTES)
        end = len(data) if end < 0 else end + 1
        docs.append((f"{name}#{i}", data[start:end]))
        start, i = end, i + 1
    return docs


def read_documents(cfg: DataConfig) -> tuple[list[tuple[str, bytes]], list[str], str]:
    """(documents as (name, bytes), skipped file names, source description).

    Raises FileNotFoundError for a data.path that does not exist and ValueError for a
    corpus with no text in it."""
    if cfg.path is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        docs, skipped = _documents_from_files(stdlib_files(), root, cfg.max_bytes)
        source = f"python-stdlib:{root}"
    else:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data.path does not exist: {cfg.path}")
        if path.is_dir():
            files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.as_posix())
            docs, skipped = _documents_from_files(files, path, cfg.max_bytes)
        else:
            docs, skipped = _documents_from_files([path], path, cfg.max_bytes)
            docs = [d for name, data in docs for d in _split_single_file(name, data)]
        source = str(path.resolve())
    if not docs:
        where = cfg.path or "the standard library"
        raise ValueError(
            f"data.path: no UTF-8 text found in {where}"
            + (f" ({len(skipped)} binary or non-UTF-8 files skipped)" if skipped else "")
        )
    return docs, skipped, source


def is_validation(name: str, val_fraction: float) -> bool:
    """The split rule: a document is held out when a hash of its name falls below the
    fraction. Stable across runs, machines and corpus growth."""
    return zlib.crc32(name.encode()) % 10_000 < val_fraction * 10_000


def _join(docs: list[bytes], tokenizer: ByteTokenizer) -> np.ndarray:
    parts = []
    for data in docs:
        parts.append(tokenizer.encode(data))
        parts.append(np.array([tokenizer.eot], dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def load_corpus(
    cfg: DataConfig, context: int | None = None, tokenizer: ByteTokenizer | None = None
) -> Corpus:
    """Read, hash, split and tokenize the corpus that ``cfg`` names.

    Raises FileNotFoundError (missing data.path) or ValueError (no text, or, when
    ``context`` is given, a split too short for one window: see ``require_context``)."""
    tokenizer = tokenizer or ByteTokenizer()
    docs, skipped, source = read_documents(cfg)
    digest = hashlib.sha256()
    for name, data in docs:
        digest.update(name.encode() + b"\0" + data + b"\0")
    val = [data for name, data in docs if is_validation(name, cfg.val_fraction)]
    train = [data for name, data in docs if not is_validation(name, cfg.val_fraction)]
    if not val and len(train) > 1:  # a tiny corpus: hold out its last document
        val = [train.pop()]
    corpus = Corpus(
        train=_join(train, tokenizer),
        val=_join(val, tokenizer),
        content_hash=digest.hexdigest()[:16],
        source=source,
        n_bytes=sum(len(d) for _, d in docs),
        n_docs_train=len(train),
        n_docs_val=len(val),
        skipped=skipped,
    )
    if context is not None:
        require_context(corpus, context)
    return corpus


def require_context(corpus: Corpus, context: int) -> None:
    """Raise ValueError unless both splits hold one window of context + 1 tokens."""
    for split, tokens in (("train", corpus.train), ("validation", corpus.val)):
        if tokens.size < context + 1:
            raise ValueError(
                f"corpus shorter than the context: the {split} split of {corpus.source} has "
                f"{tokens.size} tokens, model.context={context} needs at least {context + 1}"
            )


def random_batch(
    tokens: np.ndarray, batch_size: int, context: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size windows at random offsets: inputs and next-token targets, (B, T) int64."""
    starts = rng.integers(0, tokens.size - context, size=batch_size)
    return _windows(tokens, starts, context)


def eval_windows(tokens: np.ndarray, n: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n windows at evenly spaced offsets: the same every evaluation and every run."""
    starts = np.linspace(0, tokens.size - context - 1, num=n).astype(np.int64)
    return _windows(tokens, starts, context)


def _windows(tokens: np.ndarray, starts: np.ndarray, context: int):
    idx = starts[:, None] + np.arange(context + 1)[None, :]
    w = torch.from_numpy(tokens[idx].astype(np.int64))
    return w[:, :-1], w[:, 1:]

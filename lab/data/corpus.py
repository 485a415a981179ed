"""Corpora as token streams on disk: split, hashed, tokenized once, memory-mapped.

``load_corpus(cfg)`` reads the documents of ``data.path`` (``lab.data.sources``) in two
streaming passes and never holds the corpus in Python objects:

1. hash: a SHA-256 of every document's name and bytes in order (the record's corpus hash,
   so runs on different machines can be told apart: Python versions ship different standard
   libraries) and the split: a document is held out for validation when a hash of its name
   falls below ``data.val_fraction``, so no document is on both sides and the split is
   stable across runs and corpus growth. A corpus of one document (a small single file)
   has nothing to hold out whole: the last ``val_fraction`` of its tokens is held out;
2. tokenize into ``<cache>/corpora/<hash>-<tokenizer>-<val>/{train,val}.bin`` (uint16, or
   uint32 past 65,536 tokens), each document followed by the end-of-document token, written
   to a temporary folder and renamed into place. Later runs map the same files.

Training windows are sampled from the memory maps (``random_batch``). The cache lives in
``data.cache_dir``, else ``$LAB_CACHE_DIR``, else ``~/.cache/scaling-lab``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lab.config.schema import DataConfig
from lab.data.sources import (
    MAX_SKIPPED_SHARE,
    BinSource,
    TextSource,
    is_validation,
    open_source,
)
from lab.data.tokenizer import ByteTokenizer, IdTokenizer, cached_bpe, load_tokenizer_file

__all__ = ["Corpus", "ByteTokenizer", "is_validation", "load_corpus", "read_documents"]

log = logging.getLogger("lab.data")

ENCODE_BATCH_BYTES = 8_000_000  # documents tokenized per batch (BPE runs a batch in parallel)
HASH_CHUNK = 16 << 20


@dataclass
class Corpus:
    """Token streams of the two splits (memory maps), and what they were made from."""

    train: np.ndarray
    val: np.ndarray
    content_hash: str
    source: str
    n_bytes: int
    n_docs_train: int
    n_docs_val: int
    tokenizer: object = field(default_factory=ByteTokenizer)
    skipped: list[str] = field(default_factory=list)
    max_token_id: int | None = None

    def summary(self) -> dict:
        return {
            "source": self.source,
            "content_hash": self.content_hash,
            "bytes": self.n_bytes,
            "docs_train": self.n_docs_train,
            "docs_val": self.n_docs_val,
            "tokens_train": int(self.train.size),
            "tokens_val": int(self.val.size),
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "skipped_files": len(self.skipped),
            "skipped_examples": self.skipped[:10],
        }


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("LAB_CACHE_DIR") or "~/.cache/scaling-lab"
    return Path(root).expanduser()


def read_documents(cfg: DataConfig) -> tuple[list[tuple[str, bytes]], list[str], str]:
    """Every document in memory, (name, bytes): for small corpora and tests only."""
    src = _text_source(cfg)
    docs = list(src.documents())
    return docs, src.skipped, src.description


def _text_source(cfg: DataConfig) -> TextSource:
    src = open_source(cfg.path, cfg.max_bytes, cfg.text_field)
    if isinstance(src, BinSource):
        raise ValueError(f"data.path {cfg.path} holds pre-tokenized .bin files, not text")
    return src


def load_corpus(cfg: DataConfig, context: int | None = None) -> Corpus:
    """Read, hash, split, tokenize (once, cached) and map the corpus ``cfg`` names.

    Raises FileNotFoundError (a missing data.path or tokenizer file) or ValueError (no text,
    a bad file, or, with ``context``, a split too short for one window)."""
    src = open_source(cfg.path, cfg.max_bytes, cfg.text_field)
    corpus = _load_bin(src, cfg) if isinstance(src, BinSource) else _load_text(src, cfg)
    if corpus.skipped:
        shown = ", ".join(corpus.skipped[:5]) + (" ..." if len(corpus.skipped) > 5 else "")
        log.warning(
            "skipped %d binary or non-UTF-8 files or records: %s", len(corpus.skipped), shown
        )
    if context is not None:
        require_context(corpus, context)
    return corpus


def _load_text(src: TextSource, cfg: DataConfig) -> Corpus:
    digest, names, n_bytes = hashlib.sha256(), [], 0
    for name, data in src.documents():  # pass 1: hash and names
        digest.update(name.encode() + b"\0" + data + b"\0")
        names.append(name)
        n_bytes += len(data)
    skipped = list(src.skipped)
    where = cfg.path or "the standard library"
    if not names:
        raise ValueError(
            f"data.path: no UTF-8 text found in {where}"
            + (f" ({len(skipped)} binary or non-UTF-8 files skipped)" if skipped else "")
        )
    read = n_bytes + src.skipped_bytes
    if src.skipped_bytes > MAX_SKIPPED_SHARE * read:
        shown = ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        raise ValueError(
            f"data.path: {src.skipped_bytes / read:.1%} of the {read:,} bytes read from "
            f"{where} were skipped as binary or non-UTF-8 ({len(skipped)} files or records: "
            f"{shown}); this is not a text corpus. Name its text files with a glob, or give "
            "a Hugging Face dataset's save_to_disk folder, .parquet/.arrow/.jsonl files, or "
            ".bin token files"
        )
    content_hash = digest.hexdigest()[:16]
    val = {n for n in names if src.held_out(n, cfg.val_fraction)}
    if not val and len(names) > 1:  # a tiny corpus: hold out its last document
        val = {names[-1]}
    tokenizer = _tokenizer(cfg, src, content_hash, val)
    folder = cache_root(cfg) / "corpora" / f"{content_hash}-{tokenizer.ident}-{cfg.val_fraction}"
    meta = _open_cache(folder, lambda: _build(src, tokenizer, val, folder))
    train_tokens = _map(folder / "train.bin", meta["dtype"], meta["tokens_train"])
    val_tokens = _map(folder / "val.bin", meta["dtype"], meta["tokens_val"])
    if val_tokens.size == 0 and train_tokens.size > 0:
        # one document (a small single file): hold out the last val_fraction of its tokens
        cut = int(train_tokens.size * (1 - cfg.val_fraction))
        train_tokens, val_tokens = train_tokens[:cut], train_tokens[cut:]
    return Corpus(
        train=train_tokens,
        val=val_tokens,
        content_hash=content_hash,
        source=src.description,
        n_bytes=n_bytes,
        n_docs_train=len(names) - len(val),
        n_docs_val=len(val),
        tokenizer=tokenizer,
        skipped=skipped,
    )


def _map(path: Path, dtype: str, size: int) -> np.ndarray:
    """A token file, memory-mapped (an empty one as an empty array: mmap refuses those)."""
    if size == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(size,))


def _tokenizer(cfg: DataConfig, src: TextSource, content_hash: str, val: set[str]):
    if cfg.tokenizer == "bytes":
        return ByteTokenizer()
    if cfg.tokenizer == "bpe":

        def training_texts():  # the training split, up to bpe_train_bytes
            total = 0
            for name, data in src.documents():
                if name in val:
                    continue
                if total >= cfg.bpe_train_bytes:
                    return
                total += len(data)
                yield data.decode("utf-8")

        return cached_bpe(cache_root(cfg), content_hash, cfg.bpe_vocab_size, training_texts())
    return load_tokenizer_file(cfg.tokenizer)


def _build(src: TextSource, tokenizer, val: set[str], folder: Path) -> None:
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "val": 0}
    eot = np.array([tokenizer.eot], dtype=dtype) if tokenizer.eot is not None else None
    with open(tmp / "train.bin", "wb") as ftrain, open(tmp / "val.bin", "wb") as fval:
        batch, size = [], 0

        def flush():
            for (name, _), ids in zip(batch, tokenizer.encode_docs([d for _, d in batch])):
                split = "val" if name in val else "train"
                f = fval if split == "val" else ftrain
                f.write(ids.astype(dtype, copy=False).tobytes())
                counts[split] += ids.size
                if eot is not None:
                    f.write(eot.tobytes())
                    counts[split] += 1

        for name, data in src.documents():
            batch.append((name, data))
            size += len(data)
            if size >= ENCODE_BATCH_BYTES:
                flush()
                batch, size = [], 0
        flush()
    meta = {
        "dtype": np.dtype(dtype).name,
        "tokens_train": counts["train"],
        "tokens_val": counts["val"],
        "tokenizer": tokenizer.name,
        "files": {name: _fingerprint(tmp / name) for name in CACHE_FILES},
    }
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)


CACHE_FILES = ("train.bin", "val.bin")
OLD_CACHE = "was written before caches carried checksums"


def _fingerprint(path: Path) -> dict:
    """Size and CRC-32 of a cache file (zlib's, streamed: about a second a GB)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return {"bytes": path.stat().st_size, "crc32": crc}


def _cache_fault(folder: Path) -> tuple[dict | None, str | None]:
    """The cache's metadata, or why it cannot be trusted: a missing or torn meta.json, a
    missing token file, or one whose size or checksum is not the one recorded."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if isinstance(meta, dict) and "dtype" in meta and "files" not in meta:
            return None, OLD_CACHE
        files = meta["files"]
        width = np.dtype(meta["dtype"]).itemsize
        sizes = {"train.bin": meta["tokens_train"] * width, "val.bin": meta["tokens_val"] * width}
    except FileNotFoundError:
        return None, "meta.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"meta.json is unreadable ({type(e).__name__}: {e})"
    for name in CACHE_FILES:
        path = folder / name
        if not path.is_file():
            return None, f"{name} is missing"
        want = files.get(name) or {}
        if path.stat().st_size != sizes[name] or want.get("bytes") != sizes[name]:
            return None, f"{name} is {path.stat().st_size} bytes, not the {sizes[name]} recorded"
        if _fingerprint(path)["crc32"] != want.get("crc32"):
            return None, f"{name} does not match its recorded checksum"
    return meta, None


def _open_cache(folder: Path, build) -> dict:
    """The metadata of the token cache in ``folder``, verified (sizes and checksums); a
    missing cache is built, a corrupt one rebuilt with a warning naming it. Raises
    ValueError, naming the folder, when it cannot be rebuilt."""
    if not folder.exists():
        build()
    meta, fault = _cache_fault(folder)
    if fault is None:
        return meta
    if fault == OLD_CACHE:
        log.info("token cache %s %s; rebuilding it once", folder, fault)
    else:
        log.warning("token cache %s is corrupt (%s); rebuilding it", folder, fault)
    try:
        shutil.rmtree(folder)
    except OSError as e:
        raise ValueError(
            f"token cache {folder} is corrupt ({fault}) and cannot be removed: "
            f"{e.strerror or e}; delete it, or set data.cache_dir elsewhere"
        ) from None
    build()
    meta, fault = _cache_fault(folder)
    if fault is not None:
        raise ValueError(f"token cache {folder}: rebuilt, and still {fault}")
    return meta


def _file_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _map_bin(path: Path, dtype: str) -> np.ndarray:
    """A pre-tokenized file as tokens of ``dtype``. Raises ValueError naming the file and
    data.bin_dtype when its size is not a whole number of tokens."""
    size, width = path.stat().st_size, np.dtype(dtype).itemsize
    if size % width:
        raise ValueError(
            f"data.path: {path} is {size} bytes, not a whole number of {width}-byte tokens; "
            f"is data.bin_dtype={dtype} the dtype it was written with?"
        )
    return _map(path, dtype, size // width)


def _load_bin(src: BinSource, cfg: DataConfig) -> Corpus:
    tokens = _map_bin(Path(src.train), str(cfg.bin_dtype))
    if src.val is not None:
        train, val = tokens, _map_bin(Path(src.val), str(cfg.bin_dtype))
    else:  # one token stream: hold out its last val_fraction
        cut = int(tokens.size * (1 - cfg.val_fraction))
        train, val = tokens[:cut], tokens[cut:]
    if train.size == 0:
        raise ValueError(f"data.path: {src.train} holds no tokens")
    max_id = max(_max_id(train), _max_id(val) if val.size else 0)
    files = [src.train] + ([src.val] if src.val is not None else [])
    tokenizer = _bin_tokenizer(cfg, Path(src.train).parent, max_id)
    return Corpus(
        train=train,
        val=val,
        content_hash=_file_hash(files),
        source=src.description,
        n_bytes=sum(f.stat().st_size for f in files),
        n_docs_train=1,
        n_docs_val=1 if val.size else 0,
        tokenizer=tokenizer,
        max_token_id=max_id,
    )


def _bin_tokenizer(cfg: DataConfig, folder: Path, max_id: int):
    """The vocabulary of pre-tokenized ids: a ``tokenizer.json`` named by data.tokenizer or
    lying beside the .bin files (text in and out, as for any run), else ``data.vocab_size``,
    else the largest id + 1, with a warning (GPT-2's ids stop at 50,256 in most text, one
    short of its 50,257). Raises ValueError when an id does not fit the vocabulary."""
    if cfg.tokenizer == "bpe":
        raise ValueError(
            "data.tokenizer=bpe trains a tokenizer on text, and data.path holds token ids; "
            "give the ids' tokenizer.json, or data.vocab_size"
        )
    if cfg.tokenizer != "bytes":
        tokenizer, origin = load_tokenizer_file(cfg.tokenizer), f"data.tokenizer={cfg.tokenizer}"
    elif (folder / "tokenizer.json").is_file():
        tokenizer = load_tokenizer_file(folder / "tokenizer.json")
        origin = f"{folder / 'tokenizer.json'}"
    elif cfg.vocab_size:
        tokenizer, origin = IdTokenizer(cfg.vocab_size), f"data.vocab_size={cfg.vocab_size}"
    else:
        log.warning(
            "data.path: pre-tokenized ids with no vocabulary given: taking the largest id + 1 "
            "= %d; set data.vocab_size (GPT-2's is 50257) or put the tokenizer.json beside "
            "the .bin files",
            max_id + 1,
        )
        return IdTokenizer(max_id + 1)
    if cfg.vocab_size and cfg.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"data.vocab_size={cfg.vocab_size} but the tokenizer ({origin}) has "
            f"{tokenizer.vocab_size:,} tokens"
        )
    if max_id >= tokenizer.vocab_size:
        raise ValueError(
            f"data.path: token ids in {folder} reach {max_id}, beyond the {tokenizer.vocab_size:,}"
            f" tokens of {origin}"
        )
    return tokenizer


def _max_id(tokens: np.ndarray, chunk: int = 1 << 26) -> int:
    return int(max(tokens[i : i + chunk].max() for i in range(0, tokens.size, chunk)))


def require_context(corpus: Corpus, context: int) -> None:
    """Raise ValueError unless both splits hold one window of context + 1 tokens."""
    for split, tokens in (("train", corpus.train), ("validation", corpus.val)):
        if tokens.size < context + 1:
            raise ValueError(
                f"corpus shorter than the context: the {split} split of {corpus.source} has "
                f"{tokens.size} tokens, model.context={context} needs at least {context + 1}"
            )


def random_batch(
    tokens: np.ndarray, batch_size: int, context: int, rng: np.random.Generator, pin: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size windows at random offsets: inputs and next-token targets, (B, T) int64."""
    starts = rng.integers(0, tokens.size - context, size=batch_size)
    x, y = _windows(tokens, starts, context)
    return (x.pin_memory(), y.pin_memory()) if pin else (x, y)


def eval_windows(tokens: np.ndarray, n: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n windows at evenly spaced offsets: the same every evaluation and every run."""
    starts = np.linspace(0, tokens.size - context - 1, num=n).astype(np.int64)
    return _windows(tokens, starts, context)


def _windows(tokens: np.ndarray, starts: np.ndarray, context: int):
    idx = starts[:, None] + np.arange(context + 1)[None, :]
    w = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return w[:, :-1], w[:, 1:]

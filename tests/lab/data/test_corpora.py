"""Corpus formats, tokenizers, caching, token budgets and the errors a user can cause."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.data.corpus import cache_root, load_corpus
from lab.training.run import train

LINES = [
    f"line {i}: the quick brown fox {i % 7} jumps over {i % 11} lazy dogs\n" for i in range(4000)
]


def texts(n_docs=40) -> list[str]:
    per = len(LINES) // n_docs
    return ["".join(LINES[i * per : (i + 1) * per]) for i in range(n_docs)]


def run_cfg(path, tmp_path, **data) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(
            **{"path": str(path), "tokens": 8 * 32 * 5, "cache_dir": str(tmp_path / "cache")} | data
        ),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=8, eval_batches=1, device="cpu"),
    )


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    for i, t in enumerate(texts()):
        (d / f"doc{i:02d}.txt").write_text(t)
    return d


def test_folder_glob_and_single_file_read_the_same_text(folder, tmp_path):
    a = load_corpus(DataConfig(path=str(folder), cache_dir=str(tmp_path / "c")))
    b = load_corpus(DataConfig(path=str(folder / "*.txt"), cache_dir=str(tmp_path / "c")))
    assert a.content_hash == b.content_hash and a.train.size == b.train.size
    single = tmp_path / "all.txt"
    single.write_text("".join(texts()))
    c = load_corpus(DataConfig(path=str(single), cache_dir=str(tmp_path / "c")))
    assert c.n_docs_train + c.n_docs_val > 1  # cut into documents
    assert (
        c.train.size + c.val.size == len("".join(texts()).encode()) + c.n_docs_train + c.n_docs_val
    )


def test_jsonl_and_parquet_records_are_documents(tmp_path):
    docs = texts()
    with open(tmp_path / "d.jsonl", "w") as f:
        for t in docs:
            f.write(json.dumps({"id": 1, "body": t}) + "\n")
        f.write("not json\n")
    pd.DataFrame({"body": docs}).to_parquet(tmp_path / "d.parquet")
    j = load_corpus(
        DataConfig(path=str(tmp_path / "d.jsonl"), text_field="body", cache_dir=str(tmp_path / "c"))
    )
    p = load_corpus(
        DataConfig(
            path=str(tmp_path / "d.parquet"), text_field="body", cache_dir=str(tmp_path / "c")
        )
    )
    assert j.n_docs_train + j.n_docs_val == p.n_docs_train + p.n_docs_val == len(docs)
    assert j.train.size + j.val.size == p.train.size + p.val.size
    assert j.skipped == ["d.jsonl#L41"]  # the line that is not JSON: skipped and counted
    with pytest.raises(ValueError, match="data.text_field: 'text'"):
        load_corpus(DataConfig(path=str(tmp_path / "d.parquet"), cache_dir=str(tmp_path / "c")))


def test_pretokenized_bin_files_are_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "tok").mkdir()
    rng.integers(0, 500, 20_000, dtype=np.uint16).tofile(tmp_path / "tok" / "train.bin")
    rng.integers(0, 500, 2_000, dtype=np.uint16).tofile(tmp_path / "tok" / "val.bin")
    corpus = load_corpus(DataConfig(path=str(tmp_path / "tok")))
    assert isinstance(corpus.train, np.memmap) and corpus.train.size == 20_000
    assert corpus.max_token_id < 500 and corpus.tokenizer.vocab_size == corpus.max_token_id + 1
    record = train(run_cfg(tmp_path / "tok", tmp_path), tmp_path / "run")
    assert (
        record["status"] == "ok"
        and record["config"]["model"]["vocab_size"] == corpus.max_token_id + 1
    )


def test_bin_ids_beyond_the_model_vocabulary_are_an_error(tmp_path):
    np.arange(5000, dtype=np.uint16).tofile(tmp_path / "big.bin")
    cfg = run_cfg(tmp_path / "big.bin", tmp_path)
    cfg.model.vocab_size = 1000
    with pytest.raises(
        ValueError, match=r"token ids in .* reach 4999, beyond model.vocab_size=1000"
    ):
        train(cfg, tmp_path / "run")


def test_bpe_is_trained_once_and_cached_with_the_tokenized_corpus(folder, tmp_path):
    cfg = DataConfig(
        path=str(folder), tokenizer="bpe", bpe_vocab_size=300, cache_dir=str(tmp_path / "c")
    )
    first = load_corpus(cfg)
    assert first.tokenizer.vocab_size == 300
    bpe = list((cache_root(cfg) / "tokenizers").glob(f"bpe-{first.content_hash}-300.json"))
    assert len(bpe) == 1
    built = list((cache_root(cfg) / "corpora").iterdir())
    stamp = bpe[0].stat().st_mtime_ns, [p.stat().st_mtime_ns for p in built]
    again = load_corpus(cfg)
    assert (bpe[0].stat().st_mtime_ns, [p.stat().st_mtime_ns for p in built]) == stamp  # reused
    assert np.array_equal(first.train, again.train)
    # BPE compresses: fewer tokens than bytes
    byte_level = load_corpus(DataConfig(path=str(folder), cache_dir=str(tmp_path / "c")))
    assert first.train.size < 0.8 * byte_level.train.size
    text = first.tokenizer.decode(first.train[:200])
    assert "the quick brown fox" in text


def test_user_tokenizer_json_and_generation_with_it(folder, tmp_path, capsys):
    from lab.data.tokenizer import train_bpe
    from lab.inspection.generate import main as generate_main

    tok = train_bpe(texts(), 280)
    tok.save(str(tmp_path / "tokenizer.json"))
    record = train(
        run_cfg(folder, tmp_path, tokenizer=str(tmp_path / "tokenizer.json")), tmp_path / "run"
    )
    assert record["corpus"]["vocab_size"] == 280 and record["config"]["model"]["vocab_size"] == 280
    assert generate_main([str(tmp_path / "run"), "--prompt", "line ", "--tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("line ")
    with pytest.raises(FileNotFoundError, match="no such tokenizer file"):
        load_corpus(DataConfig(path=str(folder), tokenizer=str(tmp_path / "nope.json")))


def test_budget_epochs_and_repetition_warning(folder, tmp_path, caplog):
    corpus = load_corpus(
        DataConfig(path=str(folder), max_bytes=20_000, cache_dir=str(tmp_path / "cache"))
    )
    tokens = int(corpus.train.size * 1.5)
    with caplog.at_level(logging.WARNING, logger="lab.train"):
        record = train(run_cfg(folder, tmp_path, tokens=tokens, max_bytes=20_000), tmp_path / "run")
    assert record["tokens_seen"] == tokens == record["tokens"]
    assert record["unique_tokens"] == corpus.train.size
    assert record["epochs"] == pytest.approx(1.5, abs=1e-4)
    assert "exceeds the" in caplog.text and "repeated data" in caplog.text
    assert 0.0 <= record["data_wait_fraction"] < 0.5


def test_binary_and_non_utf8_files_are_skipped_counted_and_reported(folder, tmp_path, caplog):
    (folder / "image.png").write_bytes(bytes(range(256)) * 4)
    (folder / "latin1.txt").write_bytes("café crème".encode("latin-1") * 50)
    with caplog.at_level(logging.WARNING, logger="lab.data"):
        corpus = load_corpus(DataConfig(path=str(folder), cache_dir=str(tmp_path / "c")))
    assert sorted(corpus.skipped) == ["image.png", "latin1.txt"]
    assert corpus.summary()["skipped_files"] == 2
    assert "skipped 2 binary or non-UTF-8" in caplog.text


@pytest.mark.parametrize(
    "path, error, message",
    [
        ("missing", FileNotFoundError, "data.path does not exist"),
        ("nothing/*.txt", FileNotFoundError, "matches no file"),
        ("empty", ValueError, "no UTF-8 text"),
    ],
)
def test_bad_paths_are_clear_errors(tmp_path, path, error, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=message):
        load_corpus(DataConfig(path=str(tmp_path / path), cache_dir=str(tmp_path / "c")))

"""Where researchers' data already is: Hugging Face datasets saved to disk and Arrow shards
(through the ``datasets`` library), record folders beside their README, corpora that are
mostly not text, and pre-tokenized ids with their real vocabulary."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.data.corpus import load_corpus
from lab.runs.export import main as export_main
from lab.training.run import train

ROWS = [
    f"row {i}: the quick brown fox {i % 7} jumps over {i % 11} lazy dogs\n" * 4 for i in range(300)
]


def data(path, tmp_path, **kw) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **kw)


def run_cfg(path, tmp_path, **kw) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(
            **{"path": str(path), "tokens": 8 * 32 * 5, "cache_dir": str(tmp_path / "cache")} | kw
        ),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=8, eval_batches=1, device="cpu", threads=1),
    )


@pytest.fixture
def datasets():
    return pytest.importorskip("datasets")  # the [datasets] extra; CI installs it


def test_a_saved_dataset_trains_on_its_rows_not_its_metadata(tmp_path, datasets):
    ds = datasets.Dataset.from_dict({"content": ROWS, "id": list(range(len(ROWS)))})
    ds.save_to_disk(str(tmp_path / "ds"))
    corpus = load_corpus(data(tmp_path / "ds", tmp_path, text_field="content"))
    text = "".join(ROWS).encode()
    assert corpus.n_docs_train + corpus.n_docs_val == len(ROWS)
    # every row's bytes and one end-of-document token each: nothing of the JSON metadata
    assert corpus.train.size + corpus.val.size == len(text) + len(ROWS)
    assert corpus.source.startswith("dataset:") and not corpus.skipped
    with pytest.raises(ValueError, match=r"'text' is not a column of .*\['content', 'id'\]"):
        load_corpus(data(tmp_path / "ds", tmp_path / "other"))


def test_a_dataset_dict_keeps_its_own_validation_split(tmp_path, datasets):
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ROWS[:250]}),
            "validation": datasets.Dataset.from_dict({"text": ROWS[250:]}),
            "test": datasets.Dataset.from_dict({"text": ["left out\n" * 50]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    corpus = load_corpus(data(tmp_path / "dd", tmp_path))
    assert (corpus.n_docs_train, corpus.n_docs_val) == (250, 50)
    assert corpus.val.size == len("".join(ROWS[250:]).encode()) + 50
    assert corpus.train.size == len("".join(ROWS[:250]).encode()) + 250


def test_arrow_shards_are_read_directly_or_by_glob(tmp_path, datasets):
    ds = datasets.Dataset.from_dict({"text": ROWS})
    ds.save_to_disk(str(tmp_path / "ds"), num_shards=2)
    shards = sorted((tmp_path / "ds").glob("*.arrow"))
    assert len(shards) == 2
    one = load_corpus(data(shards[0], tmp_path))
    both = load_corpus(data(tmp_path / "ds" / "*.arrow", tmp_path))
    assert one.n_docs_train + one.n_docs_val == 150
    assert both.n_docs_train + both.n_docs_val == 300


def test_a_folder_of_record_shards_reads_the_shards_only(tmp_path, caplog):
    import pandas as pd

    snap = tmp_path / "snapshot"
    (snap / "data").mkdir(parents=True)
    pd.DataFrame({"text": ROWS[:150]}).to_parquet(snap / "data" / "train-0.parquet")
    pd.DataFrame({"text": ROWS[150:]}).to_parquet(snap / "data" / "train-1.parquet")
    (snap / "README.md").write_text("# a dataset card, not training text\n" * 20)
    with caplog.at_level(logging.WARNING, logger="lab.data"):
        corpus = load_corpus(data(snap, tmp_path))
    assert corpus.n_docs_train + corpus.n_docs_val == 300
    assert "reading those only, 1 other files left out: README.md" in caplog.text


def test_a_corpus_that_is_mostly_skipped_is_an_error_naming_the_share(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "notes.txt").write_text("a little text\n" * 50)  # 700 bytes
    (folder / "weights.bin.gz").write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    with pytest.raises(ValueError, match=r"93\.6% of the 10,940 bytes read .* were skipped"):
        load_corpus(data(folder, tmp_path))
    (folder / "more.txt").write_text("plenty of text here\n" * 600)  # now mostly text
    assert load_corpus(data(folder, tmp_path)).skipped == ["weights.bin.gz"]


def test_a_missing_datasets_library_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import builtins

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "state.json").write_text("{}")
    (tmp_path / "ds" / "dataset_info.json").write_text("{}")
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ValueError, match=r"needs the datasets library: pip install"):
        load_corpus(data(tmp_path / "ds", tmp_path))


def _gpt2_like_bin(folder, top=600):
    """ids that, like GPT-2's in most text, stop one short of the vocabulary's top id."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(0, top - 1, 20_000, dtype=np.uint16).tofile(folder / "train.bin")
    rng.integers(0, top - 1, 2_000, dtype=np.uint16).tofile(folder / "val.bin")


def test_bin_ids_take_data_vocab_size_and_the_record_keeps_it(tmp_path, caplog):
    _gpt2_like_bin(tmp_path / "tok")
    with caplog.at_level(logging.WARNING, logger="lab.data"):
        guessed = load_corpus(data(tmp_path / "tok", tmp_path))
    assert guessed.tokenizer.vocab_size == 599 and "set data.vocab_size" in caplog.text
    record = train(run_cfg(tmp_path / "tok", tmp_path, vocab_size=600), tmp_path / "run")
    assert record["corpus"]["vocab_size"] == 600
    assert record["config"]["model"]["vocab_size"] == 600
    assert record["config"]["data"]["vocab_size"] == 600
    with pytest.raises(ValueError, match=r"reach 598, beyond the 500 tokens of data.vocab_size"):
        load_corpus(data(tmp_path / "tok", tmp_path, vocab_size=500))


def test_a_tokenizer_json_beside_the_bin_files_is_their_vocabulary(tmp_path):
    from lab.data.tokenizer import train_bpe

    tok = train_bpe(ROWS, 400)
    _gpt2_like_bin(tmp_path / "tok", top=tok.get_vocab_size())
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    corpus = load_corpus(data(tmp_path / "tok", tmp_path))
    assert corpus.tokenizer.vocab_size == tok.get_vocab_size() == 400
    assert corpus.tokenizer.name == "file:tokenizer.json"
    with pytest.raises(ValueError, match="data.vocab_size=512 but the tokenizer"):
        load_corpus(data(tmp_path / "tok", tmp_path, vocab_size=512))
    with pytest.raises(ValueError, match="data.tokenizer=bpe trains a tokenizer on text"):
        load_corpus(data(tmp_path / "tok", tmp_path, tokenizer="bpe"))


def test_export_refuses_a_run_with_no_tokenizer_for_its_vocabulary(tmp_path, capsys):
    pytest.importorskip("safetensors")
    _gpt2_like_bin(tmp_path / "tok")
    train(run_cfg(tmp_path / "tok", tmp_path, vocab_size=600), tmp_path / "run")
    out = tmp_path / "export"
    assert export_main([str(tmp_path / "run"), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pre-tokenized ids (600 of them) with no tokenizer" in err[0]
    assert not out.exists()  # nothing written
    assert export_main([str(tmp_path / "run"), "--to", "safetensors", str(out)]) == 0
    meta = json.loads((out / "lab_model.json").read_text())
    assert meta["tokenizer"] == {"kind": "ids", "vocab_size": 600}


def test_export_refuses_a_tokenizer_larger_than_the_model(tmp_path):
    from lab.data.tokenizer import HFTokenizer, train_bpe
    from lab.runs.export import refuse_mismatched_tokenizer

    tok = HFTokenizer(train_bpe(ROWS, 400), "bpe400")
    with pytest.raises(ValueError, match="has 400 tokens and its model's vocabulary 257"):
        refuse_mismatched_tokenizer(tok, ModelConfig(vocab_size=257))
    refuse_mismatched_tokenizer(tok, ModelConfig(vocab_size=448))  # padded: fine

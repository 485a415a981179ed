"""train(): the token budget, the result record, and errors before training."""

from __future__ import annotations

import json

import pytest

import kernels
from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.training.run import train

RECORD_FIELDS = {
    "run_id",
    "status",
    "config",
    "config_hash",
    "n_params_total",
    "n_params_non_embedding",
    "n_params_embedding",
    "tokens",
    "flops_6N",
    "flops_6N_attn",
    "flops_6N_attn_head",
    "corpus",
    "unique_tokens",
    "epochs",
    "device",
    "backends",
    "versions",
    "git_commit",
    "metrics_path",
    "started_at",
    "finished_at",
    "steps",
    "tokens_seen",
    "train_loss",
    "val_loss",
    "train_loss_running",
    "generalization_gap",
    "wall_time_s",
    "tokens_per_s",
}


def tiny_config(**data) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(max_bytes=200_000, **({"tokens": 10_000} | data)),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(batch_size=8, eval_batches=2, device="cpu"),
    )


def test_record_has_every_field_and_exact_token_budget(tmp_path):
    # 10,000 tokens = 39 full steps of 8 x 32 = 256 tokens + a last step of 16 tokens
    record = train(tiny_config(), tmp_path)
    assert RECORD_FIELDS <= set(record)
    assert record["status"] == "ok"
    assert record["tokens_seen"] == record["tokens"] == 10_000
    assert record["steps"] == 40
    assert record["n_params_non_embedding"] < record["n_params_total"]
    assert record["flops_6N"] == 6 * record["n_params_non_embedding"] * 10_000
    assert record["val_loss"] < 5.5  # below log(257) ≈ 5.55: it learned something
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["val_loss"] == record["val_loss"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 40 and rows[-1]["tokens"] == 10_000
    assert set(record["backends"].values()) == {"torch"}  # auto on the CPU
    assert set(record["backends"]) == set(kernels.OPS)  # every registered op


def test_same_seed_same_result(tmp_path):
    a = train(tiny_config(tokens=3000), tmp_path / "a")
    b = train(tiny_config(tokens=3000), tmp_path / "b")
    assert a["val_loss"] == b["val_loss"]
    assert a["config_hash"] == b["config_hash"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c.model, "n_head", 3), "not divisible by model.n_head"),
        (lambda c: setattr(c.model, "activation", "swish"), "model.activation"),
        (lambda c: setattr(c.model, "dropout", 1.0), "model.dropout"),
        (lambda c: setattr(c.data, "path", "/no/such/corpus"), "data.path"),
        (lambda c: setattr(c.model, "context", 10**7), "shorter than the context"),
        (lambda c: setattr(c.data, "tokens", 0), "data.tokens"),
    ],
)
def test_bad_config_fails_before_training(tmp_path, change, message):
    cfg = tiny_config()
    change(cfg)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train(cfg, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()

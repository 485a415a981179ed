"""The planner's memory estimate against PyTorch's own count of the same model (built under
FakeTensorMode on the CPU: nothing is allocated), for every size of both ladders."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab.config.composition import compose
from lab.config.memory import estimate, measure
from lab.config.schema import CONF_DIR, ModelConfig

GPU_SIZES = sorted(p.stem for p in (CONF_DIR / "model" / "gpu").glob("*.yaml"))
CPU_SIZES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def _check(cfg: ModelConfig, micro_batch: int, bf16: bool) -> None:
    counted = measure(cfg, micro_batch, bf16=bf16)
    planned = estimate(cfg, micro_batch, bf16=bf16)
    weights = counted["params"] + counted["grads"] + counted["optimizer"]
    assert planned.weights == pytest.approx(weights, rel=0.01)
    assert planned.saved == pytest.approx(counted["saved"], rel=0.10)


@pytest.mark.parametrize("size", GPU_SIZES)
def test_the_estimate_holds_for_every_gpu_ladder_size(size):
    assert len(GPU_SIZES) >= 8  # ~25M to ~1.4B, and the 7B shape
    cfg = compose([f"model=gpu/{size}"]).model
    _check(cfg, 1, bf16=True)  # a GPU's bf16 autocast
    _check(cfg, 2, bf16=False)


@pytest.mark.parametrize("size", CPU_SIZES)
def test_the_estimate_holds_for_every_cpu_ladder_size(size):
    cfg = replace(compose([f"model={size}"]).model, vocab_size=257)
    _check(cfg, 4, bf16=False)  # what the CPU trains in


def test_what_scales_the_memory():
    cfg = compose(["model=gpu/1b"]).model
    one = estimate(cfg, 8)
    casts = estimate(cfg, 0).saved  # the bf16 weight copies, whatever the batch
    assert estimate(cfg, 16).saved - casts == pytest.approx(2 * (one.saved - casts))
    ddp = estimate(cfg, 8, world=8, parallel="ddp")
    fsdp = estimate(cfg, 8, world=8, parallel="fsdp")
    assert ddp.weights > one.weights  # DDP's gradient buckets
    assert fsdp.weights < one.weights / 4  # sharded over 8, plus two gathered blocks
    recompute = estimate(cfg, 8, checkpointing="block")
    assert recompute.saved < one.saved / 3
    with pytest.raises(ValueError, match="attention blocks"):
        estimate(replace(cfg, mixer="conv"), 1)

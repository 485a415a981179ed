"""The planner's memory estimate against PyTorch's own count of the same model (built under
FakeTensorMode on the CPU: nothing is allocated), for every size of both ladders."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab.config.composition import compose
from lab.config.memory import estimate
from lab.config.schema import CONF_DIR, ModelConfig
from lab.model.footprint import measure

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


@pytest.mark.gpu
@pytest.mark.parametrize("recompute", ["none", "block"])
def test_the_estimate_against_the_allocator_peak_on_a_gpu(recompute):
    """What the allocator reaches in one training step of a GPU ladder size on CUDA (bf16
    autocast, the lab's default backend there) against the estimate's total."""
    import torch
    import torch.nn.functional as F

    from lab.model.gpt import GPT

    cfg = compose(["model=gpu/85m"]).model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model = GPT(cfg).cuda()
    model.checkpoint_blocks = recompute == "block"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (4, cfg.context), device="cuda")
    for _ in range(2):  # the second step holds the optimizer's moments
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, _ = model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), x.view(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    peak = torch.cuda.max_memory_allocated() - base
    planned = estimate(cfg, 4, checkpointing=recompute)
    assert planned.total == pytest.approx(peak, rel=0.25), (planned, peak)

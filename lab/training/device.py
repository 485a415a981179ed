"""The device a run trains on: which one ``train.device`` means, bf16 autocast on CUDA, and
model FLOPs utilisation against the device's peak (PaLM, Chowdhery et al. 2022, app. B)."""

from __future__ import annotations

import torch

from lab.config.counting import flops_per_token
from lab.config.schema import ModelConfig

# Dense bf16 peak FLOP/s by GPU name (MFU is measured against these).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU; ValueError for cuda without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def peak_flops(device) -> float | None:
    """The device's dense bf16 peak (FLOP/s) when known; None on the CPU or an unknown GPU."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# An optimistic bound on a CPU core's FP32 rate (two AVX-512 FMA units at ~3 GHz: 2 × 16 × 2
# × 3e9 ≈ 200 GFLOP/s); training reaches a small share of it, so a run estimated past
# ABSURD_SECONDS even at this rate is a mistake in its size, not a long run.
CPU_CORE_FLOPS = 2e11
GPU_BEST_MFU = 0.6  # ... and on a GPU, 60% of its peak (the best published MFUs are ~50-60%)
ABSURD_SECONDS = 30 * 86400


def fastest_seconds(model: ModelConfig, tokens: int, device, threads: int) -> tuple[float, float]:
    """A lower bound on a run's training time on ``device`` (seconds) and the FLOP/s it
    assumes: the run's FLOPs (6N + attention + head, per token) at an optimistic rate."""
    flops = float(flops_per_token(model)["6N_attn_head"]) * tokens
    peak = peak_flops(device)
    if torch.device(device).type == "cuda":
        rate = (peak or max(PEAK_BF16_FLOPS.values())) * GPU_BEST_MFU
    else:
        rate = CPU_CORE_FLOPS * max(1, threads)
    return flops / rate, rate


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


class MFU:
    """Model FLOPs utilisation at a throughput: tokens/s × FLOPs per token (6N + attention,
    with the head) / peak. None on the CPU or a GPU of unknown peak."""

    def __init__(self, cfg: ModelConfig, device: torch.device):
        self.flops_per_token = flops_per_token(cfg)["6N_attn_head"]
        self.peak = peak_flops(device)

    def __call__(self, tokens_per_s: float | None) -> float | None:
        if not tokens_per_s or not self.peak:
            return None
        return tokens_per_s * self.flops_per_token / self.peak

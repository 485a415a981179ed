"""Small helpers shared by the Triton kernel files."""

from __future__ import annotations

import os

import torch
import triton

from kernels import activations
from kernels.registry import interpreting  # noqa: F401 - re-exported for the kernel files

# Each registered activation's forward and backward as Triton device functions, passed to
# the kernels that fuse an activation (the GEMM's epilogue, the causal convolution) as
# constexpr arguments, as Triton's matmul tutorial passes its activation: one compiled
# variant per activation, no if-chain in a kernel.
ACT_FWD = {name: triton.jit(a.triton_fwd) for name, a in activations.ACTIVATIONS.items()}
ACT_BWD = {name: triton.jit(a.triton_bwd) for name, a in activations.ACTIVATIONS.items()}


def autotune_off() -> bool:
    """``KERNELS_AUTOTUNE=0``: each autotuned kernel keeps only the first tile of its list."""
    return os.environ.get("KERNELS_AUTOTUNE", "1") == "0"


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """``tl.dot`` input precision: TF32 tensor cores for fp32 on a GPU when PyTorch allows
    TF32 for matmuls (``torch.backends.cuda.matmul.allow_tf32`` or a float32 matmul
    precision below "highest"); full fp32 ("ieee") otherwise. 16-bit inputs ignore it."""
    if dtype != torch.float32 or device.type != "cuda":
        return "ieee"
    tf32 = (
        torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    )
    return "tf32" if tf32 else "ieee"

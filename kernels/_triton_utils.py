"""Small helpers shared by the Triton kernel files."""

from __future__ import annotations

import os
import warnings

import torch
import triton

try:  # triton >= 3.4
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older triton: pointer loads only
    TensorDescriptor = None

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


def limit_tuning(configs, named_args=None, **kwargs):
    """An autotuner's ``early_config_prune``, read at each launch: the list's first config
    when ``KERNELS_AUTOTUNE=0`` (the lists are also cut at import when it is set then);
    its first n with ``KERNELS_AUTOTUNE_MAX=n`` (a short tuning, for a GPU check that must
    fit a short window); every config otherwise."""
    if autotune_off():
        return configs[:1]
    most = os.environ.get("KERNELS_AUTOTUNE_MAX", "").strip()
    if most:
        if not most.isdigit() or int(most) < 1:
            raise ValueError(f"KERNELS_AUTOTUNE_MAX must be a count >= 1, got {most!r}")
        return configs[: int(most)]
    return configs


TMA_MODES = ("auto", "1", "0")


def tma_mode(variable: str) -> str:
    """The read-path switch in environment variable ``variable``: auto (TMA where the GPU
    and the strides allow it) | 1 (TMA wherever the strides allow, the interpreter
    included) | 0 (never). ValueError naming the variable otherwise."""
    mode = os.environ.get(variable, "auto").strip().lower()
    if mode not in TMA_MODES:
        raise ValueError(f"{variable} must be one of {TMA_MODES}, got {mode!r}")
    return mode


def tma_capable(t: torch.Tensor) -> bool:
    """A Hopper-or-later GPU and a triton with host-side tensor descriptors."""
    if TensorDescriptor is None or t.device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(t.device)[0] >= 9


def tma_wanted(variable: str, broken: str | None, t: torch.Tensor, capable=tma_capable) -> bool:
    """Whether the switch in ``variable`` sends a launch on ``t`` through descriptors, the
    strides aside: never with 0; always with 1 (RuntimeError when this triton has no
    TensorDescriptor); with auto, on a ``capable`` device unless the path has failed in
    this process (``broken``: why, else None)."""
    mode = tma_mode(variable)
    if mode == "0":
        return False
    if mode == "1":
        if TensorDescriptor is None:
            raise RuntimeError(f"{variable}=1 but this triton has no TensorDescriptor")
        return True
    return broken is None and capable(t)


def tma_fallback(op: str, variable: str, error: Exception, stacklevel: int) -> str:
    """After a TMA launch of ``op`` failed in auto mode: warn that its launches read
    through pointers from now on, and return why (the caller keeps it as its ``broken``)."""
    reason = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    warnings.warn(
        f"{op}: the TMA (tensor descriptor) path failed ({reason}); using pointer loads "
        f"from now on. Set {variable}=0 to skip it.",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
    return reason


def tma_aligned(*tensors: torch.Tensor) -> bool:
    """TMA's rules for a view: base 16-byte aligned, last dim contiguous, every other
    stride a multiple of 16 bytes."""
    for t in tensors:
        size = t.element_size()
        if t.data_ptr() % 16 or t.stride(-1) != 1:
            return False
        if any((s * size) % 16 for s in t.stride()[:-1]):
            return False
    return True


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

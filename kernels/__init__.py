"""The ops the model is built from, each dispatched to a backend.

    attention(q, k, v, causal=True, sm_scale=None, dropout_p=0.0)   q, k, v: (B, H, T, D)
    layer_norm(x, weight, bias, eps=1e-5)            x: (..., N)
    rms_norm(x, weight, eps=1e-5)                    x: (..., N)
    linear(x, weight, bias=None, activation=None)    x: (..., K), weight: (N, K)

Backends:
- "torch": PyTorch's fused ops (``F.scaled_dot_product_attention``, ``F.layer_norm``,
  ``F.linear``); runs anywhere.
- "triton": this package's Triton kernels, on CUDA or, with ``TRITON_INTERPRET=1`` set
  before import, on the CPU through Triton's interpreter (slow; for tests).
- "auto" (default): "triton" for an op that has a kernel when its inputs are on CUDA,
  "torch" otherwise.

``set_backend("torch")`` sets every op; ``set_backend(linear="triton")`` sets one;
``use_backend(...)`` does the same for a ``with`` block. The math all backends must
agree with lives in ``kernels.reference``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from kernels import reference
from kernels._checks import check_attention, check_layer_norm, check_linear

OPS = ("attention", "layer_norm", "rms_norm", "linear")
BACKENDS = ("auto", "torch", "triton")

# Ops that have a Triton kernel, as "module:function"; an op joins when its kernel lands.
TRITON_KERNELS: dict[str, str] = {
    "attention": "kernels.flash_attention:attention",
    "layer_norm": "kernels.layernorm:layer_norm",
    "rms_norm": "kernels.layernorm:rms_norm",
    "linear": "kernels.gemm:linear",
}

_backend: dict[str, str] = dict.fromkeys(OPS, "auto")

__all__ = [
    "BACKENDS",
    "OPS",
    "attention",
    "backend_for",
    "get_backend",
    "layer_norm",
    "linear",
    "reference",
    "rms_norm",
    "set_backend",
    "use_backend",
]


def _check_choice(op: str, backend: str) -> None:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {OPS}")
    if backend not in BACKENDS:
        raise ValueError(f"backend for {op} must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton" and op not in TRITON_KERNELS:
        have = sorted(TRITON_KERNELS) or "none yet"
        raise ValueError(
            f"op {op!r} has no Triton kernel yet (ops with one: {have}); "
            f"use backend 'torch' or 'auto' for {op}"
        )


def set_backend(backend: str | None = None, /, **per_op: str) -> None:
    """Choose backends: ``set_backend("torch")`` for every op, ``set_backend(linear="triton")``
    for one, or both (per-op choices win). Raises ValueError for an unknown op or backend,
    or "triton" for an op that has no Triton kernel."""
    choice = dict.fromkeys(OPS, backend) if backend is not None else {}
    choice.update(per_op)
    for op, b in choice.items():
        _check_choice(op, b)
    _backend.update(choice)


def get_backend() -> dict[str, str]:
    """The backend chosen for each op ("auto", "torch" or "triton")."""
    return dict(_backend)


@contextlib.contextmanager
def use_backend(backend: str | None = None, /, **per_op: str) -> Iterator[None]:
    """``set_backend`` for the duration of a ``with`` block."""
    saved = get_backend()
    set_backend(backend, **per_op)
    try:
        yield
    finally:
        _backend.update(saved)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_for(op: str, device: torch.device | str) -> str:
    """The backend ("torch" or "triton") that ``op`` runs on for tensors on ``device``."""
    chosen = _backend[op]
    device_type = torch.device(device).type
    if chosen == "auto":
        return "triton" if op in TRITON_KERNELS and device_type == "cuda" else "torch"
    if chosen == "triton" and device_type != "cuda" and not _interpreting():
        raise RuntimeError(
            f"{op}: the triton backend needs CUDA tensors, or TRITON_INTERPRET=1 set before "
            f"importing kernels to run on the CPU (got tensors on {device_type})"
        )
    return chosen


def _triton_op(op: str):
    return _resolve(TRITON_KERNELS[op])


@functools.cache
def _resolve(spec: str):
    """ "module:function" → the function, imported once (this sits on every op call)."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    sm_scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention. q: (B, H, T, D); k, v: (B, Hkv, T, D), Hkv dividing H.

    ``sm_scale`` defaults to 1/sqrt(D); ``causal`` masks future keys; ``dropout_p`` drops
    attention probabilities, from PyTorch's generator on either backend (so
    ``torch.manual_seed`` makes it reproducible, though the two backends draw different
    masks). Returns (B, H, T, D). Raises ValueError on shapes that disagree, mixed dtypes
    or devices, or dropout_p outside [0, 1)."""
    cast = _autocast_dtype(q.device)
    if cast is not None:
        q, k, v = q.to(cast), k.to(cast), v.to(cast)
    check_attention(q, k, v, sm_scale, dropout_p)
    if backend_for("attention", q.device) == "triton":
        return _triton_op("attention")(q, k, v, causal, sm_scale, dropout_p)
    gqa = k.shape[1] != q.shape[1]
    return F.scaled_dot_product_attention(
        q, k, v, is_causal=causal, scale=sm_scale, dropout_p=dropout_p, enable_gqa=gqa
    )


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """Layer norm over the last dimension. x: (..., N); weight, bias: (N,) (bias may be None).

    Raises ValueError on a weight or bias not shaped (N,), mixed dtypes or devices, eps <= 0."""
    if _autocast_dtype(x.device) is not None:
        weight = weight.to(x.dtype)
        bias = bias.to(x.dtype) if bias is not None else None
    check_layer_norm(x, weight, bias, eps)
    if backend_for("layer_norm", x.device) == "triton":
        return _triton_op("layer_norm")(x, weight, bias, eps)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x²) + eps) · weight. x: (..., N);
    weight: (N,). Raises ValueError like ``layer_norm``."""
    if _autocast_dtype(x.device) is not None:
        weight = weight.to(x.dtype)
    check_layer_norm(x, weight, None, eps, op="rms_norm")
    if backend_for("rms_norm", x.device) == "triton":
        return _triton_op("rms_norm")(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """activation(x Wᵀ + b). x: (..., K); weight: (N, K); bias: (N,) or None; activation
    None | "relu" | "gelu" (exact) | "gelu_tanh". Returns (..., N).

    Raises ValueError on mismatched inner dimensions, a bias of the wrong shape, mixed
    dtypes or devices, or an unknown activation."""
    cast = _autocast_dtype(x.device)
    if cast is not None:
        x, weight = x.to(cast), weight.to(cast)
        bias = bias.to(cast) if bias is not None else None
    check_linear(x, weight, bias, activation)
    if backend_for("linear", x.device) == "triton":
        return _triton_op("linear")(x, weight, bias, activation)
    z = F.linear(x, weight, bias)
    if activation is None:
        return z
    if activation == "relu":
        return F.relu(z)
    return F.gelu(z, approximate="tanh" if activation == "gelu_tanh" else "none")

"""The public ops, each registered with its reference and Triton entry point.

Each op: cast its inputs under autocast, check them (``kernels._checks``), then run the
Triton kernel when ``backend_for`` says so, PyTorch's fused op otherwise. To add an op,
see "Adding an op" in the README.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import reference
from kernels._checks import (
    check_attention,
    check_causal_conv1d,
    check_layer_norm,
    check_linear,
)
from kernels.registry import OPS, backend_for, register, triton_entry


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


@register(
    reference=reference.attention,
    triton="kernels.flash_attention:attention",
    group="attention",
)
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
        return triton_entry("attention")(q, k, v, causal, sm_scale, dropout_p)
    gqa = k.shape[1] != q.shape[1]
    return F.scaled_dot_product_attention(
        q, k, v, is_causal=causal, scale=sm_scale, dropout_p=dropout_p, enable_gqa=gqa
    )


@register(reference=reference.layer_norm, triton="kernels.layernorm:layer_norm", group="layernorm")
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
        return triton_entry("layer_norm")(x, weight, bias, eps)
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


@register(reference=reference.rms_norm, triton="kernels.layernorm:rms_norm", group="layernorm")
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x²) + eps) · weight. x: (..., N);
    weight: (N,). Raises ValueError like ``layer_norm``."""
    if _autocast_dtype(x.device) is not None:
        weight = weight.to(x.dtype)
    check_layer_norm(x, weight, None, eps, op="rms_norm")
    if backend_for("rms_norm", x.device) == "triton":
        return triton_entry("rms_norm")(x, weight, eps)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


@register(reference=reference.linear, triton="kernels.gemm:linear", group="gemm")
def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """activation(x Wᵀ + b). x: (..., K); weight: (N, K); bias: (N,) or None; activation
    None or a name in ``kernels.activations`` ("relu", "gelu" (exact), "gelu_tanh", "silu").
    Returns (..., N).

    Raises ValueError on mismatched inner dimensions, a bias of the wrong shape, mixed
    dtypes or devices, or an unknown activation."""
    cast = _autocast_dtype(x.device)
    if cast is not None:
        x, weight = x.to(cast), weight.to(cast)
        bias = bias.to(cast) if bias is not None else None
    act = check_linear(x, weight, bias, activation)
    if backend_for("linear", x.device) == "triton":
        return triton_entry("linear")(x, weight, bias, activation)
    z = F.linear(x, weight, bias)
    return z if activation is None else act.torch(z)


@register(reference=reference.causal_conv1d, triton="kernels.conv:causal_conv1d", group="conv")
def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Depthwise causal convolution over time, with an optional fused activation:
    y[b, t, c] = act(bias[c] + Σ_k weight[c, k] · x[b, t − K + 1 + k, c]), x zero before
    t = 0. x: (B, T, C); weight: (C, K); bias: (C,) or None; activation None or a name in
    ``kernels.activations`` ("silu" in gated convolution blocks). Returns (B, T, C).

    Raises ValueError on a weight not (C, K ≥ 1), a bias not (C,), x not 3-d, mixed dtypes
    or devices, or an unknown activation."""
    cast = _autocast_dtype(x.device)
    if cast is not None:
        x, weight = x.to(cast), weight.to(cast)
        bias = bias.to(cast) if bias is not None else None
    act = check_causal_conv1d(x, weight, bias, activation)
    if backend_for("causal_conv1d", x.device) == "triton":
        return triton_entry("causal_conv1d")(x, weight, bias, activation)
    T, K = x.shape[1], weight.shape[1]
    # conv1d over (B, C, T), one group per channel, padded K − 1 on both sides: the first T
    # outputs are the causal ones
    z = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=K - 1, groups=x.shape[2])
    z = z[..., :T].transpose(1, 2)
    return z if activation is None else act.torch(z)


__all__ = list(OPS)  # `from kernels.ops import *` exports exactly the registered ops

"""Plain-PyTorch math of every op the model uses: the single source of truth.

Each function spells the math out (no fused PyTorch op behind it) and computes in fp32
whatever the input dtype, returning the input dtype. The Triton kernels are tested
against these functions; the tests also check these functions against PyTorch's own
fused ops (``F.scaled_dot_product_attention``, ``F.layer_norm``, ``F.linear``).
Autograd runs through them, so they also give the reference gradients.
"""

from __future__ import annotations

import math

import torch

from kernels import activations


def apply_activation(z: torch.Tensor, activation: str | None) -> torch.Tensor:
    """Elementwise activation by name (None: identity), the reference math of its entry in
    ``kernels.activations``. Raises ValueError for an unknown name."""
    return activations.get(activation).reference(z)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    sm_scale: float | None = None,
    dropout_p: float = 0.0,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ · sm_scale + mask) v, with attention dropout when ``keep`` is given.

    q: (B, H, Tq, D); k, v: (B, Hkv, Tk, D) with Hkv dividing H (grouped-query attention
    when Hkv < H). sm_scale defaults to 1/sqrt(D). With ``causal``, query i attends to keys
    j <= i + (Tk - Tq), the bottom-right alignment of ``F.scaled_dot_product_attention``
    when Tq == Tk. ``keep`` (B, H, Tq, Tk), bool, is a dropout mask: the kept
    probabilities are scaled by 1/(1 - dropout_p), the rest zeroed. Returns (B, H, Tq, D)
    in q's dtype.
    """
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    qf, kf, vf = q.float(), k.float(), v.float()
    if Hkv != H:
        kf = kf.repeat_interleave(H // Hkv, dim=1)
        vf = vf.repeat_interleave(H // Hkv, dim=1)
    scores = (qf @ kf.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if causal:
        i = torch.arange(Tq, device=q.device)[:, None]
        j = torch.arange(Tk, device=q.device)[None, :]
        scores = scores.masked_fill(j > i + (Tk - Tq), float("-inf"))
    p = torch.softmax(scores, dim=-1)
    if keep is not None:
        p = p * keep / (1.0 - dropout_p)
    return (p @ vf).to(q.dtype)


def attention_probs(
    q: torch.Tensor, k: torch.Tensor, causal: bool = True, sm_scale: float | None = None
) -> torch.Tensor:
    """The attention matrix softmax(q kᵀ · sm_scale + mask), (B, H, Tq, Tk) in fp32.

    The fused kernels never build it; model inspection reads it from here."""
    v_eye = torch.eye(k.shape[2], device=k.device, dtype=torch.float32)
    v_eye = v_eye.expand(k.shape[0], k.shape[1], -1, -1)
    return attention(q.float(), k.float(), v_eye, causal=causal, sm_scale=sm_scale)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last dimension.

    x: (..., N); weight, bias: (N,). Biased variance, as ``F.layer_norm``."""
    xf = x.float()
    mean = xf.mean(dim=-1, keepdim=True)
    var = ((xf - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (xf - mean) * torch.rsqrt(var + eps) * weight.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) * weight over the last dimension (Zhang & Sennrich 2019)."""
    xf = x.float()
    y = xf * torch.rsqrt((xf * xf).mean(dim=-1, keepdim=True) + eps) * weight.float()
    return y.to(x.dtype)


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """activation(x Wᵀ + b). x: (..., K); weight: (N, K) like ``F.linear``; bias: (N,)."""
    z = x.float() @ weight.float().t()
    if bias is not None:
        z = z + bias.float()
    return apply_activation(z, activation).to(x.dtype)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """Depthwise causal convolution over time: y[b, t, c] = act(bias[c] + Σ_k weight[c, k] ·
    x[b, t − K + 1 + k, c]), x taken as zero before t = 0. x: (B, T, C); weight: (C, K);
    bias: (C,). The last tap, weight[:, K − 1], multiplies the current position."""
    T, K = x.shape[1], weight.shape[1]
    padded = torch.cat([x.float().new_zeros(x.shape[0], K - 1, x.shape[2]), x.float()], dim=1)
    z = sum(weight[:, k].float() * padded[:, k : k + T] for k in range(K))
    if bias is not None:
        z = z + bias.float()
    return apply_activation(z, activation).to(x.dtype)

"""Input checks shared by every backend: a user's mistake becomes a ValueError naming
the argument before any kernel launches."""

from __future__ import annotations

import torch

from kernels import activations

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _uniform(*tensors) -> bool:
    """Fast path: every tensor (None skipped) shares the first one's dtype and device, and
    that dtype is a supported float."""
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or first.dtype not in FLOAT_DTYPES:
        return False
    return all(
        t is None
        or (isinstance(t, torch.Tensor) and t.dtype == first.dtype and t.device == first.device)
        for t in tensors[1:]
    )


def _same_dtype_device(op: str, named: dict[str, torch.Tensor | None]) -> None:
    if _uniform(*named.values()):
        return
    tensors = {name: t for name, t in named.items() if t is not None}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise ValueError(f"{op}: mixed dtypes ({listed}); cast them to one dtype")
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{op}: tensors on different devices ({listed})")
    first_name, first = next(iter(tensors.items()))
    if first.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{op}: {first_name} dtype must be one of {FLOAT_DTYPES}, got {first.dtype}"
        )


def check_attention(q, k, v, sm_scale, dropout_p: float = 0.0) -> None:
    _same_dtype_device("attention", {"q": q, "k": k, "v": v})
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention: {name} must be (B, H, T, D), got shape {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"attention: k {tuple(k.shape)} and v {tuple(v.shape)} shapes disagree")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"attention: q {tuple(q.shape)} and k {tuple(k.shape)} disagree in batch or head dim"
        )
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"attention: k/v heads ({k.shape[1]}) must divide q heads ({q.shape[1]})")
    if sm_scale is not None and not sm_scale > 0:
        raise ValueError(f"attention: sm_scale must be > 0, got {sm_scale}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")


def check_layer_norm(x, weight, bias, eps, op: str = "layer_norm") -> None:
    _same_dtype_device(op, {"x": x, "weight": weight, "bias": bias})
    n = x.shape[-1] if x.dim() > 0 else None
    if weight.dim() != 1 or weight.shape[0] != n:
        raise ValueError(f"{op}: weight must be shaped ({n},), got {tuple(weight.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != n):
        raise ValueError(f"{op}: bias must be shaped ({n},), got {tuple(bias.shape)}")
    if not eps > 0:
        raise ValueError(f"{op}: eps must be > 0, got {eps}")


def check_linear(x, weight, bias, activation) -> activations.Activation:
    """Checks the inputs of ``linear``; returns the activation's registry entry."""
    if activation not in activations.ACTIVATIONS:
        raise ValueError(
            f"linear: activation must be None or one of {activations.names()}, got {activation!r}"
        )
    _same_dtype_device("linear", {"x": x, "weight": weight, "bias": bias})
    if weight.dim() != 2:
        raise ValueError(f"linear: weight must be (out, in), got shape {tuple(weight.shape)}")
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: inner dimensions disagree: x is {tuple(x.shape)}, "
            f"weight (out, in) is {tuple(weight.shape)}"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(
            f"linear: bias must be shaped ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    return activations.ACTIVATIONS[activation]


def check_causal_conv1d(x, weight, bias, activation) -> activations.Activation:
    """Checks the inputs of ``causal_conv1d``; returns the activation's registry entry."""
    if activation not in activations.ACTIVATIONS:
        raise ValueError(
            f"causal_conv1d: activation must be None or one of {activations.names()}, "
            f"got {activation!r}"
        )
    _same_dtype_device("causal_conv1d", {"x": x, "weight": weight, "bias": bias})
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (B, T, C), got shape {tuple(x.shape)}")
    C = x.shape[2]
    if weight.dim() != 2 or weight.shape[0] != C or weight.shape[1] < 1:
        raise ValueError(
            f"causal_conv1d: weight must be (C, K) = ({C}, K ≥ 1) for x {tuple(x.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != C):
        raise ValueError(f"causal_conv1d: bias must be shaped ({C},), got {tuple(bias.shape)}")
    return activations.ACTIVATIONS[activation]

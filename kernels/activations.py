"""Elementwise activations: one registry entry each, every backend's version side by side.

An entry holds, for one name:

- ``reference``: the plain math in fp32 (the source of truth the tests compare against);
- ``torch``: PyTorch's own op (the "torch" backend);
- ``triton_fwd(z)`` and ``triton_bwd(z, dy)``: bodies of Triton device functions for the
  GEMM epilogue and its backward (dy · act′(z)). ``kernels.gemm`` turns them into
  ``@triton.jit`` functions and passes them to its kernels as ``tl.constexpr`` arguments,
  as Triton's matmul tutorial passes its activation, so a new activation needs no edit
  of the kernel.

Everything else derives from ``ACTIVATIONS``: the input checks of ``kernels.linear``, its
torch and Triton dispatch, the config's choices (``model.activation``), the compile check
and the test parametrisation. ``None`` is the identity. Adding an activation is one
``register(...)`` block below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # Triton device-function bodies refer to ``tl``; without triton they are never built
    import triton.language as tl
except ImportError:  # pragma: no cover - platforms without triton: torch backend only
    tl = None


@dataclass(frozen=True)
class Activation:
    name: str | None
    reference: Callable[[torch.Tensor], torch.Tensor]
    torch: Callable[[torch.Tensor], torch.Tensor]
    triton_fwd: Callable  # (z fp32) -> act(z)
    triton_bwd: Callable  # (z fp32, dy fp32) -> dy · act′(z)
    doc: str = ""


ACTIVATIONS: dict[str | None, Activation] = {}


def register(act: Activation) -> Activation:
    if act.name in ACTIVATIONS:
        raise ValueError(f"activation {act.name!r} is registered twice")
    ACTIVATIONS[act.name] = act
    return act


def names() -> tuple[str, ...]:
    """The activation names a model or ``kernels.linear`` accepts (``None`` aside)."""
    return tuple(n for n in ACTIVATIONS if n is not None)


def get(name: str | None) -> Activation:
    """The registry entry of ``name``. Raises ValueError naming the allowed values."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"activation must be None or one of {names()}, got {name!r}") from None


# -- identity ----------------------------------------------------------------------------
def _identity_fwd(z):
    return z


def _identity_bwd(z, dy):
    return dy


register(Activation(None, lambda z: z, lambda z: z, _identity_fwd, _identity_bwd, "identity"))


# -- relu: max(z, 0) ---------------------------------------------------------------------
def _relu_fwd(z):
    return tl.maximum(z, 0.0)


def _relu_bwd(z, dy):
    return tl.where(z > 0.0, dy, 0.0)


register(Activation("relu", lambda z: torch.clamp_min(z, 0.0), F.relu, _relu_fwd, _relu_bwd))


# -- gelu (exact): z·Φ(z), Φ(z) = ½(1 + erf(z/√2)); gelu′ = Φ(z) + z·φ(z) -----------------
def _gelu_fwd(z):
    return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))


def _gelu_bwd(z, dy):
    cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
    pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327  # φ(z) = e^(−z²/2)/√(2π)
    return dy * (cdf + z * pdf)


register(
    Activation(
        "gelu",
        lambda z: 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0))),
        lambda z: F.gelu(z, approximate="none"),
        _gelu_fwd,
        _gelu_bwd,
    )
)


# -- gelu_tanh (GPT-2): ½z(1 + tanh u), u = √(2/π)(z + 0.044715 z³); ½(1 + tanh u) = σ(2u) --
# gelu_tanh′(z) = s + z·s(1 − s)·2u′ with s = σ(2u), u′ = √(2/π)(1 + 3·0.044715 z²)
# In the kernels z·σ(2u) = z / (1 + 2^(−2u·log₂e)): one exp2 (one MUFU instruction) and a
# fast, non-IEEE division (tl.fdiv, ~2 ulp) where tl.sigmoid pays an exp, a multiply and
# an IEEE-rounded division, a sequence of a dozen instructions; the constant folds
# −2·√(2/π)·log₂e = -2.302208198144325 into one.


def _gelu_tanh_fwd(z):
    e = tl.exp2(-2.302208198144325 * (z + 0.044715 * z * z * z))
    return tl.fdiv(z, 1.0 + e, ieee_rounding=False)


def _gelu_tanh_bwd(z, dy):
    e = tl.exp2(-2.302208198144325 * (z + 0.044715 * z * z * z))
    s = tl.fdiv(1.0, 1.0 + e, ieee_rounding=False)
    du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
    return dy * (s + z * s * (1.0 - s) * 2.0 * du)


def _gelu_tanh_reference(z):
    inner = math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)
    return 0.5 * z * (1.0 + torch.tanh(inner))


register(
    Activation(
        "gelu_tanh",
        _gelu_tanh_reference,
        lambda z: F.gelu(z, approximate="tanh"),
        _gelu_tanh_fwd,
        _gelu_tanh_bwd,
    )
)


# -- silu (swish, Ramachandran et al. 2017): z·σ(z); silu′ = s + z·s(1 − s), s = σ(z) ---------
# With model.mlp=gated it makes SwiGLU (Shazeer 2020).
def _silu_fwd(z):
    return z * tl.sigmoid(z)


def _silu_bwd(z, dy):
    s = tl.sigmoid(z)
    return dy * (s + z * s * (1.0 - s))


register(Activation("silu", lambda z: z / (1.0 + torch.exp(-z)), F.silu, _silu_fwd, _silu_bwd))

"""The ops the model is built from, each dispatched to a backend.

    attention(q, k, v, causal=True, sm_scale=None, dropout_p=0.0)   q, k, v: (B, H, T, D)
    layer_norm(x, weight, bias, eps=1e-5)            x: (..., N)
    rms_norm(x, weight, eps=1e-5)                    x: (..., N)
    linear(x, weight, bias=None, activation=None)    x: (..., K), weight: (N, K)
    causal_conv1d(x, weight, bias=None, activation=None)   x: (B, T, C), weight: (C, K)

Backends:
- "torch": PyTorch's fused ops (``F.scaled_dot_product_attention``, ``F.layer_norm``,
  ``F.linear``); runs anywhere.
- "triton": this package's Triton kernels, on CUDA or, with ``TRITON_INTERPRET=1`` set
  before import, on the CPU through Triton's interpreter (slow; for tests).
- "auto" (default): "triton" for an op that has a kernel when its inputs are on CUDA,
  "torch" otherwise.

``set_backend("torch")`` sets every op; ``set_backend(linear="triton")`` sets one;
``use_backend(...)`` does the same for a ``with`` block. The math all backends must
agree with lives in ``kernels.reference``; the ops and their specs in ``kernels.ops`` and
``kernels.registry``; the activations ``kernels.linear`` fuses in ``kernels.activations``.
"""

from __future__ import annotations

from kernels import activations, ops, reference
from kernels.ops import *  # noqa: F403 - every registered op, by name (kernels.ops.__all__)
from kernels.registry import (
    BACKENDS,
    OPS,
    backend_for,
    get_backend,
    set_backend,
    use_backend,
)

__all__ = [
    "BACKENDS",
    "OPS",
    "activations",
    "backend_for",
    "get_backend",
    "reference",
    "set_backend",
    "use_backend",
    *ops.__all__,
]

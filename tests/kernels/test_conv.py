"""Triton causal convolution (kernels/conv.py) against kernels/reference.py, and the torch
path of ``kernels.causal_conv1d`` against both."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_testing import DEVICE, assert_close, randn

import kernels
from kernels import conv, reference

# (B, T, C, K): odd lengths and channel counts, T shorter than the kernel, one channel,
# channels past one 128-wide block, every kernel size 2–8 across the cases
SHAPES = [
    (2, 37, 19, 4),
    (1, 5, 3, 8),
    (3, 64, 130, 2),
    (2, 129, 7, 3),
    (1, 3, 1, 5),
    (2, 50, 33, 6),
    (1, 17, 45, 7),
]


def _check(shape, dtype, activation, bias: bool, backend: str = "triton"):
    B, T, C, K = shape
    g = torch.Generator().manual_seed(hash((shape, activation, bias)) % 2**31)
    x = randn(B, T, C, dtype=dtype, generator=g, scale=1.5, shift=0.2)
    w = randn(C, K, dtype=dtype, generator=g, scale=0.5)
    b = randn(C, dtype=dtype, generator=g) if bias else None
    dy = randn(B, T, C, dtype=dtype, generator=g)
    inputs = [t for t in (x, w, b) if t is not None]
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    args = (None,) if not bias else ()
    if backend == "triton":
        out = conv.causal_conv1d(*leaves, *args, activation=activation)
    else:
        with kernels.use_backend(causal_conv1d=backend):
            out = kernels.causal_conv1d(*leaves, *args, activation=activation)
    ref = reference.causal_conv1d(*ref_leaves, *args, activation=activation)
    out.backward(dy)
    ref.backward(dy)
    assert_close(out, ref, dtype, "y")
    for name, a, r in zip(("dx", "dw", "db"), leaves, ref_leaves):
        # dw and db sum over every (b, t): a long reduction, in fp32 on both sides
        assert_close(a.grad, r.grad, dtype, name, scale=1 if name == "dx" else 2)


@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_every_gradient_match_reference(shape, dtype, activation):
    _check(shape, dtype, activation, bias=True)


@pytest.mark.parametrize("activation", [None, "gelu_tanh"], ids=str)
def test_without_bias_and_with_any_registered_activation(activation):
    _check((2, 23, 11, 4), torch.float32, activation, bias=False)


def test_many_time_tiles_share_the_partial_weight_gradients():
    # 5 × 600 positions over the interpreter's 4 backward programs: each sums many tiles
    _check((5, 600, 24, 4), torch.float32, "silu", bias=True)


@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
def test_torch_path_matches_reference(activation):
    _check((2, 37, 19, 4), torch.float32, activation, bias=True, backend="torch")
    _check((1, 5, 3, 8), torch.float32, activation, bias=False, backend="torch")


def test_reference_is_a_causal_depthwise_conv1d():
    """The reference equals torch's conv1d with the input left-padded by K − 1, and y[t]
    does not depend on x past t."""
    x, w, b = torch.randn(2, 9, 5), torch.randn(5, 3), torch.randn(5)
    expected = F.conv1d(F.pad(x.transpose(1, 2), (2, 0)), w.unsqueeze(1), b, groups=5)
    torch.testing.assert_close(reference.causal_conv1d(x, w, b), expected.transpose(1, 2))
    later = x.clone()
    later[:, 6:] = torch.randn(2, 3, 5)
    same = reference.causal_conv1d(later, w, b)[:, :6]
    torch.testing.assert_close(same, reference.causal_conv1d(x, w, b)[:, :6])


def test_non_contiguous_input():
    g = torch.Generator().manual_seed(5)
    wide = randn(2, 21, 2 * 13, generator=g)
    x = wide[:, :, ::2]  # channel stride 2
    w = randn(13, 4, generator=g)
    torch.testing.assert_close(
        conv.causal_conv1d(x, w, None, "silu"), reference.causal_conv1d(x, w, None, "silu")
    )


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(2, 5), torch.randn(5, 3)), r"x must be \(B, T, C\)"),
        ((torch.randn(2, 5, 4), torch.randn(5, 3)), r"weight must be \(C, K\) = \(4, K ≥ 1\)"),
        ((torch.randn(2, 5, 4), torch.randn(4, 0)), r"weight must be \(C, K\)"),
        ((torch.randn(2, 5, 4), torch.randn(4, 3), torch.randn(3)), r"bias must be shaped \(4,\)"),
        ((torch.randn(2, 5, 4), torch.randn(4, 3).half()), "mixed dtypes"),
        ((torch.randn(2, 5, 4), torch.randn(4, 3), None, "swish"), "activation must be None or"),
    ],
)
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bad_input_is_a_clear_error(args, match, backend):
    with kernels.use_backend(causal_conv1d=backend), pytest.raises(ValueError, match=match):
        kernels.causal_conv1d(*args)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8, 2048, 1536, 4), (2, 4099, 257, 8)], ids=str)
def test_large_shapes_bf16_on_gpu(shape):
    assert DEVICE == "cuda"
    _check(shape, torch.bfloat16, "silu", bias=True)
    _check(shape, torch.bfloat16, None, bias=False)

"""Triton layer norm and RMSNorm (kernels/layernorm.py) against kernels/reference.py."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import (
    assert_close,
    assert_trains_like_torch,
    randn,
)

import kernels
from kernels import layernorm, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(3, 7, 1000), (2, 5, 1), (17, 768), (4, 3, 20000), (2, 65536)]


def _check(shape, dtype, rms: bool, bias: bool, make_x=None):
    g = torch.Generator().manual_seed(hash((shape, rms, bias)) % 2**31)
    N = shape[-1]
    x = make_x(g) if make_x else randn(*shape, dtype=dtype, generator=g, scale=2, shift=0.5)
    w = randn(N, dtype=dtype, generator=g)
    b = randn(N, dtype=dtype, generator=g) if bias and not rms else None
    dy = randn(*x.shape, dtype=dtype, generator=g)
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    if rms:
        out = layernorm.rms_norm(leaves[0], leaves[1], 1e-5)
        ref = reference.rms_norm(ref_leaves[0], ref_leaves[1], 1e-5)
    else:
        out = layernorm.layer_norm(*leaves, *([] if bias else [None]), 1e-5)
        ref = reference.layer_norm(*ref_leaves, *([] if bias else [None]), 1e-5)
    out.backward(dy)
    ref.backward(dy)
    assert_close(out, ref, dtype, "y")
    # with N = 1, x − mean is 0 and dx is rounding noise through rstd = 1/sqrt(eps)
    for name, a, r in zip(("dx", "dw", "db"), leaves, ref_leaves):
        if name == "dx" and N == 1:
            assert a.grad.abs().max() < 1e-2
            continue
        assert_close(a.grad, r.grad, dtype, name)


NORMS = {"layernorm": (False, True), "layernorm_no_bias": (False, False), "rmsnorm": (True, False)}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_backward_match_reference(shape, dtype, norm):
    rms, bias = NORMS[norm]
    _check(shape, dtype, rms, bias)


@pytest.mark.parametrize("rms", [False, True], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_many_rows_wide(dtype, rms):
    # 143 rows over the interpreter's 4 backward programs: each sums many rows' partial dW
    _check((143, 8192), dtype, rms, bias=True)


@pytest.mark.slow
@pytest.mark.parametrize("rms", [False, True], ids=["layernorm", "rmsnorm"])
def test_many_rows_wide_long(rms):
    _check((1151, 8192), torch.float16, rms, bias=True)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(16384, 768), (32768, 8192), (7, 65536)], ids=str)
def test_large_shapes_bf16_on_gpu(shape):
    _check(shape, torch.bfloat16, rms=False, bias=True)
    _check(shape, torch.bfloat16, rms=True, bias=False)


def test_non_contiguous_inputs():
    def strided_last_dim(g):  # every other column of a wider tensor: column stride 2
        return randn(9, 2 * 300, generator=g)[:, ::2]

    def transposed(g):  # rows that are not contiguous in memory
        return randn(300, 5, 4, generator=g).permute(2, 1, 0)

    _check((9, 300), torch.float32, rms=False, bias=True, make_x=strided_last_dim)
    _check((4, 5, 300), torch.float32, rms=False, bias=True, make_x=transposed)
    _check((4, 5, 300), torch.float32, rms=True, bias=False, make_x=transposed)


def test_weight_gradient_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = randn(333, 1000, generator=g)
    w = randn(1000, generator=g).requires_grad_(True)
    dy = randn(333, 1000, generator=g)
    grads = []
    for _ in range(2):
        w.grad = None
        layernorm.layer_norm(x, w, None).backward(dy)
        grads.append(w.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_dispatch_runs_the_triton_kernel():
    g = torch.Generator().manual_seed(1)
    x, w, b = randn(5, 64, generator=g), randn(64, generator=g), randn(64, generator=g)
    with kernels.use_backend(layer_norm="triton", rms_norm="triton"):
        assert kernels.backend_for("layer_norm", x.device) == "triton"
        assert_close(kernels.layer_norm(x, w, b), reference.layer_norm(x, w, b), torch.float32, "y")
        assert_close(kernels.rms_norm(x, w), reference.rms_norm(x, w), torch.float32, "y")


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda: (randn(4, 8), torch.ones(8, device="meta"), None, 1e-5), "different devices"),
        (lambda: (randn(4, 8), randn(8, dtype=torch.float16), None, 1e-5), "mixed dtypes"),
        (lambda: (randn(4, 8), randn(8), randn(8, dtype=torch.float16), 1e-5), "mixed dtypes"),
        (lambda: (randn(4, 8), randn(4, 2), None, 1e-5), r"weight must be shaped \(8,\)"),
        (lambda: (randn(4, 8), randn(8), randn(7), 1e-5), r"bias must be shaped \(8,\)"),
        (lambda: (randn(4, 8), randn(8), None, 0.0), "eps must be > 0"),
        (lambda: (randn(4, 8), randn(8), None, -1.0), "eps must be > 0"),
    ],
)
def test_bad_input_raises_value_error_naming_it(args, message):
    with kernels.use_backend(layer_norm="triton"), pytest.raises(ValueError, match=message):
        kernels.layer_norm(*args())


def test_demo_model_trains_to_the_same_losses_with_triton_layer_norm(tmp_path):
    assert_trains_like_torch(tmp_path, layer_norm="triton")

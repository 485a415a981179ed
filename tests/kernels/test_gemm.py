"""Triton GEMM with fused bias + activation (kernels/gemm.py) against kernels/reference.py."""

from __future__ import annotations

import pytest
import torch
import triton
from kernel_testing import (
    ON_GPU,
    assert_close,
    assert_trains_like_torch,
    count_tunings,
    randn,
)

import kernels
from kernels import activations, gemm, reference

ACTIVATIONS = list(activations.ACTIVATIONS)  # every registered activation, None included
# bf16 tl.dot is wrong under the CPU interpreter (triton-lang/triton#11584): GPU only
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])
# (leading shape of x, N, K): odd sizes, K below one block, M = 1, K = 1, 3-D x
SHAPES = [((165,), 70, 100), ((1,), 33, 17), ((9,), 5, 1), ((2, 3, 7), 40, 24), ((64,), 257, 32)]


def _check(lead, N, K, dtype, activation, bias=True, make_x=None):
    g = torch.Generator().manual_seed(hash((lead, N, K, activation)) % 2**31)
    x = make_x(g) if make_x else randn(*lead, K, dtype=dtype, generator=g)
    w = randn(N, K, dtype=dtype, generator=g, scale=K**-0.5)
    b = randn(N, dtype=dtype, generator=g) if bias else None
    dy = randn(*x.shape[:-1], N, dtype=dtype, generator=g)
    mine = [t.detach().clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    ref = [t.detach().clone().requires_grad_(True) for t in (x, w, b) if t is not None]
    out = gemm.linear(*mine, *([] if bias else [None]), activation)
    expected = reference.linear(*ref, *([] if bias else [None]), activation)
    out.backward(dy)
    expected.backward(dy)
    assert_close(out, expected, dtype, "y")
    for name, a, r in zip(("dx", "dw", "db"), mine, ref):
        assert_close(a.grad, r.grad, dtype, name)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_gradients_match_reference(shape, dtype, activation):
    _check(*shape, dtype, activation)


@pytest.mark.parametrize("activation", [None, "gelu"], ids=str)
def test_without_bias(activation):
    _check((33,), 20, 50, torch.float32, activation, bias=False)


def test_non_contiguous_x_needs_no_copy_to_be_right():
    def transposed(g):  # (K, M) storage read as (M, K)
        return randn(48, 37, generator=g).t()

    _check((37,), 29, 48, torch.float32, "gelu", make_x=transposed)


def test_forward_without_grad_stores_no_preactivation():
    x, w = randn(16, 32), randn(8, 32)
    with torch.no_grad():
        y = gemm.linear(x, w, None, "gelu")
    assert y.grad_fn is None
    assert_close(y, reference.linear(x, w, None, "gelu"), torch.float32, "y")


@pytest.mark.gpu
@pytest.mark.parametrize("mnk", [(4096, 2304, 768), (2048, 768, 3072), (1000, 50304, 768)], ids=str)
def test_gpt_shapes_bf16_on_gpu(mnk):
    M, N, K = mnk
    _check((M,), N, K, torch.bfloat16, "gelu_tanh")


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda: (randn(3, 5), randn(4, 6), None, None), "inner dimensions"),
        (lambda: (randn(3, 5), randn(4, 5), randn(5), None), r"bias must be shaped \(4,\)"),
        (lambda: (randn(3, 5), randn(4, 5, dtype=torch.float16), None, None), "mixed dtypes"),
        (lambda: (randn(3, 5), torch.ones(4, 5, device="meta"), None, None), "different devices"),
        (lambda: (randn(3, 5), randn(4, 5), None, "swish"), "activation"),
    ],
)
def test_bad_input_raises_value_error_naming_it(args, message):
    with kernels.use_backend(linear="triton"), pytest.raises(ValueError, match=message):
        kernels.linear(*args())


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_demo_model_trains_to_the_same_losses_with_triton_linear(tmp_path):
    assert_trains_like_torch(tmp_path, linear="triton")


def test_autotuning_runs_once_per_power_of_two_bucket_of_the_token_count(monkeypatch):
    """The token count is M of x·Wᵀ and dX, and K of dW; generating token by token changes
    it every step, which must not retune every step."""
    benched = count_tunings(monkeypatch, gemm._matmul_kernel)
    w = randn(24, 40).requires_grad_(True)
    for rows in (65, 70, 100, 128, 129):
        gemm.linear(randn(rows, 40).requires_grad_(True), w).sum().backward()
    # 3 products (x·Wᵀ, dZ·W, dZᵀ·X) × 2 buckets (128, 256) × 2 configs
    assert len(benched) == 12


@pytest.mark.parametrize("tma", ["0", "1"], ids=["pointers", "tma"])
@pytest.mark.parametrize("splits", ["1", "3"], ids=["whole-k", "split-k-3"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_read_paths_and_split_k_match_reference(tma, splits, dtype, monkeypatch):
    """Both read paths (TMA descriptors, emulated by the interpreter; pointers), the
    persistent loop (3 programs on the CPU, more tiles than that here) and split-K (forced;
    it applies to the plain products: dX and dW, and x·Wᵀ without bias or activation)."""
    monkeypatch.setenv("KERNELS_GEMM_TMA", tma)
    monkeypatch.setenv("KERNELS_GEMM_SPLIT_K", splits)
    x, w = randn(100, 200, dtype=dtype), randn(40, 200, dtype=dtype)
    c = torch.empty(100, 40, dtype=dtype)
    assert gemm._use_tma(x, w.t(), (c,))[0] == (tma == "1")  # aligned: TMA takes it
    _check((100,), 40, 200, dtype, "gelu_tanh")
    _check((100,), 40, 200, dtype, None, bias=False)
    _check((2, 70), 48, 96, dtype, "relu")


def test_operands_of_any_layout_take_the_path_they_allow(monkeypatch):
    monkeypatch.setenv("KERNELS_GEMM_TMA", "1")
    x = randn(64, 32)
    assert gemm._layout(x) is False  # row-major
    assert gemm._layout(x.t()) is True  # column-major: a descriptor over its transpose
    assert gemm._layout(randn(64, 64)[::2, ::2]) is None  # neither: pointers
    assert gemm._layout(randn(10, 33)) is None  # rows of 132 bytes: not 16-byte aligned
    assert not gemm._use_tma(randn(64, 64)[::2, ::2], x, (randn(32, 32),))[0]


def test_split_k_rule():
    # GPT-2 small weight gradients on 132 SMs (K = 16384 tokens): too few output tiles
    assert gemm.split_k(3072, 768, 16384, 132) == 2  # 72 tiles of 128×256
    assert gemm.split_k(2304, 768, 16384, 132) == 3  # 54 tiles
    assert gemm.split_k(768, 768, 16384, 132) == gemm.SPLIT_K_MAX  # 18 tiles
    assert gemm.split_k(16384, 3072, 768, 132) == 1  # forward: tiles enough
    assert gemm.split_k(768, 768, 1024, 132) == 2  # capped by K: 8 k-steps of 64 each


@pytest.mark.parametrize(
    "variable, value",
    [("KERNELS_GEMM_SPLIT_K", "0"), ("KERNELS_GEMM_SPLIT_K", "many"), ("KERNELS_GEMM_TMA", "yes")],
)
def test_bad_gemm_settings_are_named(variable, value, monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        gemm.matmul(randn(8, 16), randn(16, 8))


def test_autotune_off_is_honoured_when_set_after_import(monkeypatch):
    benched = count_tunings(monkeypatch, gemm._matmul_kernel)
    first = gemm._matmul_kernel.configs[0]
    monkeypatch.setenv("KERNELS_AUTOTUNE", "0")
    x, w = randn(40, 24), randn(24, 16)
    assert_close(gemm.matmul(x, w)[0], x @ w, torch.float32, "y")
    # only the first config ran (triton 3.6 still times a lone config once; later ones not)
    assert all(c is first for c in benched)
    monkeypatch.setenv("KERNELS_AUTOTUNE", "1")
    before = len(benched)
    gemm.matmul(randn(300, 24), w)  # another bucket of M: tuned over both configs
    assert len(benched) == before + 2


@pytest.mark.parametrize("i", range(len(gemm.GPU_TILES)))
def test_every_tile_the_gpu_autotuner_may_pick(i, monkeypatch):
    """The interpreter runs one 32×32×32 tile; here the i-th GPU tile instead, on both read
    paths, with split-K on every other tile, so a tile-dependent bug (the two-half
    epilogue, the descriptor blocks) cannot hide until a GPU picks it."""
    m, n, k, _, _ = gemm.GPU_TILES[i]
    first = gemm._matmul_kernel.configs[0]
    config = triton.Config(
        {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, pre_hook=first.pre_hook
    )
    monkeypatch.setattr(gemm._matmul_kernel, "configs", [config])
    monkeypatch.setenv("KERNELS_GEMM_SPLIT_K", "2" if i % 2 else "1")
    for tma in ("1", "0"):
        monkeypatch.setenv("KERNELS_GEMM_TMA", tma)
        _check((150,), 264, 96, torch.float16, "gelu_tanh")

"""Triton fused attention (kernels/flash_attention.py) against kernels/reference.py."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import (
    ON_GPU,
    assert_close,
    assert_trains_like_torch,
    demo_config,
    randn,
)

import kernels
from kernels import flash_attention, reference
from lab.train import train

# bf16 tl.dot is wrong under the CPU interpreter (triton-lang/triton#11584): GPU only
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])
# (B, H, Hkv, T, D): T = 1, 77, 1000; D = 8, 40, 64, 128; grouped-query heads
SHAPES = [
    (1, 1, 1, 1, 8),
    (2, 3, 3, 77, 40),
    (1, 2, 2, 77, 128),
    (1, 1, 1, 1000, 64),
    (2, 1, 1, 130, 8),
    (1, 6, 2, 33, 16),
]


def _check(B, H, Hkv, T, D, dtype, causal, sm_scale=None, make_qkv=None):
    g = torch.Generator().manual_seed(hash((B, H, Hkv, T, D, causal)) % 2**31)
    if make_qkv:
        q, k, v = make_qkv(g)
    else:
        q = randn(B, H, T, D, dtype=dtype, generator=g)
        k, v = (randn(B, Hkv, T, D, dtype=dtype, generator=g) for _ in range(2))
    do = randn(*q.shape, dtype=dtype, generator=g)
    mine = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    ref = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = flash_attention.attention(*mine, causal=causal, sm_scale=sm_scale)
    expected = reference.attention(*ref, causal=causal, sm_scale=sm_scale)
    out.backward(do)
    expected.backward(do)
    assert_close(out, expected, dtype, "o")
    for name, a, r in zip(("dq", "dk", "dv"), mine, ref):
        assert_close(a.grad, r.grad, dtype, name)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_output_and_gradients_match_reference(shape, dtype, causal):
    _check(*shape, dtype, causal)


def test_custom_scale():
    _check(1, 2, 2, 50, 32, torch.float32, causal=True, sm_scale=0.3)


def test_views_of_a_fused_qkv_projection():
    B, T, H, D = 2, 45, 3, 24

    def split_qkv(g):  # as the model does: one (B, T, 3·H·D) projection, split, transposed
        qkv = randn(B, T, 3 * H * D, generator=g)
        q, k, v = qkv.split(H * D, dim=2)
        return [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]

    q, _, _ = split_qkv(torch.Generator().manual_seed(0))
    assert not q.is_contiguous()
    _check(B, H, H, T, D, torch.float32, causal=True, make_qkv=split_qkv)


def test_gradients_are_deterministic():
    g = torch.Generator().manual_seed(3)
    q, k, v = (randn(1, 4, 100, 32, generator=g).requires_grad_(True) for _ in range(3))
    do = randn(1, 4, 100, 32, generator=g)
    runs = []
    for _ in range(2):
        for t in (q, k, v):
            t.grad = None
        flash_attention.attention(q, k, v, causal=True).backward(do)
        runs.append([t.grad.clone() for t in (q, k, v)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.gpu
@pytest.mark.parametrize("T, D", [(1024, 64), (2048, 128), (333, 80)])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_longer_sequences_bf16_on_gpu(T, D, causal):
    _check(2, 4, 4, T, D, torch.bfloat16, causal)
    _check(1, 8, 2, T, D, torch.bfloat16, causal)


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((1, 2, 4, 8), (1, 2, 5, 8), (1, 2, 4, 8)), "shapes disagree"),
        (((1, 2, 4, 8), (2, 2, 4, 8), (2, 2, 4, 8)), "disagree in batch or head dim"),
        (((1, 3, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)), "must divide q heads"),
        (((1, 2, 4, 12), (1, 2, 4, 12), (1, 2, 4, 12)), "unsupported head dim D=12"),
        (((1, 2, 4, 136), (1, 2, 4, 136), (1, 2, 4, 136)), "unsupported head dim D=136"),
    ],
)
def test_bad_shapes_raise_value_error_naming_them(shapes, message):
    q, k, v = (randn(*s) for s in shapes)
    with kernels.use_backend(attention="triton"), pytest.raises(ValueError, match=message):
        kernels.attention(q, k, v)


def test_mixed_dtypes_or_devices_raise_value_error():
    q, k = randn(1, 2, 4, 8), randn(1, 2, 4, 8)
    with kernels.use_backend(attention="triton"):
        with pytest.raises(ValueError, match="mixed dtypes"):
            kernels.attention(q, k, randn(1, 2, 4, 8, dtype=torch.float16))
        with pytest.raises(ValueError, match="different devices"):
            kernels.attention(q, k, torch.ones(1, 2, 4, 8, device="meta"))


def test_demo_model_trains_to_the_same_losses_with_triton_attention(tmp_path):
    assert_trains_like_torch(tmp_path, attention="triton")


def test_whole_model_on_triton_kernels_matches_torch(tmp_path):
    torch_run = train(demo_config(tokens=64 * 3), tmp_path / "torch")
    cfg = demo_config(tokens=64 * 3)
    cfg.train.backend = "triton"
    triton_run = train(cfg, tmp_path / "triton")
    assert set(triton_run["backends"].values()) == {"triton"}
    tol = 1e-5 if not ON_GPU else 1e-2
    assert abs(torch_run["val_loss"] - triton_run["val_loss"]) < tol

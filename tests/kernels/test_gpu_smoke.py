"""The GPU check's first stage (scripts/gpu_check.sh): every op in bf16 on CUDA, one or two
shapes each, against kernels/reference.py, in about two minutes of a short GPU window
(bf16 ``tl.dot`` is wrong under the CPU interpreter, triton-lang/triton#11584, so this is
where bf16 is first checked). Attention on both read paths, with grouped-query heads, the
views a fused QKV projection gives, dropout and the atomic dQ path; the GEMM's fused
epilogue and a split-K weight gradient; layer norm and RMSNorm narrow and wide; the causal
convolution. The longer bf16 checks stay in ``make test-gpu``."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import assert_close, randn
from test_attention import _check as check_attention
from test_conv import _check as check_conv
from test_gemm import _check as check_linear
from test_layernorm import _check as check_norm

from kernels import gemm

pytestmark = pytest.mark.gpu
BF16 = torch.bfloat16


@pytest.mark.parametrize("tma", ["1", "0"], ids=["tma", "pointers"])
def test_attention_bf16(tma, monkeypatch):
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", tma)
    check_attention(2, 4, 4, 1024, 64, BF16, causal=True)
    check_attention(1, 8, 2, 333, 128, BF16, causal=False)  # grouped-query, ragged T


def test_attention_bf16_views_dropout_and_atomic_dq(monkeypatch):
    B, T, H, D = 2, 512, 4, 64

    def split_qkv(g):  # one (B, T, 3·H·D) projection, split and transposed, no copy
        qkv = randn(B, T, 3 * H * D, dtype=BF16, generator=g)
        return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2)]

    check_attention(B, H, H, T, D, BF16, causal=True, make_qkv=split_qkv)
    check_attention(1, 4, 4, 700, 64, BF16, causal=True, dropout_p=0.1)
    monkeypatch.setenv("KERNELS_ATTENTION_DQ", "atomic")
    check_attention(1, 8, 2, 1024, 128, BF16, causal=True)


def test_linear_bf16():
    check_linear((4096,), 2304, 768, BF16, "gelu_tanh")
    check_linear((1000,), 3072, 768, BF16, None, bias=False)


def test_weight_gradient_split_along_k_bf16(monkeypatch):
    g = torch.Generator().manual_seed(0)
    dz, x = randn(16384, 768, dtype=BF16, generator=g), randn(16384, 768, dtype=BF16, generator=g)
    M, N, K = 768, 768, 16384
    assert gemm.split_k(M, N, K, gemm._programs(torch.device("cuda"))) > 1
    expected = (dz.float().t() @ x.float()).to(BF16)
    for tma in ("1", "0"):
        monkeypatch.setenv("KERNELS_GEMM_TMA", tma)
        assert_close(gemm.matmul(dz.t(), x)[0], expected, BF16, f"dW ({tma=})")


@pytest.mark.parametrize("N", [768, 4096])
def test_norms_bf16(N):
    check_norm((4096, N), BF16, rms=False, bias=True)
    check_norm((4096, N), BF16, rms=True, bias=False)


def test_causal_conv1d_bf16():
    check_conv((4, 2048, 1536, 4), BF16, "silu", bias=True)

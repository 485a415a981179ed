"""kernels.reference against PyTorch's own fused ops: output and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import reference

# (dtype, atol, rtol): the reference computes in fp32, PyTorch's ops in the input dtype
TOL = {
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def _grads(fn, inputs, grad_out):
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in inputs]


def _close(a, b, dtype, atol_scale=1.0):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a.float(), b.float(), atol=atol * atol_scale, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 1, 8), (2, 3, 77, 40), (1, 2, 130, 64)])
def test_attention_matches_sdpa(shape, causal, dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(shape, generator=g).to(dtype) for _ in range(4))
    ref_out, ref_grads = _grads(lambda q, k, v: reference.attention(q, k, v, causal), [q, k, v], do)
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
    out, grads = _grads(sdpa, [q, k, v], do)
    _close(ref_out, out, dtype)
    for a, b in zip(ref_grads, grads):
        _close(a, b, dtype)


def test_attention_scale_and_grouped_query_heads():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, 33, 16, generator=g)
    k, v = torch.randn(2, 2, 33, 16, generator=g), torch.randn(2, 2, 33, 16, generator=g)
    out = reference.attention(q, k, v, causal=True, sm_scale=0.3)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3, enable_gqa=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_attention_probs_rows_sum_to_one_and_reproduce_output():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 9, 8, generator=g) for _ in range(3))
    p = reference.attention_probs(q, k, causal=True)
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 2, 9))
    assert torch.all(p.triu(diagonal=1) == 0)
    torch.testing.assert_close(
        p @ v, reference.attention(q, k, v, causal=True), atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 7, 1000), (2, 5, 1), (17, 768)])
def test_layer_norm_matches_torch(shape, dtype):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(dtype)
    w = torch.randn(shape[-1], generator=g).to(dtype)
    b = torch.randn(shape[-1], generator=g).to(dtype)
    dy = torch.randn(shape, generator=g).to(dtype)
    ref_out, ref_grads = _grads(lambda x, w, b: reference.layer_norm(x, w, b, 1e-5), [x, w, b], dy)
    f = lambda x, w, b: F.layer_norm(x.float(), (shape[-1],), w.float(), b.float(), 1e-5).to(dtype)  # noqa: E731
    out, grads = _grads(f, [x, w, b], dy)
    _close(ref_out, out, dtype)
    # with N = 1, x - mean is 0 and rounding goes through rstd = 1/sqrt(eps) ≈ 316
    scale = 5.0 if shape[-1] == 1 else 1.0
    for a, bb in zip(ref_grads, grads):
        _close(a, bb, dtype, atol_scale=scale)


def test_rms_norm_matches_torch():
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(5, 3, 257, generator=g), torch.randn(257, generator=g)
    torch.testing.assert_close(
        reference.rms_norm(x, w, 1e-6), F.rms_norm(x, (257,), w, 1e-6), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mnk", [(165, 70, 100), (1, 33, 17), (9, 5, 1)])
def test_linear_matches_torch(mnk, dtype, activation):
    M, N, K = mnk
    g = torch.Generator().manual_seed(5)
    x = torch.randn(M, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    dy = torch.randn(M, N, generator=g).to(dtype)
    ref_out, ref_grads = _grads(
        lambda x, w, b: reference.linear(x, w, b, activation), [x, w, b], dy
    )
    act = {
        None: lambda z: z,
        "relu": F.relu,
        "gelu": F.gelu,
        "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    }[activation]
    out, grads = _grads(
        lambda x, w, b: act(F.linear(x.float(), w.float(), b.float())).to(dtype), [x, w, b], dy
    )
    _close(ref_out, out, dtype)
    for a, bb in zip(ref_grads, grads):
        _close(a, bb, dtype)


def test_unknown_activation_is_an_error():
    with pytest.raises(ValueError, match="activation"):
        reference.apply_activation(torch.ones(2), "swish")

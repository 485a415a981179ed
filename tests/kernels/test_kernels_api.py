"""The public ops: backend dispatch, agreement with the reference, input checks."""

from __future__ import annotations

import pytest
import torch

import kernels
from kernels import reference


def test_torch_backend_agrees_with_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 21, 16, generator=g) for _ in range(3))
    with kernels.use_backend("torch"):
        torch.testing.assert_close(
            kernels.attention(q, k, v), reference.attention(q, k, v), atol=1e-5, rtol=1e-5
        )
        x, w, b = (
            torch.randn(4, 7, 24, generator=g),
            torch.randn(24, generator=g),
            torch.randn(24, generator=g),
        )
        torch.testing.assert_close(
            kernels.layer_norm(x, w, b), reference.layer_norm(x, w, b), atol=1e-5, rtol=1e-5
        )
        W = torch.randn(11, 24, generator=g)
        torch.testing.assert_close(
            kernels.linear(x, W, None, "gelu"),
            reference.linear(x, W, None, "gelu"),
            atol=1e-5,
            rtol=1e-5,
        )


def test_auto_resolves_to_torch_on_cpu_and_use_backend_restores():
    assert kernels.backend_for("linear", "cpu") == "torch"
    before = kernels.get_backend()
    with kernels.use_backend("torch", linear="auto"):
        assert kernels.get_backend()["attention"] == "torch"
        assert kernels.get_backend()["linear"] == "auto"
    assert kernels.get_backend() == before


def test_triton_backend_without_a_kernel_names_the_op(monkeypatch):
    from kernels.registry import OPS

    spec = OPS["linear"]  # as before its kernel landed
    monkeypatch.setitem(OPS, "linear", type(spec)(spec.name, spec.reference, None, None))
    with pytest.raises(ValueError, match="op 'linear' has no Triton kernel"):
        kernels.set_backend(linear="triton")
    with pytest.raises(ValueError, match="'linear'"):
        kernels.set_backend("triton")


def test_unknown_backend_and_op_are_errors():
    with pytest.raises(ValueError, match="backend"):
        kernels.set_backend("cuda")
    with pytest.raises(ValueError, match="unknown op"):
        kernels.set_backend(matmul="torch")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kernels.linear(torch.randn(3, 5), torch.randn(4, 6)), "inner dimensions"),
        (lambda: kernels.linear(torch.randn(3, 5), torch.randn(4, 5), torch.randn(5)), "bias"),
        (lambda: kernels.linear(torch.randn(3, 5), torch.randn(4, 5).double()), "mixed dtypes"),
        (
            lambda: kernels.linear(torch.randn(3, 5), torch.randn(4, 5), activation="swish"),
            "activation",
        ),
        (lambda: kernels.layer_norm(torch.randn(3, 5), torch.randn(4), None), "weight"),
        (
            lambda: kernels.layer_norm(torch.randn(3, 5), torch.randn(5), torch.randn(5), eps=0),
            "eps",
        ),
        (
            lambda: kernels.layer_norm(torch.randn(3, 5), torch.randn(5).half(), None),
            "mixed dtypes",
        ),
        (
            lambda: kernels.attention(
                torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 4, 8)
            ),
            "shapes disagree",
        ),
        (
            lambda: kernels.attention(
                torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
            ),
            "divide",
        ),
        (
            lambda: kernels.attention(
                torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 16), torch.randn(1, 2, 4, 16)
            ),
            "head dim",
        ),
    ],
)
def test_bad_inputs_raise_value_errors_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()

"""One place for each fact: every activation and op name the config or a caller can give
resolves on every backend, and an unknown one is a clear error, never a silent default."""

from __future__ import annotations

import importlib

import pytest
import torch

import kernels
from kernels import activations, bench, reference
from kernels.registry import OPS, kernel_groups, triton_entry
from lab.config.composition import compose
from lab.config.counting import param_counts
from lab.config.rules import validate
from lab.config.schema import ActivationName, ModelConfig
from lab.model.gpt import GPT

NAMES = list(activations.ACTIVATIONS)  # None (identity) included


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_every_activation_agrees_on_every_backend(name):
    """reference, torch, Triton (interpreter) forward and backward: the same function."""
    z = torch.randn(7, 33, generator=torch.Generator().manual_seed(3)) * 3
    x, w = z.clone().requires_grad_(True), torch.eye(33).requires_grad_(True)
    expected = activations.get(name).reference(z)
    torch.testing.assert_close(activations.get(name).torch(z), expected, atol=1e-5, rtol=1e-5)
    outputs = {}
    for backend in ("torch", "triton"):
        xb = x.detach().clone().requires_grad_(True)
        with kernels.use_backend(linear=backend):
            y = kernels.linear(xb, w.detach(), None, name)
        y.backward(torch.ones_like(y))
        outputs[backend] = (y.detach(), xb.grad)
    torch.testing.assert_close(outputs["triton"][0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs["torch"][0], expected, atol=1e-5, rtol=1e-5)
    zr = z.clone().requires_grad_(True)
    activations.get(name).reference(zr).sum().backward()
    for backend, (_, grad) in outputs.items():
        torch.testing.assert_close(grad, zr.grad, atol=1e-4, rtol=1e-4, msg=backend)


def test_config_choices_are_exactly_the_registered_activations():
    assert set(ActivationName.values()) == set(activations.names())


@pytest.mark.parametrize("name", activations.names())
@pytest.mark.parametrize("mlp", ["plain", "gated"])
def test_every_activation_builds_a_model_and_counts_it(name, mlp):
    cfg = compose([f"model.activation={name}", f"model.mlp={mlp}", "model=nano"])
    validate(cfg)
    model_cfg = ModelConfig(**{**cfg.model.__dict__, "vocab_size": 11})
    model = GPT(model_cfg)
    assert sum(p.numel() for p in model.parameters()) == param_counts(model_cfg)["total"]
    logits, loss = model(torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 5)))
    assert logits.shape == (2, 5, 11) and torch.isfinite(loss)


def test_unknown_activation_is_an_error_everywhere():
    with pytest.raises(ValueError, match="activation must be None or one of"):
        kernels.linear(torch.randn(2, 3), torch.randn(4, 3), activation="swish")
    with pytest.raises(ValueError, match="activation"):
        reference.apply_activation(torch.ones(2), "swish")
    with pytest.raises(ValueError, match=r"model\.activation must be one of"):
        ModelConfig(activation="swish")
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose(["model.activation=swish"])


def test_legacy_swiglu_config_reads_as_gated_silu():
    cfg = ModelConfig(activation="swiglu")
    assert (cfg.activation, cfg.mlp) == ("silu", "gated")


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_resolves_on_every_backend(op):
    spec = OPS[op]
    assert callable(getattr(kernels, op)) and callable(spec.reference)
    for backend in kernels.BACKENDS:
        with kernels.use_backend(**{op: backend}):
            assert kernels.backend_for(op, "cpu") in ("torch", "triton")
    if spec.triton:
        assert callable(triton_entry(op))
        module = importlib.import_module(spec.triton_module)
        # compile_check and bench derive their lists from the op's kernel group
        assert spec.group in bench.SUITES
        assert module.COMPILE_KERNELS and all(hasattr(module, k) for k in module.COMPILE_KERNELS)
        assert callable(module.compile_cases)


def test_kernel_groups_cover_every_triton_op():
    groups = kernel_groups()
    assert set(groups) == {s.group for s in OPS.values() if s.triton}
    assert set(bench.SUITES) == set(groups)


def test_unknown_op_in_config_is_an_error():
    cfg = compose(["+train.backend_ops.matmul=torch"])
    with pytest.raises(ValueError, match="unknown op"):
        validate(cfg)


def test_checkpoint_written_before_the_mlp_field_loads(tmp_path):
    """A checkpoint whose model_config predates ``model.mlp`` (SwiGLU spelled
    ``activation: swiglu``, no ``mlp`` key) loads into the same model."""
    import dataclasses

    from lab.runs.artifacts import load_model
    from lab.runs.checkpoint import save_checkpoint

    model = GPT(ModelConfig(activation="silu", mlp="gated", vocab_size=11, d_model=32))
    old = {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(model.cfg)}
    old = {k: str(v) if isinstance(v, str) else v for k, v in old.items() if k != "mlp"}
    old["activation"] = "swiglu"
    payload = {"model": model.state_dict(), "model_config": old, "tokenizer": None}
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    loaded, _ = load_model(tmp_path / "checkpoint.pt")
    ids = torch.randint(0, 11, (2, 7))
    torch.testing.assert_close(loaded(ids)[0], model.eval()(ids)[0])

"""Attributions (lab/inspection/attribution.py, Captum): Integrated Gradients' completeness, Shapley
values of tokens the prediction cannot see, and a planted dependency found."""

from __future__ import annotations

import pytest
import torch

from lab.config.schema import ModelConfig
from lab.model.gpt import GPT

pytest.importorskip("captum")
from lab.inspection import attribution  # noqa: E402

MIXERS = ["attention", "conv", "lstm"]


def tiny(mixer: str, vocab: int = 20, context: int = 12, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        n_layer=2, n_head=2, d_model=32, context=context, vocab_size=vocab, mixer=mixer
    )
    return GPT(cfg).eval()


@pytest.mark.parametrize("mixer", MIXERS)
def test_integrated_gradients_are_complete(mixer):
    """Σ attributions = f(text) − f(baseline) within 1% (Sundararajan et al.'s axiom)."""
    model = tiny(mixer)
    ids = torch.randint(1, 20, (1, 12), generator=torch.Generator().manual_seed(4))
    out = attribution.attribute(model, ids, 11, 7, 0, methods=("ig",), n_steps=64)
    gap = out["f_text"] - out["f_baseline"]
    assert abs(gap) > 1e-3  # a non-trivial difference to explain
    assert sum(out["ig"]) == pytest.approx(gap, rel=0.01)


@pytest.mark.parametrize("mixer", MIXERS)
def test_shapley_values_of_unseen_tokens_are_exactly_zero(mixer):
    """Tokens after the explained position cannot change a causal model's prediction there;
    the Shapley values are exactly zero, and the values still sum to f(text) − f(baseline)."""
    model = tiny(mixer)
    ids = torch.randint(1, 20, (1, 12), generator=torch.Generator().manual_seed(5))
    out = attribution.attribute(model, ids, 6, 3, 0, methods=("shap",), n_samples=8)
    assert out["shap"][7:] == [0.0] * 5
    assert any(v != 0.0 for v in out["shap"][:7])
    assert sum(out["shap"]) == pytest.approx(out["f_text"] - out["f_baseline"], rel=1e-4)


def test_a_planted_dependency_gets_the_largest_attribution():
    """A model trained to copy the token 3 places back: the prediction after position t
    rests on token t − 2 (the one it will copy as token t + 1) more than on any other."""
    torch.manual_seed(0)
    vocab, context, back = 16, 12, 3
    cfg = ModelConfig(n_layer=1, n_head=2, d_model=32, context=context, vocab_size=vocab)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        x = torch.randint(1, vocab, (64, context))
        # the token after position t is the one 3 back from it: x[t + 1 − 3]
        targets = torch.full_like(x, -1)  # -1: no target where t + 1 − 3 < 0
        targets[:, back - 1 :] = x[:, : context - back + 1]
        _, loss = model(x, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3, loss.item()  # it learned to copy
    model.eval()
    ids = torch.randint(1, vocab, (1, context), generator=torch.Generator().manual_seed(9))
    t = 8
    target = int(ids[0, t + 1 - back])
    out = attribution.attribute(model, ids, t, target, 0, n_samples=16, n_steps=64)
    for method in ("shap", "ig"):
        values = out[method]
        assert max(range(context), key=lambda i: values[i]) == t + 1 - back, (method, values)

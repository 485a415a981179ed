"""The GPT model and its counting."""

from __future__ import annotations

import pytest
import torch

from lab.config import ModelConfig
from lab.counting import flops_per_token, param_counts, training_flops
from lab.model import GPT

NANO = ModelConfig(name="nano", n_layer=2, n_head=2, d_model=32, context=128, vocab_size=257)


def test_param_counts_equal_a_hand_count():
    # d=32, d_ff=128, L=2, V=257, T=128, biases on, tied head. Per layer:
    #   2 norms 2·(32+32)=128; qkv 32·96+96=3168; proj 32·32+32=1056;
    #   fc 32·128+128=4224; fc proj 128·32+32=4128  → 12704
    # non-embedding: 2·12704 + final norm 64 = 25472
    # embedding: tokens 257·32=8224 + positions 128·32=4096 = 12320
    counts = param_counts(NANO)
    assert counts == {"total": 37792, "non_embedding": 25472, "embedding": 12320}
    assert sum(p.numel() for p in GPT(NANO).parameters()) == counts["total"]


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(
            n_layer=3,
            n_head=3,
            d_model=48,
            d_ff=100,
            context=17,
            vocab_size=300,
            bias=False,
            tie_embeddings=False,
        ),
        ModelConfig(n_layer=1, n_head=1, d_model=8, context=4, vocab_size=257, activation="relu"),
    ],
)
def test_param_counts_match_the_model_for_other_shapes(cfg):
    model = GPT(cfg)
    counts = param_counts(cfg)
    assert sum(p.numel() for p in model.parameters()) == counts["total"]
    embedding = model.wte.weight.numel() + model.wpe.weight.numel()
    if model.head is not None:
        embedding += model.head.weight.numel()
    assert counts["embedding"] == embedding


def test_flops_conventions():
    f = flops_per_token(NANO)
    assert f["6N"] == 6 * 25472
    assert f["6N_attn"] == 6 * 25472 + 12 * 2 * 128 * 32
    assert f["6N_attn_head"] == f["6N_attn"] + 6 * 32 * 257
    assert training_flops(NANO, 1000)["6N"] == 6 * 25472 * 1000


def test_loss_falls_when_overfitting_one_batch():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, d_model=32, context=16, vocab_size=257)
    model = GPT(cfg)
    x = torch.randint(0, 257, (4, 16))
    y = torch.randint(0, 257, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, first = model(x, y)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first.item() > 5.0  # about log(257) at init
    assert loss.item() < 0.5 * first.item()


def test_sequence_longer_than_context_is_an_error():
    model = GPT(ModelConfig(n_layer=1, n_head=1, d_model=8, context=4, vocab_size=257))
    with pytest.raises(ValueError, match="positional table"):
        model(torch.zeros(1, 5, dtype=torch.long))

"""The GPT model and its counting."""

from __future__ import annotations

import pytest
import torch

from lab.config.counting import flops_per_token, param_counts, training_flops
from lab.config.schema import ModelConfig
from lab.model.gpt import GPT

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


def test_mixers_count_by_hand():
    """NANO's shape (d=32, L=2, V=257, T=128) with each token mixer. Per layer, beside the
    norms (128) and the MLP (4224 + 4128 = 8352):
      conv: in 32·64+64 = 2112; filters 64·4 + 64 = 320; out 32·32+32 = 1056 → 3488
      lstm: 4 gates · (32·32 + 32·32 + 32 + 32) = 8448
    non-embedding: 2·(128 + mixer + 8352) + 64."""
    conv = ModelConfig(**{**NANO.__dict__, "mixer": "conv", "conv_kernel": 4})
    lstm = ModelConfig(**{**NANO.__dict__, "mixer": "lstm"})
    assert param_counts(conv)["non_embedding"] == 2 * (128 + 3488 + 8352) + 64 == 24000
    assert param_counts(lstm)["non_embedding"] == 2 * (128 + 8448 + 8352) + 64 == 33920
    for cfg in (conv, lstm):
        assert param_counts(cfg)["embedding"] == param_counts(NANO)["embedding"]
        assert sum(p.numel() for p in GPT(cfg).parameters()) == param_counts(cfg)["total"]
        # each weight is used once per token: no attention term
        f = flops_per_token(cfg)
        assert f["6N_attn"] == f["6N"] == 6 * param_counts(cfg)["non_embedding"]
        assert f["6N_attn_head"] == f["6N"] + 6 * 32 * 257
    bare = ModelConfig(**{**NANO.__dict__, "mixer": "conv", "conv_kernel": 3, "bias": False})
    assert sum(p.numel() for p in GPT(bare).parameters()) == param_counts(bare)["total"]


@pytest.mark.parametrize("mixer", ["attention", "conv", "lstm"])
def test_every_mixer_is_causal_and_learns(mixer):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, d_model=32, context=16, vocab_size=50, mixer=mixer)
    model = GPT(cfg)
    x = torch.randint(0, 50, (4, 16))
    later = x.clone()
    later[:, 9:] = torch.randint(0, 50, (4, 7))
    model.eval()
    torch.testing.assert_close(model(later)[0][:, :9], model(x)[0][:, :9])
    assert (model(later)[0][:, 9:] - model(x)[0][:, 9:]).abs().max() > 1e-4
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, first = model(x, x.roll(-1, 1))
    for _ in range(60):
        _, loss = model(x, x.roll(-1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first.item()


def test_conv_mixer_sees_exactly_its_receptive_field():
    """One conv block of K taps: the output at t depends on tokens t−K+1 … t only (learned
    positions aside, the MLP is per position)."""
    torch.manual_seed(1)
    cfg = ModelConfig(n_layer=1, n_head=1, d_model=16, context=12, vocab_size=20, mixer="conv")
    model = GPT(cfg).eval()
    x = torch.randint(0, 20, (1, 12))
    far = x.clone()
    far[0, 2] = (x[0, 2] + 1) % 20  # 4+ positions before t = 6
    torch.testing.assert_close(model(far)[0][:, 6:], model(x)[0][:, 6:])
    near = x.clone()
    near[0, 4] = (x[0, 4] + 1) % 20  # within K = 4 of t = 6
    assert (model(near)[0][:, 6] - model(x)[0][:, 6]).abs().max() > 1e-5


@pytest.mark.parametrize("mixer", ["attention", "conv"])
def test_block_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations(mixer):
    cfg = ModelConfig(n_layer=4, n_head=2, d_model=32, context=24, vocab_size=97, mixer=mixer)
    cfg.dropout = 0.1  # the recomputed forward must draw the same dropout masks
    torch.manual_seed(0)
    x = torch.randint(0, 97, (3, 24))
    results = {}
    for recompute in (False, True):
        torch.manual_seed(1)
        model = GPT(cfg)
        model.checkpoint_blocks = recompute
        saved = []

        def keep(t, saved=saved):
            saved.append(t.numel() * t.element_size())
            return t

        torch.manual_seed(2)
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            _, loss = model(x, x)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results[recompute] = (loss.item(), grads, sum(saved))
    (loss_a, grads_a, kept_a), (loss_b, grads_b, kept_b) = results[False], results[True]
    assert loss_b == pytest.approx(loss_a, abs=1e-6)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, atol=1e-6, rtol=1e-5)
    assert kept_b < 0.5 * kept_a, (kept_a, kept_b)
    with torch.no_grad():  # evaluation is not recomputed
        model(x)


@pytest.mark.gpu
def test_block_checkpointing_on_cuda_with_the_triton_kernels():
    """On a GPU, bf16 autocast and the Triton kernels: the recomputed blocks give the
    gradients the kept ones do (to bf16 rounding)."""
    import kernels

    cfg = ModelConfig(n_layer=3, n_head=4, d_model=256, context=256, vocab_size=1000)
    cfg.positions, cfg.norm, cfg.mlp, cfg.activation = "rope", "rmsnorm", "gated", "silu"
    x = torch.randint(0, 1000, (4, 256), device="cuda")
    grads = []
    with kernels.use_backend("triton"):
        for recompute in (False, True):
            torch.manual_seed(0)
            model = GPT(cfg).cuda()
            model.checkpoint_blocks = recompute
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = model(x, x)
            loss.backward()
            grads.append({n: p.grad.float() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=2e-2, rtol=2e-2, msg=name)

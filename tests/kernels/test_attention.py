"""Triton fused attention (kernels/flash_attention.py) against kernels/reference.py."""

from __future__ import annotations

import pytest
import torch
import triton
from kernel_testing import (
    ON_GPU,
    assert_close,
    assert_trains_like_torch,
    count_tunings,
    demo_config,
    metrics,
    randn,
)

import kernels
from kernels import flash_attention, reference
from lab.training.run import train

TUNERS = [flash_attention._attn_fwd, flash_attention._attn_bwd_dkdv, flash_attention._attn_bwd_dq]
TUNINGS = [flash_attention.FWD_TUNING, flash_attention.DKDV_TUNING, flash_attention.DQ_TUNING]
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


@pytest.fixture(params=["pointers", "tma"])
def read_path(request, monkeypatch):
    """Each test twice: tiles read through masked pointer loads, and through TMA tensor
    descriptors (emulated by the interpreter on the CPU; sm_90+ on a GPU)."""
    tma = request.param == "tma"
    if tma and ON_GPU and torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("TMA descriptors need sm_90 or later")
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", "1" if tma else "0")
    return request.param


def _check(B, H, Hkv, T, D, dtype, causal, sm_scale=None, make_qkv=None, dropout_p=0.0):
    g = torch.Generator().manual_seed(hash((B, H, Hkv, T, D, causal)) % 2**31)
    if make_qkv:
        q, k, v = make_qkv(g)
    else:
        q = randn(B, H, T, D, dtype=dtype, generator=g)
        k, v = (randn(B, Hkv, T, D, dtype=dtype, generator=g) for _ in range(2))
    do = randn(*q.shape, dtype=dtype, generator=g)
    mine = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    ref = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    out = flash_attention.attention(*mine, causal, sm_scale, dropout_p, seed=seed)
    keep = None
    if dropout_p > 0:  # the mask the kernels drew, materialised for the reference
        keep = flash_attention.dropout_mask(seed, (B, H, T, T), dropout_p, q.device)
    expected = reference.attention(*ref, causal, sm_scale, dropout_p, keep)
    out.backward(do)
    expected.backward(do)
    assert_close(out, expected, dtype, "o")
    for name, a, r in zip(("dq", "dk", "dv"), mine, ref):
        assert_close(a.grad, r.grad, dtype, name)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_output_and_gradients_match_reference(shape, dtype, causal, read_path):
    _check(*shape, dtype, causal)


def test_custom_scale(read_path):
    _check(1, 2, 2, 50, 32, torch.float32, causal=True, sm_scale=0.3)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 3, 77, 40), (1, 6, 2, 130, 64), (3, 1, 1, 5, 8)], ids=str)
def test_dropout_output_and_gradients_match_reference_with_the_same_mask(
    shape, dtype, causal, read_path
):
    _check(*shape, dtype, causal, dropout_p=0.3)


@pytest.mark.parametrize("i", range(max(map(len, TUNINGS))))
def test_every_tile_shape_the_gpu_autotuner_may_pick(i, monkeypatch, read_path):
    """The interpreter runs one 64×64 tile; here each kernel runs the i-th tile of its GPU
    tuning list instead, so a shape-dependent bug cannot hide until a GPU picks it."""
    for tuner, tuning in zip(TUNERS, TUNINGS):
        m, n = tuning[i % len(tuning)][:2]
        config = triton.Config({"BLOCK_M": m, "BLOCK_N": n}, pre_hook=tuner.configs[0].pre_hook)
        monkeypatch.setattr(tuner, "configs", [config])
    _check(1, 2, 1, 150, 40, torch.float32, causal=True, dropout_p=0.1 if i % 2 else 0.0)
    _check(1, 2, 1, 150, 40, torch.float32, causal=False)


def test_autotuning_runs_once_per_power_of_two_bucket_of_t(monkeypatch):
    """Generating token by token grows T by one a step: that must not retune each step."""
    benched = [count_tunings(monkeypatch, tuner) for tuner in TUNERS]
    for T in (65, 70, 100, 128, 129):
        q, k, v = (randn(1, 2, T, 16).requires_grad_(True) for _ in range(3))
        flash_attention.attention(q, k, v).sum().backward()
    assert [len(b) for b in benched] == [4, 4, 4]  # 2 configs × 2 buckets (128, 256) each


def test_dropout_mask_drops_the_asked_fraction_independently_per_head_and_seed():
    shape, p = (2, 3, 200, 200), 0.25
    keep = flash_attention.dropout_mask(7, shape, p, "cpu")
    n = keep.numel()  # 240k draws: the kept fraction's SD is 0.0009
    assert abs(keep.float().mean().item() - (1 - p)) < 0.005
    assert torch.equal(keep, flash_attention.dropout_mask(7, shape, p, "cpu"))
    other = flash_attention.dropout_mask(8, shape, p, "cpu")
    heads = keep.view(6, -1).float()
    # independent masks agree on a fraction p² + (1 − p)² of positions (0.625), ± 0.005
    for a, b in [(keep.float(), other.float()), (heads[0], heads[1]), (heads[2], heads[5])]:
        assert abs((a == b).float().mean().item() - 0.625) < 0.01, n
    # neighbouring keys (which share a Philox call, one word each) and queries are
    # independent too: agreement at lags 1, 2, 3 (inside a 4-key group) and 4 (across)
    for lag in (1, 2, 3, 4):
        a, b = keep[..., :-lag].float(), keep[..., lag:].float()
        assert abs((a == b).float().mean().item() - 0.625) < 0.01, lag
    a, b = keep[..., :-1, :].float(), keep[..., 1:, :].float()
    assert abs((a == b).float().mean().item() - 0.625) < 0.01
    # nor is it striped along queries or keys: kept fractions per row and column are flat
    assert keep.float().mean(dim=-1).std().item() < 0.06
    assert keep.float().mean(dim=-2).std().item() < 0.06


def test_dropout_seed_comes_from_torch_generator():
    q, k, v = (randn(1, 2, 40, 16) for _ in range(3))
    torch.manual_seed(5)
    a = flash_attention.attention(q, k, v, dropout_p=0.2)
    torch.manual_seed(5)
    b = flash_attention.attention(q, k, v, dropout_p=0.2)
    c = flash_attention.attention(q, k, v, dropout_p=0.2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    full = flash_attention.attention(q, k, v)
    assert not torch.allclose(a, full, atol=1e-3)


@pytest.mark.slow  # 3 models under the interpreter; the op-level dropout tests run in make test
def test_model_trains_with_triton_attention_dropout_reproducibly(tmp_path):
    def losses(name, p):
        cfg = demo_config(tokens=64 * 3, attention="triton")
        cfg.model.attn_dropout = p
        assert train(cfg, tmp_path / name)["backends"]["attention"] == "triton"
        return [(r["train_loss"], r["val_loss"]) for r in metrics(tmp_path / name)]

    a, b, none = losses("a", 0.2), losses("b", 0.2), losses("none", 0.0)
    assert a == b  # the same seed, the same masks
    assert all(x[0] != y[0] for x, y in zip(a, none))  # dropout changed every training loss


def test_tma_reads_fall_back_to_pointers_for_misaligned_views(monkeypatch):
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", "1")
    base = randn(1, 2, 33, 17)
    q = base[..., 1:]  # D = 16 but the base is 4 bytes past a 16-byte boundary
    assert not flash_attention.use_tma(q, q, q)
    assert flash_attention.use_tma(*(randn(1, 2, 33, 16) for _ in range(3)))
    _check(1, 2, 2, 33, 16, torch.float32, True, make_qkv=lambda g: [q, q.clone(), q.clone()])


def test_a_failing_tma_build_falls_back_to_pointers_with_a_warning(monkeypatch):
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", "auto")
    monkeypatch.setattr(flash_attention, "_tma_broken", None)
    monkeypatch.setattr(flash_attention, "_tma_capable", lambda t: True)

    def broken(*args):
        raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(flash_attention, "_desc", broken)
    with pytest.warns(RuntimeWarning, match="TMA .* failed .*PassManager"):
        _check(1, 2, 2, 40, 16, torch.float32, causal=True)
    assert flash_attention._tma_broken and not flash_attention.use_tma(*[randn(1, 1, 8, 16)] * 3)
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", "1")  # forced: the error reaches the caller
    with pytest.raises(RuntimeError, match="PassManager"):
        flash_attention.attention(*(randn(1, 1, 8, 16) for _ in range(3)))


def test_bad_tma_mode_is_named(monkeypatch):
    monkeypatch.setenv("KERNELS_ATTENTION_TMA", "yes")
    with pytest.raises(ValueError, match="KERNELS_ATTENTION_TMA"):
        flash_attention.attention(*(randn(1, 1, 8, 16) for _ in range(3)))


def test_views_of_a_fused_qkv_projection(read_path):
    B, T, H, D = 2, 45, 3, 24

    def split_qkv(g):  # as the model does: one (B, T, 3·H·D) projection, split, transposed
        qkv = randn(B, T, 3 * H * D, generator=g)
        q, k, v = qkv.split(H * D, dim=2)
        return [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]

    q, _, _ = split_qkv(torch.Generator().manual_seed(0))
    assert not q.is_contiguous()
    assert flash_attention.use_tma(q, q, q) == (read_path == "tma")  # TMA takes the view
    _check(B, H, H, T, D, torch.float32, causal=True, make_qkv=split_qkv)


@pytest.mark.parametrize(
    "shape, causal, dropout_p",
    [
        ((2, 3, 3, 77, 40), True, 0.0),
        ((1, 6, 2, 130, 64), False, 0.0),
        ((1, 4, 2, 90, 16), True, 0.2),
    ],
    ids=str,
)
def test_atomic_dq_path_matches_reference(shape, causal, dropout_p, read_path, monkeypatch):
    """KERNELS_ATTENTION_DQ=atomic: dQ summed by the dK/dV kernel in fp32 atomics (grouped
    query heads and dropout included), no dQ kernel launched."""
    monkeypatch.setenv("KERNELS_ATTENTION_DQ", "atomic")
    launched = []
    monkeypatch.setattr(flash_attention, "_attn_bwd_dq", _Refuse(launched))
    _check(*shape, torch.float32, causal, dropout_p=dropout_p)
    _check(*shape, torch.float16, causal, dropout_p=dropout_p)
    assert launched == []


class _Refuse:
    def __init__(self, launched):
        self.launched = launched

    def __getitem__(self, grid):
        self.launched.append(grid)
        raise AssertionError("the dQ kernel ran on the atomic path")


def test_bad_dq_mode_is_named(monkeypatch):
    monkeypatch.setenv("KERNELS_ATTENTION_DQ", "fast")
    q, k, v = (randn(1, 1, 8, 16).requires_grad_(True) for _ in range(3))
    with pytest.raises(ValueError, match="KERNELS_ATTENTION_DQ"):
        flash_attention.attention(q, k, v).sum().backward()


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
def test_longer_sequences_bf16_on_gpu(T, D, causal, read_path):
    _check(2, 4, 4, T, D, torch.bfloat16, causal)
    _check(1, 8, 2, T, D, torch.bfloat16, causal)
    _check(1, 8, 2, T, D, torch.bfloat16, causal, dropout_p=0.1)


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


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("p", [1.0, -0.1])
def test_bad_dropout_p_is_named(backend, p):
    q = randn(1, 2, 4, 8)
    with kernels.use_backend(attention=backend), pytest.raises(ValueError, match="dropout_p"):
        kernels.attention(q, q, q, dropout_p=p)


def test_mixed_dtypes_or_devices_raise_value_error():
    q, k = randn(1, 2, 4, 8), randn(1, 2, 4, 8)
    with kernels.use_backend(attention="triton"):
        with pytest.raises(ValueError, match="mixed dtypes"):
            kernels.attention(q, k, randn(1, 2, 4, 8, dtype=torch.float16))
        with pytest.raises(ValueError, match="different devices"):
            kernels.attention(q, k, torch.ones(1, 2, 4, 8, device="meta"))


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_demo_model_trains_to_the_same_losses_with_triton_attention(tmp_path):
    assert_trains_like_torch(tmp_path, attention="triton")


@pytest.mark.slow  # the per-op model tests above compare every step's loss in make test
def test_whole_model_on_triton_kernels_matches_torch(tmp_path):
    torch_run = train(demo_config(tokens=64 * 3), tmp_path / "torch")
    cfg = demo_config(tokens=64 * 3)
    cfg.train.backend = "triton"
    triton_run = train(cfg, tmp_path / "triton")
    assert set(triton_run["backends"].values()) == {"triton"}
    tol = 1e-5 if not ON_GPU else 1e-2
    assert abs(torch_run["val_loss"] - triton_run["val_loss"]) < tol


def test_gpu_tuning_lists_prune_by_head_dim_and_by_the_tuning_limits(monkeypatch):
    """What the autotuner may try at each head dim, and KERNELS_AUTOTUNE(_MAX) read at
    launch: 0 keeps the first tile, MAX=n the first n (a short tuning for a GPU window)."""
    for tuning in TUNINGS:
        prune = flash_attention._prune(tuning)["early_config_prune"]
        configs = [
            triton.Config({"BLOCK_M": t[0], "BLOCK_N": t[1]}, num_stages=t[2], num_warps=t[3])
            for t in tuning
        ]
        at64, at128 = prune(configs, {}, BLOCK_D=64), prune(configs, {}, BLOCK_D=128)
        assert at64 == configs and at128[0] is configs[0]
        assert len(at128) == sum(len(t) < 5 or t[4] >= 128 for t in tuning)
        monkeypatch.setenv("KERNELS_AUTOTUNE_MAX", "2")
        assert prune(configs, {}, BLOCK_D=128) == at128[:2]
        monkeypatch.setenv("KERNELS_AUTOTUNE", "0")
        assert prune(configs, {}, BLOCK_D=128) == at128[:1]
        monkeypatch.delenv("KERNELS_AUTOTUNE")
        monkeypatch.setenv("KERNELS_AUTOTUNE_MAX", "few")
        with pytest.raises(ValueError, match="KERNELS_AUTOTUNE_MAX"):
            prune(configs, {}, BLOCK_D=64)
        monkeypatch.delenv("KERNELS_AUTOTUNE_MAX")
    fwd = flash_attention._prune(flash_attention.FWD_TUNING)["early_config_prune"]
    blocks = [
        c.kwargs["BLOCK_M"]
        for c in fwd(
            [
                triton.Config({"BLOCK_M": t[0], "BLOCK_N": t[1]}, num_stages=t[2], num_warps=t[3])
                for t in flash_attention.FWD_TUNING
            ],
            {},
            BLOCK_D=128,
        )
    ]
    assert 256 not in blocks  # a 256-query accumulator at D = 128 would not fit registers

"""What the kernel tests share: the device they run on, dtypes, error norms, tolerances."""

from __future__ import annotations

import torch

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"  # on the CPU, kernels run under TRITON_INTERPRET=1

# Error norms allowed per dtype (Flash-linear-attention style: elementwise allclose
# misleads on long reductions): ‖out − ref‖ ≤ tol · (‖ref‖ + 0.1·√n). The second term is
# an absolute floor of tol/10 per element, for references that are exactly zero (the
# gradients of a single-key softmax) where any rounding is an infinite relative error.
REL_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / (‖ref‖ + 0.1·√n)."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / (ref.norm() + 0.1 * ref.numel() ** 0.5)).item()


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, name: str, scale=1.0):
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    assert out.dtype == ref.dtype, f"{name}: dtype {out.dtype} != {ref.dtype}"
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    err = rel_err(out, ref)
    tol = REL_TOL[dtype] * scale
    assert err <= tol, f"{name}: error norm {err:.3g} > {tol:.3g}"


def randn(*shape, dtype=torch.float32, generator=None, scale=1.0, shift=0.0):
    t = torch.randn(*shape, generator=generator, dtype=torch.float32) * scale + shift
    return t.to(device=DEVICE, dtype=dtype)


def demo_config(tokens: int, **backend_ops: str) -> Config:
    """The demo model's shape, shrunk so a few steps run quickly under the interpreter."""
    return Config(
        model=ModelConfig(name="t", n_layer=2, n_head=2, d_model=32, context=16),
        data=DataConfig(max_bytes=100_000, tokens=tokens, eval_tokens=256),  # interpreter: brief
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(
            batch_size=4,
            eval_batches=1,
            eval_every=1,
            device=DEVICE,
            backend="torch",
            backend_ops=backend_ops,
        ),
    )


def metrics(run_dir) -> list[dict]:
    """The run's evaluation rows (those with a validation loss)."""
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss" in r]


def assert_trains_like_torch(tmp_path, steps: int = 4, **backend_ops: str) -> None:
    """Train the demo-shaped model for a few steps on the torch backend and with
    ``backend_ops`` (e.g. linear="triton"): the loss curves agree to fp32 tolerance on the
    CPU (bf16 autocast on a GPU)."""
    from lab.training.run import train

    ref = train(demo_config(tokens=64 * steps), tmp_path / "torch")
    run = train(demo_config(tokens=64 * steps, **backend_ops), tmp_path / "triton")
    for op, backend in backend_ops.items():
        assert run["backends"][op] == backend
    a, b = metrics(tmp_path / "torch"), metrics(tmp_path / "triton")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, steps + 1))
    tol = 1e-5 if not ON_GPU else 1e-2
    for ra, rb in zip(a, b):
        assert abs(ra["train_loss"] - rb["train_loss"]) < tol
        assert abs(ra["val_loss"] - rb["val_loss"]) < tol
    assert abs(ref["val_loss"] - run["val_loss"]) < tol


def count_tunings(monkeypatch, tuner) -> list:
    """Give an autotuned kernel two configs (the interpreter's has one) and a stand-in timer;
    returns the list each benchmark it runs appends its config to."""
    import triton

    first = tuner.configs[0]
    halved = dict(first.kwargs, BLOCK_M=first.kwargs["BLOCK_M"] // 2)
    second = triton.Config(halved, num_warps=first.num_warps, pre_hook=first.pre_hook)
    benched: list = []

    def bench(*args, config, **meta):
        benched.append(config)
        return [1.0 if config is first else 2.0] * 3

    monkeypatch.setattr(tuner, "configs", [first, second])
    monkeypatch.setattr(tuner, "_bench", bench)
    monkeypatch.setattr(tuner, "cache", {})
    return benched

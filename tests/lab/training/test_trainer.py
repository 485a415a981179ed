"""The trainer a researcher relies on: resume after SIGKILL, divergence, DDP, gradient
accumulation, schedules, early stopping, WSD branches, model knobs, config errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

from lab.config.counting import param_counts
from lab.config.rules import validate
from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.model.gpt import GPT
from lab.runs.checkpoint import load_checkpoint
from lab.training.run import train
from lab.training.schedule import lr_at

ROOT = Path(__file__).resolve().parents[3]


def small(tokens=8 * 32 * 24, **train_kw) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(max_bytes=100_000, tokens=tokens),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(
            **{"batch_size": 8, "eval_batches": 1, "eval_every": 4, "device": "cpu", "threads": 1}
            | train_kw
        ),
    )


def metrics(run: Path) -> list[dict]:
    """The run's evaluation rows (those with a validation loss)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss" in r]


def lab_train(*args, cwd, wait=True, nproc=1):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else []
    )
    cmd = [sys.executable, *launcher, "-m", "lab", *args]
    if wait:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_a_run_killed_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    args = [*TINY_RUN, "data.tokens=200000", "train.eval_every=100", "train.checkpoint_every=20"]
    whole = lab_train(*args, f"hydra.run.dir={tmp_path}/whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    proc = lab_train(*args, f"hydra.run.dir={tmp_path}/killed", cwd=tmp_path, wait=False)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and load_checkpoint(ckpt)["state"]["step"] >= 40:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["state"]["step"]
    assert 40 <= killed_at < 782, "killed mid-run"
    # started again in its folder, the run continues from its checkpoint (train.resume=auto)
    resumed = lab_train(*args, f"hydra.run.dir={tmp_path}/killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "result.json").read_text())
    b = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert b["resumed_from_step"] == killed_at and a["steps"] == b["steps"]
    assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-6)
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
    ma, mb = metrics(tmp_path / "whole"), metrics(tmp_path / "killed")
    assert [r["step"] for r in ma] == [r["step"] for r in mb]
    for ra, rb in zip(ma, mb):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=1e-6)


def test_resume_without_a_checkpoint_is_an_error_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(small(resume=True), tmp_path)
    assert not (tmp_path / "result.json").exists()


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = small(eval_every=1, checkpoint_every=1)
    cfg = replace(cfg, optim=replace(cfg.optim, lr=1e4, grad_clip=0.0, warmup_fraction=0.0))
    record = train(cfg, tmp_path)
    assert record["status"] == "diverged" and "loss became" in record["error"]
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["status"] == "diverged"
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["state"]["step"] < record["steps"] + 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    # judged on the loss too: the kept checkpoint's validation loss is a number
    assert math.isfinite(ckpt["state"]["val_loss"])
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():  # strict JSON
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_reach_the_losses_of_one_with_the_same_global_batch(tmp_path, parallel):
    # WSD with a cooldown branch: the snapshot, the branch and the main run's state restored
    # after it go through the parallel wrapper too
    args = [*TINY_RUN, "data.tokens=20000", "train.eval_every=20", "optim.schedule=wsd"]
    args += ["data.branches=[12800]", f"train.parallel={parallel}"]
    one = lab_train(*args, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    two = lab_train(*args, f"hydra.run.dir={tmp_path}/two", cwd=tmp_path, nproc=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    for run in ("", "branch_D=12800"):
        ma, mb = metrics(tmp_path / "one" / run), metrics(tmp_path / "two" / run)
        assert [r["step"] for r in ma] == [r["step"] for r in mb] and len(ma) >= (
            3 if not run else 1
        )
        for ra, rb in zip(ma, mb):
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=1e-4)
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4)
    a = json.loads((tmp_path / "one" / "result.json").read_text())
    b = json.loads((tmp_path / "two" / "result.json").read_text())
    assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4)
    assert b["branches"][0]["val_loss"] == pytest.approx(a["branches"][0]["val_loss"], abs=1e-4)
    assert (two.stdout + two.stderr).count("ok: val loss") == 1  # rank 0 reports the run
    if parallel == "fsdp":  # every rank wrote its shard; the checkpoint reads as one model
        (step,) = (tmp_path / "two" / "checkpoint.dcp").iterdir()
        assert len(list(step.glob("*.distcp"))) == 2
        from lab.runs.artifacts import load_model

        wa = load_model(tmp_path / "one")[0].state_dict()
        wb = load_model(tmp_path / "two")[0].state_dict()
        assert wa.keys() == wb.keys()
        flat_a = torch.cat([w.flatten() for w in wa.values()])
        flat_b = torch.cat([wb[name].flatten() for name in wa])
        # Adam's steps move rounding-level differences a little; a wrong load is O(1)
        assert float((flat_b - flat_a).norm() / flat_a.norm()) < 1e-3


@pytest.mark.slow  # make test-slow: 30 s of two processes on two cores
def test_an_fsdp_checkpoint_written_by_two_processes_resumes_in_one(tmp_path):
    """Preempted (SIGTERM to torchrun, which passes it on) while 2 processes train under
    FSDP, the run's sharded checkpoint continues in 1 process and ends as an uninterrupted
    run does."""
    args = [*TINY_RUN, "data.tokens=200000", "train.eval_every=100", "train.checkpoint_every=20"]
    args.append("train.parallel=fsdp")
    whole = lab_train(*args, f"hydra.run.dir={tmp_path}/whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    folder = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "lab", *args, f"hydra.run.dir={folder}"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(p.name >= "step-000000040" for p in (folder / "checkpoint.dcp").glob("step-*")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert "interrupted by SIGTERM" in output, output[-2000:]
    cut_at = load_checkpoint(folder / "checkpoint.pt")["state"]["step"]
    assert 40 <= cut_at < 782, "stopped mid-run"
    resumed = lab_train(*args, f"hydra.run.dir={folder}", cwd=tmp_path)  # one process
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "result.json").read_text())
    b = json.loads((folder / "result.json").read_text())
    assert b["resumed_from_step"] == cut_at and a["steps"] == b["steps"]
    assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-4)
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-4)
    assert len(list((folder / "checkpoint.dcp").iterdir())) == 1  # older steps removed


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"
)
def test_fsdp_on_two_gpus_follows_one_gpu(tmp_path):
    """NCCL, bf16 gathering and fp32 reduce-scatter: the losses of one GPU to bf16's
    precision."""
    args = [a for a in TINY_RUN if not a.startswith("train.device")]
    args += ["data.tokens=20000", "train.eval_every=20", "train.device=cuda"]
    one = lab_train(*args, f"hydra.run.dir={tmp_path}/one", cwd=tmp_path)
    two = lab_train(
        *args, "train.parallel=fsdp", f"hydra.run.dir={tmp_path}/two", cwd=tmp_path, nproc=2
    )
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    for ra, rb in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two")):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=2e-2)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    a = train(small(), tmp_path / "a")
    b = train(small(grad_accum=4), tmp_path / "b")
    assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-5)


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    a, b = train(small(), tmp_path / "a"), train(small(), tmp_path / "b")
    c = train(small(seed=1), tmp_path / "c")
    assert a["val_loss"] == b["val_loss"] and a["val_loss"] != c["val_loss"]


def test_early_stopping_stops_before_the_budget(tmp_path):
    cfg = small(tokens=8 * 32 * 400, eval_every=2, early_stop_patience=1)
    cfg = replace(cfg, optim=replace(cfg.optim, lr=0.3, grad_clip=0.0))  # bounces: no steady gains
    record = train(cfg, tmp_path)
    assert record["stopped_early"] and record["tokens_seen"] < record["tokens"]
    assert record["status"] == "ok"


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_schedule_shapes(shape):
    cos = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_fraction=0.1)
    wsd = replace(cos, schedule="wsd", cooldown_fraction=0.2, cooldown_shape=shape)
    total = 100
    c = [lr_at(s, total, cos) for s in range(total)]
    w = [lr_at(s, total, wsd) for s in range(total)]
    assert c[0] == pytest.approx(0.1) and c[9] == pytest.approx(1.0)  # linear warmup, 10 steps
    assert all(x >= y for x, y in zip(c[10:], c[11:])) and c[-1] == pytest.approx(0.1, abs=1e-3)
    assert w[:10] == c[:10] and set(w[10:80]) == {1.0}  # warmup, then stable
    assert all(x >= y for x, y in zip(w[80:], w[81:])) and w[-1] == pytest.approx(0.1)
    mid = {"linear": 0.55, "cosine": 0.55, "sqrt": 1 - 0.9 * math.sqrt(0.5)}[shape]
    assert w[89] == pytest.approx(mid, abs=1e-9)


def test_wsd_branch_equals_a_run_trained_to_that_budget(tmp_path):
    def wsd(tokens, branches=()):
        cfg = small(tokens=tokens, eval_every=1000)
        return replace(
            cfg,
            data=replace(cfg.data, branches=list(branches)),
            optim=replace(cfg.optim, schedule="wsd", warmup_fraction=0.0),
        )

    long = train(wsd(8 * 32 * 40, branches=[8 * 32 * 20]), tmp_path / "long")
    alone = train(wsd(8 * 32 * 20), tmp_path / "alone")
    branch = json.loads((tmp_path / "long" / "branch_D=5120" / "result.json").read_text())
    assert long["branches"][0]["status"] == "ok" and branch["tokens"] == 5120
    assert branch["val_loss"] == pytest.approx(alone["val_loss"], abs=1e-6)
    assert branch["steps"] == alone["steps"] == 20
    assert long["steps"] == 40 and long["val_loss"] != branch["val_loss"]


@pytest.mark.parametrize(
    "knobs",
    [
        {"activation": "swiglu"},
        {"norm": "rmsnorm"},
        {"positions": "rope"},
        {"activation": "relu", "tie_embeddings": False, "bias": False},
        {"dropout": 0.1, "embd_dropout": 0.1, "attn_dropout": 0.1},
    ],
    ids=str,
)
def test_model_knobs_train_and_count(knobs, tmp_path):
    cfg = small(tokens=8 * 32 * 30)
    cfg = replace(cfg, model=replace(cfg.model, **knobs))
    record = train(cfg, tmp_path)
    assert record["status"] == "ok" and record["val_loss"] < 5.0  # from log(257) = 5.55
    model = GPT(replace(cfg.model, vocab_size=257))
    assert sum(p.numel() for p in model.parameters()) == record["n_params_total"]


def test_knob_counts_by_hand():
    # d=16, L=1, V=257, T=32, SwiGLU d_ff = ceil(8·16/3 / 8)·8 = 48, RMSNorm, RoPE, no bias:
    # attention 4·16² = 1024; MLP 2·16·48 + 48·16 = 2304; norms 3·16 = 48 → 3376
    cfg = ModelConfig(
        n_layer=1,
        n_head=2,
        d_model=16,
        context=32,
        vocab_size=257,
        activation="swiglu",
        norm="rmsnorm",
        positions="rope",
        bias=False,
    )
    assert param_counts(cfg) == {"non_embedding": 3376, "embedding": 257 * 16, "total": 3376 + 4112}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation": "swish"}, "model.activation"),
        ({"norm": "batchnorm"}, "model.norm"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"attn_dropout": -0.1}, "model.attn_dropout"),
        ({"context": 64, "max_positions": 32}, "larger than the positional table"),
        ({"positions": "sinusoid"}, "model.positions"),
    ],
)
def test_bad_model_config_is_named(change, message):
    cfg = small()
    with pytest.raises(ValueError, match=message):
        validate(replace(cfg, model=replace(cfg.model, **change)))


def test_generate_samples_text_from_a_checkpoint(tmp_path, capsys):
    from lab.inspection.generate import main as generate_main

    train(small(tokens=8 * 32 * 40), tmp_path)
    args = [str(tmp_path), "--prompt", "import ", "--tokens", "40", "--seed", "3"]
    assert generate_main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("import ") and len(first.encode()) > len("import ") + 20
    assert generate_main(args) == 0
    assert capsys.readouterr().out == first  # seeded: reproducible
    assert generate_main([str(tmp_path), "--temperature", "0", "--tokens", "10"]) == 0


def test_generate_refuses_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    from lab.inspection.generate import main as generate_main

    assert generate_main([str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    assert generate_main([str(tmp_path / "foreign.pt")]) == 2
    assert "not a checkpoint of this lab" in capsys.readouterr().err


def test_training_step_benchmark_runs(capsys):
    from lab.cli.bench import main as bench_main

    assert bench_main(["--model", "nano", "--steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "lab step:" in out and "plain loop:" in out and "ratio lab / plain:" in out
    assert "vocab 257 " in out  # the byte vocabulary (--gpt2 takes GPT-2's 50,257)

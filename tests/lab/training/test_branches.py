"""WSD cooldown branches survive a kill: a run killed at any step (in the stable phase
past a branch's start, at a branch's first step, inside a branch) and started again ends
with every branch's result bit for bit as an uninterrupted run's."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_trainer import small  # noqa: E402 - the trainer tests' tiny config

from lab.runs.checkpoint import load_checkpoint
from lab.training.run import train
from lab.training.trainer import Trainer

BRANCHES = [8 * 32 * 12, 8 * 32 * 20, 8 * 32 * 28]  # D at 12, 20 and 28 steps of 8 × 32


def wsd():
    cfg = small(tokens=8 * 32 * 36, eval_every=6, checkpoint_every=5)
    return replace(
        cfg,
        optim=replace(cfg.optim, schedule="wsd", warmup_fraction=0.05),
        data=replace(cfg.data, branches=list(BRANCHES)),
    )


def outcome(out) -> dict:
    """Everything a run's results are: the main run's and each branch's losses, and the
    final weights."""
    main = json.loads((out / "result.json").read_text())
    got = {"main": (main["status"], main["steps"], main["val_loss"], main["train_loss"])}
    for b in BRANCHES:
        rec = json.loads((out / f"branch_D={b}" / "result.json").read_text())
        got[b] = (rec["status"], rec["steps"], rec["val_loss"], rec["train_loss"])
        assert not (out / f"branch_D={b}" / "snapshot.pt").exists()  # removed once recorded
    got["weights"] = load_checkpoint(out / "checkpoint.pt")["model"]
    return got


def same(a: dict, b: dict) -> bool:
    weights = all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    return weights and all(a[k] == b[k] for k in a if k != "weights")


def killed_at(monkeypatch, calls: list[int]):
    """Make the k-th optimizer step of this process (counting every loop's) raise, for
    each k of ``calls`` in turn: one kill per session of the run."""
    real, count = Trainer.train_step, {"n": 0}

    def step(self, n, lr):
        count["n"] += 1
        if calls and count["n"] == calls[0]:
            calls.pop(0)
            count["n"] = 0
            raise KeyboardInterrupt("killed")  # not caught as a failure of the run's config
        return real(self, n, lr)

    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    train(wsd(), out)
    return outcome(out)


def resumed_outcome(tmp_path, monkeypatch, kills: list[int]) -> dict:
    """Train, killed at each step of ``kills`` in turn (counted within each session; a
    kill past a session's last step does not happen), then to the end."""
    out = tmp_path / "run"
    killed_at(monkeypatch, list(kills))
    for _ in kills:
        try:
            record = train(wsd(), out)
        except KeyboardInterrupt:
            continue
        return outcome(out) if record["status"] == "ok" else {}
    return outcome(out) if train(wsd(), out)["status"] == "ok" else {}


@pytest.mark.parametrize(
    "kills",
    [
        [17],  # stable phase, resumed from step 15: past two branches' starts (10, 16)
        [37],  # the first step of the first branch: the main run had finished
        [41, 3],  # inside the second branch, then again inside the same one
    ],
)
def test_a_wsd_run_killed_and_resumed_ends_like_an_uninterrupted_one(
    tmp_path, monkeypatch, uninterrupted, kills
):
    assert same(resumed_outcome(tmp_path, monkeypatch, kills), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_wsd_runs_killed_at_random_steps_end_like_uninterrupted_ones(
    tmp_path, monkeypatch, uninterrupted, seed
):
    rng = np.random.default_rng(seed)
    kills = [int(k) for k in rng.integers(1, 48, size=int(rng.integers(1, 4)))]  # 36 + 12 steps
    assert same(resumed_outcome(tmp_path, monkeypatch, kills), uninterrupted), kills

"""On a real (one-node) Slurm cluster: a sweep through hydra-submitit-launcher's
submitit_slurm, and runs requeued mid-way with ``scontrol requeue`` (SIGTERM, then the job
starts again) that end as uninterrupted ones, a WSD run requeued inside a branch included.

``make test-slurm`` starts the cluster (``scripts/slurm_up.sh``) and runs these; without a
cluster answering ``sinfo`` they skip, saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slurm


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mix", "alloc"))


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if not _cluster_up():
        pytest.skip("no Slurm cluster answers sinfo here (scripts/slurm_up.sh starts one)")


TRAIN = f"import sys; sys.argv[0] = 'lab-train'; sys.path.insert(0, {str(ROOT)!r}); from lab.cli.entry import lab_train; lab_train()"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _wait(predicate, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _uninterrupted(args: list[str], tmp_path: Path) -> None:
    """The run of ``args`` trained straight through in ``tmp_path/whole``, to compare with."""
    whole = subprocess.run(
        [sys.executable, "-c", TRAIN, *args, f"hydra.run.dir={tmp_path / 'whole'}"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert whole.returncode == 0, whole.stderr[-2000:]


SUBMITIT_SWEEP = [
    "-c",
    "import sys; sys.argv[0] = 'lab-train'; from lab.cli.entry import lab_train; lab_train()",
    "-m",
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.cpus_per_task=1",
]


def _sbatch(args: list[str], cwd: Path) -> str:
    """A lab-train job (``--requeue``: Slurm starts it again after ``scontrol requeue``)."""
    script = cwd / "job.sh"
    quoted = " ".join(f"'{a}'" for a in args)
    script.write_text(f'#!/bin/bash\nexec {sys.executable} -c "{TRAIN}" {quoted}\n')
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--requeue",
            "--open-mode=append",
            "-o",
            str(cwd / "slurm-%j.out"),
            str(script),
        ],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


def _state(job: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    for field in out.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return "GONE"


def test_a_sweep_runs_through_submitit_slurm(tmp_path):
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [
            sys.executable,
            *SUBMITIT_SWEEP,
            *TINY_RUN,
            "data.tokens=1000,1500",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    assert len(records) == 2 and all(rec["status"] == "ok" for rec in records)
    assert (sweep / ".submitit").is_dir()


@pytest.mark.parametrize("wsd", [False, True], ids=["plain", "wsd-in-a-branch"])
def test_a_requeued_run_ends_as_an_uninterrupted_one(tmp_path, wsd):
    args = [*TINY_RUN, "data.tokens=400000"]
    if wsd:  # a branch cooling down over 150,000 tokens (~2 s): the requeue lands inside it
        args += ["optim.schedule=wsd", "optim.warmup_fraction=0.02", "data.branches=[300000]"]
        args.append("optim.cooldown_fraction=0.5")
    _uninterrupted(args, tmp_path)
    run = tmp_path / "run"
    job = _sbatch([*args, f"hydra.run.dir={run}"], tmp_path)
    mark = run / ("branch_D=300000/metrics.jsonl" if wsd else "checkpoint.pt")
    _wait(lambda: mark.exists() and mark.stat().st_size > 0, 300, f"{mark.name} of job {job}")
    subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM, then pending again
    _wait(lambda: _state(job) == "PENDING", 120, f"job {job} to be requeued")
    # a requeued job waits two minutes by default before it may start again: not here
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    _wait(lambda: _state(job) in ("COMPLETED", "GONE"), 600, f"job {job} to complete")
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert "SIGTERM at step" in log, log[-2000:]  # it checkpointed on the signal
    for sub in [".", *(["branch_D=300000"] if wsd else [])]:
        a = json.loads((tmp_path / "whole" / sub / "result.json").read_text())
        b = json.loads((run / sub / "result.json").read_text())
        assert (b["status"], b["val_loss"], b["train_loss"]) == (
            "ok",
            a["val_loss"],
            a["train_loss"],
        )


def test_usr2_before_the_time_limit_checkpoints_and_submitit_requeues(tmp_path):
    """What submitit asks Slurm for before a job's time limit (``--signal=USR2@...``): the
    run checkpoints at the next step, hands the signal to submitit's handler, which requeues
    the job; the requeued job resumes from the checkpoint and ends as an uninterrupted run."""
    args = [*TINY_RUN, "data.tokens=400000"]
    _uninterrupted(args, tmp_path)
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [
            sys.executable,
            *SUBMITIT_SWEEP,
            "hydra.launcher.max_num_timeout=3",  # requeues allowed (the launcher's default: 0)
            *args,
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(lambda: any(sweep.glob("*/checkpoint.pt")), 300, "the job's first checkpoint")
        jobs = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
        job = jobs.stdout.split()[0]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        _wait(lambda: _state(job) == "PENDING", 120, f"job {job} to be requeued by submitit")
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        out, _ = launcher.communicate(timeout=600)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, out[-3000:]
    a = json.loads((tmp_path / "whole" / "result.json").read_text())
    (record,) = sweep.glob("*/result.json")
    b = json.loads(record.read_text())
    assert b["status"] == "ok" and b["resumed_from_step"] > 0
    assert (b["val_loss"], b["train_loss"]) == (a["val_loss"], a["train_loss"])

"""Sweeps: what each file expands to, budgets, resume, failures, kills, parallel launchers,
the planner."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from lab.cli.sweeps import expand_sweep
from lab.config.composition import compose
from lab.config.counting import budget_tokens
from lab.training.setup import resolve_budget

ROOT = Path(__file__).resolve().parents[3]
TINY = [
    "model=nano",
    "model.context=32",
    "train.batch_size=4",
    "train.eval_batches=1",
    "data.max_bytes=100000",
    "train.device=cpu",
    "train.threads=1",
]


def lab(entry: str, *args: str, cwd: Path, wait: bool = True):
    func = {"lab-train": "train_main", "lab-sweep": "sweep_main"}[entry]
    code = f"import sys; sys.argv[0] = {entry!r}; from lab.cli.commands import {func}; {func}()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", code, *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def runs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/result.json")}


def configs(name):
    return [compose(job) for job in expand_sweep(name)]


def _values(jobs, key: str) -> list[str]:
    """The value each job gives ``key`` (its override), in job order."""
    return [next(o.split("=", 1)[1] for o in job if o.startswith(f"{key}=")) for job in jobs]


def test_each_sweep_expands_to_the_runs_it_promises():
    # by the overrides each run gets (tests/test_config.py composes and validates every run;
    # here one run per sweep is composed, for what its file sets for all of them)
    ladder = ["nano", "micro", "tiny", "mini", "small"]
    ms = expand_sweep("model_size")
    assert _values(ms, "model") == ladder and compose(ms[0]).data.tokens == 4_000_000
    ds = expand_sweep("data_size")
    assert compose(ds[0]).model.name == "tiny"
    assert sorted(int(v) for v in _values(ds, "data.tokens")) == [125_000 * 2**i for i in range(6)]
    grid = expand_sweep("grid")
    assert len(set(zip(_values(grid, "model"), _values(grid, "data.tokens")))) == 20 == len(grid)
    iso = expand_sweep("isoflop")
    assert len(set(zip(_values(iso, "model"), _values(iso, "data.budget")))) == 24
    assert {float(v) for v in _values(iso, "data.budget")} == {3e11, 1e12, 3e12, 1e13}
    lr = expand_sweep("lr")
    assert len(set(zip(_values(lr, "model"), _values(lr, "optim.lr")))) == 20
    wsd = expand_sweep("wsd")
    assert _values(wsd, "model") == ["nano", "micro", "tiny", "mini"]
    w = compose(wsd[0])
    assert w.optim.schedule == "wsd" and len(w.data.branches) == 3
    assert max(w.data.branches) < w.data.tokens
    arch = set(
        zip(
            _values(expand_sweep("architectures"), "model.mixer"),
            _values(expand_sweep("architectures"), "model"),
        )
    )
    assert arch == {
        (m, n) for m in ("attention", "conv", "lstm") for n in ("nano", "micro", "tiny", "mini")
    }
    mt = expand_sweep("mup_transfer")
    assert len(mt) == 40 == len({tuple(j) for j in mt})
    widths = sorted({int(v) for v in _values(mt, "model.d_model")})
    assert len(widths) >= 4 and widths[-1] / widths[0] >= 8
    assert set(_values(mt, "model.parametrization")) == {"sp", "mup"}
    assert len(set(_values(mt, "optim.lr"))) >= 5
    assert compose(mt[0]).model.base_d_model == widths[0]
    assert compose(expand_sweep("demo_tuned")[0]).optim.lr_law.endswith("lr.json")


def test_ladder_spans_two_decades_and_each_file_states_its_n():
    from lab.config.counting import param_counts

    sizes = {}
    for f in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        cfg = compose([f"model={f.stem}"]).model
        n = param_counts(cfg)["non_embedding"]
        assert f"N (non-embedding) = {n:,}" in f.read_text(), f.name
        sizes[f.stem] = n
    assert max(sizes.values()) / min(sizes.values()) >= 100


def test_budget_sets_tokens_per_size():
    cfg = compose(["+sweeps=isoflop", "model=tiny", "data.budget=1e12"])
    resolved = resolve_budget(cfg)
    assert resolved.data.tokens == round(1e12 / (6 * 335_712)) == budget_tokens(cfg.model, 1e12)


def test_budget_below_one_context_is_skipped_with_a_warning(tmp_path):
    sweep = tmp_path / "sweep"
    r = lab(
        "lab-train",
        "-m",
        *TINY,
        "model=nano,mini",
        "data.budget=1e8",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    records = {rec["config"]["model"]["name"]: rec for rec in runs(sweep).values()}
    assert records["nano"]["status"] == "ok" and records["nano"]["tokens"] == round(
        1e8 / (6 * 25472)
    )
    assert records["mini"]["status"] == "skipped"
    assert "too small for model 'mini'" in r.stdout + r.stderr


def test_rerun_keeps_finished_runs_and_reruns_failed_ones(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "data.tokens=1000,1500", f"hydra.sweep.dir={sweep}"]
    assert lab("lab-train", *args, cwd=tmp_path).returncode == 0
    first = runs(sweep)
    crashed = next(k for k in first if "1500" in k)
    rec = first[crashed] | {"status": "failed", "error": "simulated crash"}
    (sweep / crashed / "result.json").write_text(json.dumps(rec))
    assert lab("lab-train", *args, cwd=tmp_path).returncode == 0
    second = runs(sweep)
    kept = next(k for k in first if k != crashed)
    assert second[kept]["finished_at"] == first[kept]["finished_at"]
    assert second[crashed]["status"] == "ok"
    assert second[crashed]["finished_at"] != first[crashed]["finished_at"]


def test_killing_a_sweep_loses_nothing_already_finished(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "data.tokens=1000,400000,1200", f"hydra.sweep.dir={sweep}"]
    proc = lab("lab-train", *args, cwd=tmp_path, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not any(r.get("status") == "ok" for r in runs(sweep).values()):
        time.sleep(0.2)
    time.sleep(1.0)  # into the long second run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {k: r for k, r in runs(sweep).items() if r.get("status") == "ok"}
    assert len(done) == 1, "the first run finished before the kill"
    (finished,) = done
    r = lab(
        "lab-train",
        "-m",
        *TINY,
        "data.tokens=1000,4000,1200",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0
    after = runs(sweep)
    assert after[finished]["finished_at"] == done[finished]["finished_at"]
    assert sum(r["status"] == "ok" for r in after.values()) >= 3


def _interval(rec):
    return datetime.fromisoformat(rec["started_at"]), datetime.fromisoformat(rec["finished_at"])


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
    reason="hydra-joblib-launcher is not installed",
)
@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_joblib_launcher_runs_two_at_once(tmp_path):
    sweep = tmp_path / "sweep"
    r = lab(
        "lab-train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY,
        "data.tokens=60000,60001",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (a0, a1), (b0, b1) = (_interval(rec) for rec in runs(sweep).values())
    assert a0 < b1 and b0 < a1, "the two runs overlapped in time"


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher is not installed",
)
@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_submitit_local_runs_two_tiny_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    r = lab(
        "lab-train",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        *TINY,
        "data.tokens=1000,1500",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    records = runs(sweep)
    assert len(records) == 2 and all(rec["status"] == "ok" for rec in records.values())
    assert (sweep / ".submitit").is_dir()  # it went through submitit, as on Slurm
    table = pd.read_csv(sweep / "runs.csv")
    assert set(table["status"]) == {"ok"}


def test_plan_prints_every_run_and_launches_nothing(tmp_path):
    r = lab("lab-sweep", "data_size", "--plan", "hydra.sweep.dir=planned", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "plan for sweep 'data_size': 6 runs"
    rows = [line for line in lines if "model=tiny" in line]
    assert len(rows) == 6 and all(any(u in row for u in ("s ", "min ", "h ")) for row in rows)
    assert "total: about" in lines[-1]
    assert not (tmp_path / "planned").exists() and not (tmp_path / "runs").exists()


def test_a_gpu_plan_from_a_cpu_machine_gives_memory_time_and_gpu_hours(tmp_path):
    r = lab("lab-sweep", "gpu_ladder", "--plan", "--device", "h200", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "plan for sweep 'gpu_ladder': 13 runs" and "GPU-h" in lines[1]
    rows = lines[2:-1]
    assert len(rows) == 13 and all("GB" in row and "(" not in row for row in rows)  # all fit
    assert "GPU-hours" in lines[-1] and "MFU 0.40 (a default" in lines[-1]
    # on 80 GB, the small models' micro-batches do not fit: the plan says what does, and
    # with that setting the run fits
    r = lab("lab-sweep", "gpu_ladder", "--plan", "--device=h100", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "+gpu_runs=25m_x20" in line)
    fix = row.split("(fits with ")[1].rstrip(")")
    r = lab("lab-sweep", "gpu_ladder", "--plan", "--device=h100", *fix.split(), cwd=tmp_path)
    row = next(line for line in r.stdout.splitlines() if "+gpu_runs=25m_x20" in line)
    assert "(" not in row, row
    # the 7B target: not on one GPU unsharded; FSDP over enough GPUs
    r = lab(
        "lab-sweep",
        "gpu_target",
        "--plan",
        "--device",
        "a100",
        "train.parallel=ddp",
        "train.activation_checkpointing=none",
        cwd=tmp_path,
    )
    row = next(line for line in r.stdout.splitlines() if "+gpu_runs=7b_x20" in line)
    gpus, fix = row.split("(needs ")[1].rstrip(")").split(" GPUs (--gpus ")
    fix = fix.split(") with ")[1].split()
    assert "train.parallel=fsdp" in fix
    # the fewest GPUs: its 107 GB of weights and AdamW state cannot fit one 80 GB A100, half
    # of them with recomputed blocks fit two; and what it names fits there
    assert gpus == "2" and "train.activation_checkpointing=block" in fix
    r = lab(
        "lab-sweep", "gpu_target", "--plan", "--device=a100", f"--gpus={gpus}", *fix, cwd=tmp_path
    )
    row = next(line for line in r.stdout.splitlines() if "+gpu_runs=7b_x20" in line)
    assert "(" not in row, row
    r = lab("lab-sweep", "gpu_ladder", "--plan", "--device", "tpu", cwd=tmp_path)
    assert r.returncode == 2 and "--device must be one of" in r.stderr


def test_wsd_sweep_records_every_branch_as_its_own_result(tmp_path):
    sweep = tmp_path / "sweep"
    r = lab(
        "lab-sweep",
        "wsd",
        *TINY,
        "model=nano",
        "optim.warmup_fraction=0",
        "data.tokens=4000",
        "data.branches=[1000,2000]",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    table = pd.read_csv(sweep / "runs.csv")
    assert sorted(table["tokens"]) == [1000, 2000, 4000] and set(table["status"]) == {"ok"}
    assert table["run"].str.contains("branch_D=1000").sum() == 1


def test_optuna_sweeper_minimises_the_returned_validation_loss(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "optuna"
    r = lab(
        "lab-sweep",
        "optuna",
        *TINY,
        "hydra.sweeper.n_trials=2",
        "data.tokens=2000",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    losses = [rec["val_loss"] for rec in runs(sweep).values()]
    assert len(losses) == 2
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {min(losses)}" in best


def test_the_planner_times_a_gpu_at_the_lab_s_measured_mfu(tmp_path):
    from lab.cli.plan import measured_mfu

    record = tmp_path / "BENCHMARKS.md"
    record.write_text("## GPT-2 small\n\nplanner MFU, H200: 0.47\n")
    assert measured_mfu("h200", (record,)) == 0.47
    assert measured_mfu("a100", (record,)) is None
    assert measured_mfu("h200", (tmp_path / "missing.md",)) is None


def test_the_probe_is_warmed_repeated_to_a_small_spread_and_cached(tmp_path, monkeypatch):
    import lab.cli.plan as planner

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    first = planner.plan("data_size", [])
    probe = first[0]["probe"]
    assert not probe.cached and planner.PROBE_MIN_STEPS <= probe.steps <= planner.PROBE_MAX_STEPS
    # it stops at a small spread, or says it stopped at its step or time cap (a busy machine)
    assert probe.stopped_by in ("spread", "steps", "seconds")
    if probe.stopped_by == "spread":
        assert probe.spread <= planner.PROBE_SPREAD
    if probe.stopped_by == "steps":
        assert probe.steps == planner.PROBE_MAX_STEPS
    assert all(r["tokens_per_s"] == probe.tokens_per_s for r in first)  # one model: one probe

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again: the cache was not used")

    monkeypatch.setattr(planner, "measure_tokens_per_second", must_not_measure)
    again = planner.plan("data_size", [])
    assert again[0]["probe"].cached
    assert [r["seconds"] for r in again] == [r["seconds"] for r in first]  # the same twice
    with pytest.raises(AssertionError, match="measured again"):
        planner.plan("data_size", [], fresh=True)  # --reprobe


def test_the_plan_honours_the_launcher_s_parallelism(tmp_path, monkeypatch):
    import lab.cli.plan as planner
    from lab.cli.commands import share_cores
    from lab.config.composition import compose

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    from lab.cli.sweeps import sweep_config

    assert planner.launcher_slots(sweep_config("data_size", [])) == (1, "basic")
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert planner.launcher_slots(sweep_config("data_size", joblib)) == (2, "joblib")
    rows = [{"seconds": s} for s in (5.0, 3.0, 2.0, 2.0)]
    # in order, each to the first free worker: [5] and [3, 2, 2]
    assert planner.wall_seconds(rows, 2, gpu=True) == 7.0
    assert planner.wall_seconds(rows, 1, gpu=True) == 12.0
    together = planner.plan("data_size", joblib)
    assert {r["threads"] for r in together} == {max(1, (os.cpu_count() or 1) // 2)}
    text = planner.format_plan("data_size", together)
    assert "2 at a time (joblib launcher" in text and "tok/s" in text.splitlines()[1]
    # a joblib worker takes its share of the cores unless the config names its threads
    cfg = compose(["model=nano"])
    assert share_cores(cfg, 2).train.threads == max(1, (os.cpu_count() or 1) // 2)
    assert share_cores(replace_threads(cfg, 3), 2).train.threads == 3


def replace_threads(cfg, threads):
    from dataclasses import replace

    return replace(cfg, train=replace(cfg.train, threads=threads))

"""The command lines end to end, as a user runs them (in subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[3]
TINY = [
    "model=nano",
    "model.context=32",
    "train.batch_size=4",
    "train.eval_batches=1",
    "data.max_bytes=100000",
    "train.device=cpu",
]


def cli(entry: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    module, func = {
        "lab-train": ("lab.cli.commands", "train_main"),
        "lab-sweep": ("lab.cli.commands", "sweep_main"),
        "lab-analyze": ("analysis.cli", "main"),
    }[entry]
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv[0] = {entry!r}; "
        f"from {module} import {func}; r = {func}(); sys.exit(r or 0)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_single_run_writes_a_record(tmp_path):
    r = cli("lab-train", *TINY, "data.tokens=3000", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "ok" and record["tokens_seen"] == 3000


def test_bad_input_is_a_one_line_error_before_training(tmp_path):
    r = cli("lab-train", *TINY, "model.d_model=33", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "lab-train: error: model.d_model=33 is not divisible by model.n_head=2"
    ]
    assert not (tmp_path / "run" / "result.json").exists()
    r = cli(
        "lab-train", *TINY, "data.path=/no/such/dir", f"hydra.run.dir={tmp_path}/r2", cwd=tmp_path
    )
    assert r.returncode == 2 and "data.path does not exist: /no/such/dir" in r.stderr


def test_unknown_config_key_is_named(tmp_path):
    r = cli("lab-train", "model.d_modle=64", cwd=tmp_path)
    assert r.returncode != 0 and "d_modle" in r.stderr


def test_unknown_sweep_lists_the_available_ones(tmp_path):
    r = cli("lab-sweep", "nosuch", cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown sweep 'nosuch'" in r.stderr and "demo" in r.stderr


def test_multirun_keeps_going_past_a_failed_run_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "model.n_head=2,3", "data.tokens=2000", f"hydra.sweep.dir={sweep}"]
    r = cli("lab-train", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(sweep / "runs.csv")
    table.index = table["run"].str.extract(r"model.n_head=(\d)")[0]
    assert table.loc["2", "status"] == "ok"
    assert table.loc["3", "status"] == "failed"
    assert "not divisible" in table.loc["3", "error"]
    ok_dir = sweep / table.loc["2", "run"]
    first = json.loads((ok_dir / "result.json").read_text())

    r = cli("lab-train", *args, cwd=tmp_path)  # again: the finished run is kept
    again = json.loads((ok_dir / "result.json").read_text())
    assert again["finished_at"] == first["finished_at"]
    assert "already done" in r.stdout + r.stderr


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_sweep_then_fit_writes_fit_json_and_plot(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli(
        "lab-train",
        "-m",
        *TINY,
        "model=nano,micro",
        "data.tokens=2000,4000,8000",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = cli("lab-analyze", "fit", str(sweep), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    fit = json.loads((tmp_path / "out" / "fit.json").read_text())
    assert set(fit["params"]) == {"E", "A", "B", "alpha", "beta", "a", "b"}
    assert all(p["low"] <= p["value"] <= p["high"] for p in fit["params"].values())
    assert fit["n_points"] == 6 and fit["conventions"]["n_params"] == "non_embedding"
    assert (tmp_path / "out" / "loss_vs_n_and_d.png").stat().st_size > 10_000
    assert "L = " in r.stdout


def test_fit_with_too_few_points_is_a_clear_error(tmp_path):
    csv = tmp_path / "runs.csv"
    pd.DataFrame(
        {"n_params": [1e6, 2e6, 4e6], "tokens": [1e8, 1e8, 2e8], "loss": [3.0, 2.9, 2.7]}
    ).to_csv(csv, index=False)
    r = cli("lab-analyze", "fit", str(csv), "--law", "chinchilla", cwd=tmp_path)
    assert r.returncode == 2
    assert "has 5 parameters but only 3 data points" in r.stderr

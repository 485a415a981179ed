"""Nothing lost, nothing mixed up: files the lab writes are readable by the team, and the
install names no package index."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from lab.runs.checkpoint import save_checkpoint
from lab.runs.files import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def test_records_and_checkpoints_get_the_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "result.json", {"a": 1})
        save_checkpoint(tmp_path / "checkpoint.pt", {"model": {"w": torch.ones(2)}})
    finally:
        os.umask(old)
    for name in ("result.json", "checkpoint.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_install_script_names_no_package_index_host():
    text = (ROOT / "scripts" / "install.sh").read_text()
    assert "://" not in text


# -- shared helpers -------------------------------------------------------------------------
import errno  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402

from lab.config.rules import validate  # noqa: E402
from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from lab.runs.claim import claim  # noqa: E402
from lab.training.run import train  # noqa: E402

TINY = [
    "model=nano",
    "model.context=32",
    "train.batch_size=4",
    "train.eval_batches=1",
    "data.max_bytes=100000",
    "train.device=cpu",
    "train.threads=1",
]


def small(tokens=4 * 32 * 12, path=None, **train_kw) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(max_bytes=100_000, tokens=tokens, path=path),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(
            **{"batch_size": 4, "eval_batches": 1, "eval_every": 4, "device": "cpu", "threads": 1}
            | train_kw
        ),
    )


def lab_cmd(*args, cwd, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lab", *args]
    if wait:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


# -- 1. one process per run folder ----------------------------------------------------------
def test_two_identical_sweeps_at_once_train_every_run_exactly_once(tmp_path):
    grid = ["-m", *TINY, "data.tokens=3000,4000,5000", f"hydra.sweep.dir={tmp_path}/conc"]
    procs = [lab_cmd(*grid, cwd=tmp_path, wait=False) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    trained = sum(log.count("ok: val loss") for log in logs)
    assert trained == 3, logs
    for record in (tmp_path / "conc").glob("*/result.json"):
        assert json.loads(record.read_text())["status"] == "ok"
        steps = [
            json.loads(x)["step"]
            for x in (record.parent / "metrics.jsonl").read_text().splitlines()
        ]
        assert steps == sorted(set(steps)), steps  # strictly increasing: no run trained twice


def test_a_claim_held_by_a_killed_process_is_released(tmp_path):
    code = "import sys, time; from pathlib import Path; from lab.runs.claim import claim\n"
    code += "with claim(Path(sys.argv[1])) as mine:\n    print(mine, flush=True); time.sleep(60)\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout.readline().strip() == "True"
    with claim(tmp_path) as mine:
        assert not mine  # held by the other process
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with claim(tmp_path) as mine:
        assert mine  # nothing stuck after a SIGKILL


# -- 2. small corpora -----------------------------------------------------------------------
def test_a_small_single_file_gets_a_validation_split_and_a_tiny_one_a_clear_error(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text("".join(f"line {i}: the quick brown fox\n" for i in range(330)))  # 9.4 KB
    cfg = small(path=str(text), tokens=2000)
    record = train(cfg, tmp_path / "run")
    assert record["status"] == "ok" and record["corpus"]["tokens_val"] > 0
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("twenty-three bytes long")
    with pytest.raises(ValueError, match="corpus shorter than the context"):
        train(small(path=str(tiny)), tmp_path / "tiny")


# -- 3. divergence --------------------------------------------------------------------------
def test_an_infinite_learning_rate_and_an_impossible_beta_are_config_errors():
    cfg = small()
    with pytest.raises(ValueError, match="optim.lr"):
        validate(replace(cfg, optim=replace(cfg.optim, lr=float("inf"))))
    with pytest.raises(ValueError, match="optim.beta1"):
        validate(replace(cfg, optim=replace(cfg.optim, beta1=2.0)))


def test_divergence_before_any_checkpoint_says_so(tmp_path, caplog):
    cfg = small(eval_every=100)
    cfg = replace(cfg, optim=replace(cfg.optim, lr=1e5, grad_clip=0.0, warmup_fraction=0.0))
    with caplog.at_level(logging.ERROR, logger="lab.train"):
        record = train(cfg, tmp_path)
    assert record["status"] == "diverged"
    assert "no checkpoint had been written" in caplog.text
    assert not (tmp_path / "checkpoint.pt").exists()


# -- 5. run folders stay inside their sweep -------------------------------------------------
def test_a_relative_data_path_cannot_take_a_run_out_of_its_sweep(tmp_path):
    (tmp_path / "corpus.txt").write_text(
        "".join(f"def f{i}(x):\n    return x\n" for i in range(2000))
    )
    work = tmp_path / "work"
    work.mkdir()
    result = lab_cmd(
        "-m",
        *TINY,
        "data.tokens=2000",
        "data.path=../corpus.txt",
        f"hydra.sweep.dir={work}/sweep",
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = list((work / "sweep").glob("*/result.json"))
    assert len(records) == 1 and "%2F" in records[0].parent.name
    assert (work / "sweep" / "runs.csv").exists()


# -- 6. a full disk -------------------------------------------------------------------------
def _fail_once(monkeypatch, module, name):
    real, calls = getattr(module, name), {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "somewhere")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.parametrize("site", ["record", "checkpoint", "metrics"])
def test_a_full_disk_is_one_line_and_a_failed_record_in_a_sweep(
    tmp_path, monkeypatch, caplog, site
):
    import lab.runs.trackers
    import lab.training.record
    import lab.training.trainer
    from lab.cli.commands import run_job

    out = tmp_path / "run"
    if site == "record":
        _fail_once(monkeypatch, lab.training.record, "write_json_atomic")
    elif site == "checkpoint":
        _fail_once(monkeypatch, lab.training.trainer, "save_checkpoint")
    else:
        _fail_once(
            monkeypatch, lab.runs.trackers, "json_safe"
        )  # the metrics line about to be written
    with caplog.at_level(logging.INFO):
        record = run_job(small(), out, multirun=True)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]
    assert "No space left on device" in errors[0].getMessage()
    assert record["status"] == "failed"
    assert json.loads((out / "result.json").read_text())["status"] == "failed"


def test_a_full_disk_in_a_single_run_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    import lab.training.trainer
    from lab.cli.commands import run_job

    _fail_once(monkeypatch, lab.training.trainer, "save_checkpoint")
    with pytest.raises(SystemExit) as stop:
        run_job(small(), tmp_path, multirun=False)
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]


def test_a_full_disk_at_the_sweep_table_still_prints_the_summary(tmp_path, monkeypatch, caplog):
    import lab.cli.commands
    from lab.runs.files import write_json_atomic

    write_json_atomic(tmp_path / "a" / "result.json", {"status": "ok", "tokens": 1})
    _fail_once(monkeypatch, lab.cli.commands, "write_csv_atomic")

    class Hydra:
        class hydra:  # noqa: N801 - the shape of Hydra's config
            class sweep:  # noqa: N801
                dir = str(tmp_path)

    with caplog.at_level(logging.ERROR):
        lab.cli.commands.SweepTable().on_multirun_end(Hydra)
    assert "No space left on device" in caplog.text


# -- 7. smaller ones ------------------------------------------------------------------------
def test_odd_records_and_tables_are_skipped_or_named(tmp_path):
    from lab.runs.records import read_records

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "result.json").write_text("[1, 2]")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "result.json").write_text(json.dumps({"status": "ok", "config": "x"}))
    with pytest.warns(UserWarning, match="unreadable record"):
        table = read_records(tmp_path)
    assert table["run"].tolist() == ["b"] and table["model"].isna().all()


def test_report_escapes_run_names():
    from analysis.report import _text

    assert _text("a|b <script>") == "a\\|b &lt;script&gt;"


def test_a_bin_file_of_odd_length_names_the_file_and_dtype(tmp_path):
    (tmp_path / "train.bin").write_bytes(b"\x01\x00" * 100 + b"\x01")
    with pytest.raises(ValueError, match=r"train\.bin is 201 bytes.*data\.bin_dtype=uint16"):
        train(small(path=str(tmp_path / "train.bin")), tmp_path / "run")


def test_generate_names_a_missing_checkpoint_and_refuses_bad_counts(tmp_path, capsys):
    from lab.inspection.generate import main

    assert main([str(tmp_path)]) == 2
    assert f"{tmp_path} has no checkpoint.pt" in capsys.readouterr().err
    (tmp_path / "result.json").write_text("{}")
    assert main([str(tmp_path / "result.json")]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint of this lab" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--tokens", "-5"])


def test_deleting_metrics_mid_run_warns_and_keeps_the_rows_after(tmp_path, caplog):
    from lab.runs.trackers import JsonlSink

    real, seen = JsonlSink.log, {"n": 0}

    def delete_after_first(self, row, step):
        real(self, row, step)
        seen["n"] += 1
        if seen["n"] == 1:
            self.path.unlink()

    JsonlSink.log = delete_after_first
    try:
        with caplog.at_level(logging.WARNING):
            train(small(eval_every=2), tmp_path)
    finally:
        JsonlSink.log = real
    assert "was removed during the run" in caplog.text
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") >= 2


# -- 8. import names ------------------------------------------------------------------------
def test_a_package_shadowing_an_import_name_stops_a_command_with_one_line(tmp_path):
    from lab.cli.packages import foreign_packages

    assert foreign_packages() == {}
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    info = tmp_path / "kernels-0.9.dist-info"  # as pip leaves Hugging Face's `kernels`
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 0.9\n")
    (info / "top_level.txt").write_text("kernels\n")
    code = "from lab.cli.packages import check_packages; check_packages('lab-train')"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'kernels' is" in lines[0] and str(tmp_path) in lines[0]


# -- 10. half-finished runs continue --------------------------------------------------------
def test_a_rerun_continues_a_half_finished_run_from_its_checkpoint(tmp_path, monkeypatch):
    import lab.training.trainer

    cfg = small(tokens=4 * 32 * 24, eval_every=4)
    whole = train(cfg, tmp_path / "whole")
    real, calls = lab.training.trainer.Trainer.train_step, {"n": 0}

    def dies_at_step_14(self, n, lr):
        calls["n"] += 1
        if calls["n"] == 14:
            raise RuntimeError("killed")  # as a preempted job: the checkpoint of step 12 stays
        return real(self, n, lr)

    monkeypatch.setattr(lab.training.trainer.Trainer, "train_step", dies_at_step_14)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path / "half")
    monkeypatch.setattr(lab.training.trainer.Trainer, "train_step", real)
    again = train(cfg, tmp_path / "half")  # the default, train.resume=auto
    assert again["resumed_from_step"] == 12 and again["steps"] == whole["steps"]
    assert again["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)
    fresh = train(replace(cfg, train=replace(cfg.train, resume="false")), tmp_path / "half")
    assert "resumed_from_step" not in fresh


@pytest.mark.slow  # make test-slow: make test stays within its 10 minutes
def test_a_sweep_killed_and_restarted_while_another_runs_loses_nothing(tmp_path):
    grid = ["-m", *TINY, "data.tokens=20000,24000,28000", f"hydra.sweep.dir={tmp_path}/both"]
    first = lab_cmd(*grid, cwd=tmp_path, wait=False)
    second = lab_cmd(*grid, cwd=tmp_path, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "both").glob("*/checkpoint.pt")):
        time.sleep(0.2)
    second.send_signal(signal.SIGKILL)  # mid-run, holding a claim
    second.wait()
    again = lab_cmd(*grid, cwd=tmp_path, wait=False)
    logs = [p.communicate(timeout=600)[0] for p in (first, again)]
    assert first.returncode == 0 and again.returncode == 0, logs
    records = list((tmp_path / "both").glob("*/result.json"))
    assert len(records) == 3
    for record in records:
        assert json.loads(record.read_text())["status"] == "ok", record
        rows = (record.parent / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(x)["step"] for x in rows]
        assert steps == sorted(set(steps)), steps
    assert (tmp_path / "both" / "runs.csv").exists()


def test_inspection_ignores_a_cache_folder_named_by_a_record(tmp_path):
    from lab.inspection.trained import Run

    cfg = small()
    train(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    record["config"]["data"]["cache_dir"] = str(tmp_path / "elsewhere")
    (tmp_path / "run" / "result.json").write_text(json.dumps(record))
    run = Run(tmp_path / "run")
    assert run.data.cache_dir is None
    run.val_windows(2, 16)
    assert not (tmp_path / "elsewhere").exists()


def test_the_model_group_lists_models_only(tmp_path):
    result = lab_cmd("model=huge", cwd=tmp_path)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    options = text.split("Available options in 'model':")[1].split("Config search path")[0]
    assert options.split() == ["large", "medium", "micro", "mini", "nano", "small", "tiny"]


def test_a_resumed_run_evaluates_the_same_windows_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """The periodic evaluations' size comes from the config, not from the tokens a session
    has seen when it first evaluates: a run resumed at step 12 logs the validation losses
    of the run that was never stopped."""
    import lab.training.trainer

    cfg = small(
        tokens=4 * 32 * 24, eval_every=4, eval_batches=32, final_eval_share=0.9, final_eval_se=0.0
    )
    whole = train(cfg, tmp_path / "whole")
    real, calls = lab.training.trainer.Trainer.train_step, {"n": 0}

    def dies_at_step_14(self, n, lr):
        calls["n"] += 1
        if calls["n"] == 14:
            raise RuntimeError("killed")
        return real(self, n, lr)

    monkeypatch.setattr(lab.training.trainer.Trainer, "train_step", dies_at_step_14)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path / "half")
    monkeypatch.setattr(lab.training.trainer.Trainer, "train_step", real)
    again = train(cfg, tmp_path / "half")
    assert again["resumed_from_step"] == 12

    def evals(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]

    assert [s for s, _ in evals(tmp_path / "half")] == [s for s, _ in evals(tmp_path / "whole")]
    for (_, a), (_, b) in zip(evals(tmp_path / "half"), evals(tmp_path / "whole")):
        assert a == pytest.approx(b, abs=1e-6)
    assert again["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)

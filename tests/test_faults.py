"""Nothing lost, nothing hung, nothing overwritten: torn files, corrupt caches, unbounded
and blocking inputs, planted links, signals, a folder holding another config's run, bad
analysis tables, exports in the way. Each test is one promise of the README's table."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_reliability import small

from analysis.cli import main as analyze_main
from analysis.load import load_runs
from lab.config.composition import compose
from lab.config.schema import DataConfig
from lab.data.corpus import load_corpus
from lab.runs.checkpoint import load_checkpoint
from lab.training.run import train
from lab.training.signals import Interrupted
from lab.training.trainer import Trainer


def _kill_at(monkeypatch, k: int, how=None):
    """The k-th optimizer step of this process does ``how`` (default: raise as a SIGKILL
    would end it: no record update) instead of training, once."""
    real, count = Trainer.train_step, {"n": 0}

    def step(self, n, lr):
        count["n"] += 1
        if count["n"] == k:
            if how is None:
                raise KeyboardInterrupt("killed")
            how()
        return real(self, n, lr)

    monkeypatch.setattr(Trainer, "train_step", step)
    return real


# -- torn files -----------------------------------------------------------------------------
def test_a_torn_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(
    tmp_path, monkeypatch, caplog
):
    cfg = small(checkpoint_every=3)
    whole = train(cfg, tmp_path / "whole")
    real = _kill_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run")
    monkeypatch.setattr(Trainer, "train_step", real)
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 7, "tokens": 896, "train_lo')  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger="lab.train"):
        again = train(cfg, tmp_path / "run")
    assert again["status"] == "ok" and again["val_loss"] == whole["val_loss"]
    assert any(str(metrics) in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]  # strict JSON
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})


def test_a_torn_jsonl_table_line_is_skipped_with_its_number(tmp_path):
    path = tmp_path / "runs.jsonl"
    rows = [{"n_params": n, "tokens": 1e9, "loss": 3 - n / 1e9} for n in (1e7, 2e7, 4e7, 8e7)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"n_params": 1.6e8, "tok')
    with pytest.warns(UserWarning, match="line\\(s\\) 5 "):
        df = load_runs(path)
    assert len(df) == 4


# -- caches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["zeroed", "truncated", "random", "meta"])
def test_a_corrupt_token_cache_is_rebuilt_with_a_warning_naming_it(tmp_path, caplog, fault):
    cfg = DataConfig(max_bytes=200_000, cache_dir=str(tmp_path / "cache"))
    clean = load_corpus(cfg)
    expected = np.array(clean.train)
    (folder,) = (tmp_path / "cache" / "corpora").iterdir()
    train_bin = folder / "train.bin"
    data = bytearray(train_bin.read_bytes())
    if fault == "zeroed":
        data[len(data) // 10 :] = bytes(len(data) - len(data) // 10)
        train_bin.write_bytes(data)
    elif fault == "truncated":
        train_bin.write_bytes(data[: len(data) // 2])
    elif fault == "random":
        train_bin.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        meta = (folder / "meta.json").read_text()
        (folder / "meta.json").write_text(meta[: len(meta) // 2])
    with caplog.at_level(logging.WARNING, logger="lab.data"):
        again = load_corpus(cfg)
    assert any(
        str(folder) in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records
    )
    assert np.array_equal(np.array(again.train), expected)
    assert again.content_hash == clean.content_hash


def test_a_torn_cached_bpe_tokenizer_is_trained_again(tmp_path, caplog):
    cfg = DataConfig(
        max_bytes=60_000, tokenizer="bpe", bpe_vocab_size=300, cache_dir=str(tmp_path / "c")
    )
    ids = np.array(load_corpus(cfg).train[:2000])
    (tok,) = (tmp_path / "c" / "tokenizers").glob("bpe-*.json")
    tok.write_text(tok.read_text()[:500])
    with caplog.at_level(logging.WARNING, logger="lab.data"):
        again = load_corpus(cfg)
    assert any(str(tok) in r.getMessage() for r in caplog.records)
    assert np.array_equal(np.array(again.train[:2000]), ids)


# -- inputs ---------------------------------------------------------------------------------
def test_devices_and_fifos_are_refused_in_one_line(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "FIFO"), ("/dev/zero", "device")):
        with pytest.raises(ValueError, match=f"is a {kind}"):
            load_corpus(DataConfig(path=str(path)))


def test_max_bytes_bounds_what_is_read_of_a_huge_file(tmp_path):
    import tracemalloc

    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.write(b"def f(x):\n    return x\n" * 10_000)
        f.truncate(2 << 30)  # 2 GiB, sparse: read whole, it would take that much memory
    tracemalloc.start()
    from lab.data.sources import open_source

    docs = list(open_source(str(big), 100_000).documents())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(len(d) for _, d in docs) == 100_000
    assert peak < 20 << 20, peak


# -- links ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["metrics.jsonl", "result.json", ".lock"])
def test_a_run_folder_whose_files_are_links_is_refused(tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        train(small(), run)
    assert victim.read_text() == "precious\n"


def test_metrics_are_never_appended_through_a_link(tmp_path):
    from lab.runs.files import open_append

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        open_append(tmp_path / "metrics.jsonl")
    assert victim.read_text() == "precious\n"


# -- signals --------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT])
def test_a_signal_checkpoints_at_the_next_step_and_a_rerun_redoes_nothing(
    tmp_path, monkeypatch, signum
):
    cfg = small(tokens=4 * 32 * 20, eval_every=8)  # checkpoints at 8 and 16 otherwise
    whole = train(cfg, tmp_path / "whole")
    real = _kill_at(monkeypatch, 11, how=lambda: os.kill(os.getpid(), signum))
    with pytest.raises(Interrupted) as stop:
        train(cfg, tmp_path / "run")
    assert stop.value.exit_code == 128 + signum and stop.value.step == 11
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "interrupted" and record["steps"] == 11
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 11
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)
    monkeypatch.setattr(Trainer, "train_step", real)
    again = train(cfg, tmp_path / "run")
    assert again["resumed_from_step"] == 11  # not one step redone
    assert (again["status"], again["val_loss"]) == ("ok", whole["val_loss"])
    assert load_runs(tmp_path / "run")["loss"].tolist() == [whole["val_loss"]]


def test_a_checkpointed_run_hands_the_signal_to_the_launchers_handler(tmp_path, monkeypatch):
    """Under submitit the USR2 handler that requeues the job was installed before the run's
    own: once the run has checkpointed, it is called, so the requeued job resumes there."""
    from lab.cli import commands

    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        real = _kill_at(monkeypatch, 5, how=lambda: os.kill(os.getpid(), signal.SIGUSR2))
        with pytest.raises(SystemExit) as stop:
            commands.run_job(small(), tmp_path / "run", multirun=False)
        assert stop.value.code == 128 + signal.SIGUSR2
        assert calls == [signal.SIGUSR2]  # after the checkpoint, not instead of it
        assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 5
        monkeypatch.setattr(Trainer, "train_step", real)
        assert train(small(), tmp_path / "run")["resumed_from_step"] == 5
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_sweep_worker_ends_with_its_main_process(tmp_path):
    """A joblib worker asks for SIGTERM when its parent dies: killing the main process does
    not leave it training, orphaned."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from lab.cli.commands import end_with_parent\n"
        # written then renamed: the test reads the marker as soon as it exists
        "def on_term(*a):\n"
        "    with open(sys.argv[1] + '.tmp', 'w') as f:\n"
        "        f.write('term')\n"
        "    os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "assert end_with_parent()\n"
        "open(sys.argv[1] + '.ready', 'w').close()\n"
        "time.sleep(60)\n"
    )
    marker = tmp_path / "got"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; "
            f"subprocess.Popen([sys.executable, {str(script)!r}, {str(marker)!r}]); time.sleep(60)",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(str(marker) + ".ready").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert Path(str(marker) + ".ready").exists()
        parent.kill()  # SIGKILL: no chance to clean up its children itself
        parent.wait()
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text() == "term"
    finally:
        parent.kill()


def test_an_interrupted_run_is_not_analysed_as_finished(tmp_path, monkeypatch):
    _kill_at(monkeypatch, 3, how=lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(Interrupted):
        train(small(), tmp_path / "sweep" / "a")
    with pytest.raises(ValueError, match="no usable runs|no finished"):
        load_runs(tmp_path / "sweep")


# -- another config's finished run ----------------------------------------------------------
def test_a_folder_holding_another_configs_finished_run_is_refused(tmp_path):
    first = train(small(), tmp_path / "run")
    other = replace(small(), optim=replace(small().optim, lr=1e-3))
    with pytest.raises(ValueError) as refused:
        train(other, tmp_path / "run")
    message = str(refused.value)
    assert first["config_hash"] in message and "train.overwrite=true" in message
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == first
    again = train(replace(other, train=replace(other.train, overwrite=True)), tmp_path / "run")
    assert again["status"] == "ok" and again["config_hash"] != first["config_hash"]


# -- analysis inputs ------------------------------------------------------------------------
def _table(tmp_path, rows) -> Path:
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows, columns=["n_params", "tokens", "loss"]).to_csv(path, index=False)
    return path


GRID = [
    (n, d, 1.7 + 300 / n**0.35 + 900 / d**0.3) for n in (1e6, 1e7, 1e8) for d in (1e8, 1e9, 1e10)
]


def test_exact_duplicate_rows_are_dropped_with_a_warning_unless_kept(tmp_path):
    path = _table(tmp_path, GRID + GRID[:3])
    with pytest.warns(UserWarning, match="dropped 3 row\\(s\\) repeating"):
        assert len(load_runs(path)) == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_runs(path, keep_duplicates=True)) == 12


def test_a_column_of_dates_where_numbers_belong_is_one_line(tmp_path):
    path = tmp_path / "runs.parquet"
    df = pd.DataFrame(GRID, columns=["n_params", "tokens", "loss"])
    df["tokens"] = pd.date_range("2024-01-01", periods=len(df))
    df.to_parquet(path)
    with pytest.raises(ValueError, match="column 'tokens' holds datetime64"):
        load_runs(path)


def test_a_folder_the_command_may_not_write_is_one_line(capsys):
    """A PermissionError reaching the entry points (a folder the lab may not write) is
    one line and exit 1."""
    from lab.cli.entry import _interruptible

    with pytest.raises(SystemExit) as stop, _interruptible("lab-train"):
        raise PermissionError(13, "Permission denied", "/shared/sweep/run")
    assert stop.value.code == 1
    assert capsys.readouterr().err == "lab-train: error: /shared/sweep/run: Permission denied\n"


def test_an_absurd_loss_is_one_line(tmp_path, capsys):
    path = _table(tmp_path, [*GRID, (1e9, 1e11, 1e308)])
    assert analyze_main(["fit", str(path), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss = 1e+308" in err[0] and "not a plausible value" in err[0]


# -- export ---------------------------------------------------------------------------------
def test_an_export_never_lands_on_a_file_or_another_export_without_force(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from lab.inspection.trained import Run
    from lab.runs.export import main as export_main

    train(small(), tmp_path / "run")
    target = tmp_path / "file"
    target.write_text("mine")
    assert export_main([str(tmp_path / "run"), "--to", "safetensors", str(target)]) == 2
    assert "--force" in capsys.readouterr().err and target.read_text() == "mine"
    out = tmp_path / "export"
    old = os.umask(0o022)
    try:
        assert export_main([str(tmp_path / "run"), "--to", "hf", str(out)]) == 0
        assert export_main([str(tmp_path / "run"), "--to", "safetensors", str(out)]) == 2
        assert export_main([str(tmp_path / "run"), "--to", "safetensors", str(out), "--force"]) == 0
    finally:
        os.umask(old)
    assert not (out / "config.json").exists()  # the hf export's config went with it
    assert all((p.stat().st_mode & 0o777) == 0o644 for p in out.iterdir())
    assert Run(out).model.cfg.n_layer == 1  # lab-inspect reads an export
    (out / "lab_model.json").write_text('{"format": "hf"}')
    with pytest.raises(ValueError, match="lab_model.json"):
        Run(out)


# -- config ---------------------------------------------------------------------------------
def test_integer_counts_take_scientific_notation():
    cfg = compose(["data.tokens=1e5", "data.max_bytes=2.5e6", "optim.lr=1e-3"])
    assert (cfg.data.tokens, cfg.data.max_bytes, cfg.optim.lr) == (100_000, 2_500_000, 1e-3)


def test_a_run_of_absurd_length_for_its_device_says_so_before_it_trains(caplog):
    from lab.training.setup import warn_if_absurd

    base = small()
    with caplog.at_level(logging.WARNING, logger="lab"):
        assert warn_if_absurd(base, "cpu") < 60  # a test-sized run: nothing said
        assert not caplog.records
        huge = replace(base, data=replace(base.data, tokens=10**15))  # ~a thousand years
        seconds = warn_if_absurd(huge, "cpu")
    assert seconds > 365 * 86400
    (message,) = [r.getMessage() for r in caplog.records]
    assert "years on cpu" in message and "data.tokens=1000000000000000" in message


def test_an_output_folder_that_cannot_be_written_is_one_line_before_hydra(
    tmp_path, monkeypatch, capsys
):
    from lab.cli import entry

    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SystemExit) as stop:
        entry.check_output_dirs("lab-train", ["model=nano", f"hydra.run.dir={afile}/run"])
    assert stop.value.code == 1
    assert "is a file, not a folder" in capsys.readouterr().err

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(entry.os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(SystemExit):
        entry.check_output_dirs("lab-sweep", [f"hydra.sweep.dir={tmp_path}/sweep"])
    assert "read-only file system" in capsys.readouterr().err
    monkeypatch.undo()
    entry.check_output_dirs("lab-train", [f"hydra.run.dir={tmp_path}/fine"])  # no exit

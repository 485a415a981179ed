"""Runs others can see: dense metrics, TensorBoard, W&B (offline), MLflow (file store),
trackers that fail without ending the run, and the runs table as Parquet."""

from __future__ import annotations

import glob
import json
import logging
import struct
import time
from dataclasses import replace

import pandas as pd
import pytest

from lab.config.schema import Config, DataConfig, ModelConfig, OptimConfig, TrainConfig
from lab.training.run import train


def small(**train_kw) -> Config:
    return Config(
        model=ModelConfig(name="t", n_layer=1, n_head=2, d_model=16, context=32),
        data=DataConfig(max_bytes=100_000, tokens=4 * 32 * 60),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(
            **{"batch_size": 4, "eval_batches": 1, "device": "cpu", "threads": 1} | train_kw
        ),
    )


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_metrics_are_dense_with_the_evaluations_in_them(tmp_path):
    record = train(small(), tmp_path)
    metrics = rows(tmp_path)
    steps = [r["step"] for r in metrics]
    assert len(metrics) >= 20 and steps == sorted(set(steps)) and steps[-1] == record["steps"]
    for key in ("train_loss", "batch_loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"):
        assert all(r[key] is not None for r in metrics), key
    evals = [r for r in metrics if "val_loss" in r]
    assert 3 <= len(evals) < len(metrics)
    every = train(small(log_every=1), tmp_path / "every")
    assert len(rows(tmp_path / "every")) == every["steps"]


def test_tensorboard_events_hold_every_logged_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = train(small(loggers=["jsonl", "tensorboard"]), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    grouped = {"train/loss", "val/loss", "val/bpb", "optim/lr", "optim/grad_norm"}
    assert grouped | {"perf/tokens_per_s", "tokens", "flops", "final/val_loss"} <= tags
    metrics = rows(tmp_path)
    assert len(events.Scalars("train/loss")) == len(metrics)
    # the losses again over tokens and over C (MFLOPs): the x-axes of a scaling study
    by_tokens = events.Scalars("val/loss_vs_tokens")
    evals = [r for r in metrics if "val_loss" in r]
    assert [e.step for e in by_tokens] == [r["tokens"] for r in evals]
    assert by_tokens[-1].value == pytest.approx(evals[-1]["val_loss"], rel=1e-6)
    by_c = events.Scalars("val/loss_vs_mflops")
    assert by_c[-1].step == round(evals[-1]["flops"] / 1e6) > 0
    # HParams: N, D, C and the config beside the final numbers, in the run's own folder
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = data.session_start_info.hparams
    assert hp["n_params_non_embedding"].number_value == record["n_params_non_embedding"]
    assert hp["tokens"].number_value == record["tokens"] and "flops_6N" in hp
    assert hp["model.d_model"].number_value == 16
    assert "loss_curve" in events.Tags()["images"] and (tmp_path / "loss.png").is_file()


def _wandb_records(path):
    """The protobuf records of an offline W&B run file (a LevelDB-style log of 32 KiB
    blocks, each record behind a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = open(path, "rb").read(), 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _finished_wandb_records(path, timeout: float = 60.0) -> list:
    """The records of an offline W&B run file once its writer has closed it (an exit record
    is there). ``run.finish()`` can return before W&B's service process has written its
    last 32 KiB block: read too early, under load, the file ended after its first block."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(_wandb_records(path))
        done = any(r.WhichOneof("record_type") == "exit" for r in records)
        if done or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_wandb_runs_offline_with_config_history_and_group(tmp_path, monkeypatch, caplog):
    wandb = pytest.importorskip("wandb")
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    sent = []  # every (step, keys) our sink hands to W&B
    real_log = wandb.sdk.wandb_run.Run.log

    def spy(self, data, step=None, **kw):
        sent.append((step, set(data)))
        return real_log(self, data, step=step, **kw)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", spy)
    run_dir = tmp_path / "sweep" / "model=t"
    with caplog.at_level(logging.WARNING, logger="lab"):
        train(small(loggers=["jsonl", "wandb"]), run_dir, tracker_group="sweep")
    assert not [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    metrics = rows(run_dir)
    assert [step for step, _ in sent] == [r["step"] for r in metrics]
    assert all({"train/loss", "optim/lr", "optim/grad_norm", "tokens", "flops"} <= k for _, k in sent)

    files = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1  # offline: nothing left the machine
    records = _finished_wandb_records(files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "sweep" and run.display_name == "model=t"
    config = {item.key for item in run.config.update}
    assert {"model", "optim", "n_params_non_embedding", "flops_6N"} <= config
    # What W&B's own writer keeps is its business; what it kept is our rows, the last one
    # included, and the run ended cleanly.
    history = [r.history.step.num for r in records if r.WhichOneof("record_type") == "history"]
    assert history and set(history) <= {r["step"] for r in metrics}
    assert history[-1] == metrics[-1]["step"]
    assert any(r.WhichOneof("record_type") == "exit" for r in records)
    # every chart over tokens by default; the record and the loss curve as an artifact
    defined = {
        r.metric.glob_name or r.metric.name: r.metric.step_metric
        for r in records
        if r.WhichOneof("record_type") == "metric"
    }
    assert defined.get("val/*") == "tokens" and defined.get("train/*") == "tokens"
    assert "flops" in defined
    kept = [
        {e.path for e in r.artifact.manifest.contents}
        for r in records
        if r.WhichOneof("record_type") == "artifact"
    ]
    assert any({"result.json", "loss.png"} <= paths for paths in kept), kept


def test_mlflow_file_store_holds_params_and_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "sweep" / "model=t"
    record = train(small(loggers=["jsonl", "mlflow"]), run_dir, tracker_group="sweep")
    client = MlflowClient((tmp_path / "sweep" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("sweep")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "model=t" and run.info.status == "FINISHED"
    assert run.data.params["model.d_model"] == "16" and "flops_6N" in run.data.params
    assert run.data.params["tokens"] == str(record["tokens"])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == len(rows(run_dir))
    assert run.data.metrics["final/val_loss"] == pytest.approx(record["val_loss"])
    by_tokens = client.get_metric_history(run.info.run_id, "val/loss_vs_tokens")
    assert [m.step for m in by_tokens] == [r["tokens"] for r in rows(run_dir) if "val_loss" in r]
    kept = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "loss.png"} <= kept


def test_a_tracker_that_is_missing_or_fails_warns_once_and_the_run_finishes(
    tmp_path, monkeypatch, caplog
):
    import sys

    import lab.runs.trackers

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if the package were not installed
    calls = {"n": 0}

    def flaky(self, row, step):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("server down")

    monkeypatch.setattr(lab.runs.trackers.TensorBoardSink, "log", flaky)
    with caplog.at_level(logging.WARNING, logger="lab.train"):
        record = train(small(loggers=["jsonl", "wandb", "tensorboard"]), tmp_path)
    warnings = [r.getMessage() for r in caplog.records if "logger" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert any("wandb" in w for w in warnings) and any("server down" in w for w in warnings)
    assert calls["n"] == 3  # switched off after it failed
    assert (
        record["status"] == "ok" and json.loads((tmp_path / "result.json").read_text())["val_loss"]
    )


def test_an_unknown_logger_is_a_config_error():
    with pytest.raises(ValueError, match="train.loggers"):
        replace(small(), train=TrainConfig(loggers=["jsonl", "neptune"]))


def test_sweep_table_is_written_as_parquet_with_typed_columns(tmp_path):
    import lab.cli.commands
    from lab.runs.files import write_json_atomic

    write_json_atomic(
        tmp_path / "a" / "result.json", {"status": "ok", "tokens": 1000, "val_loss": 2.5}
    )
    write_json_atomic(tmp_path / "b" / "result.json", {"status": "failed", "error": "x"})

    class Hydra:
        class hydra:  # noqa: N801 - the shape of Hydra's config
            class sweep:  # noqa: N801
                dir = str(tmp_path)

    lab.cli.commands.SweepTable().on_multirun_end(Hydra)
    table = pd.read_parquet(tmp_path / "runs.parquet")
    assert table["tokens"].dtype == "float64" and table["val_loss"].dtype == "float64"
    assert str(table["status"].dtype) == "string" and set(table["status"]) == {"ok", "failed"}
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 2

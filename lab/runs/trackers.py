"""Where a run's metrics go: ``metrics.jsonl`` always by default, and experiment trackers on
request (``train.loggers=[jsonl,tensorboard,wandb,mlflow]``).

Each logger is a small sink with three calls: ``start(run)`` once (the run's name, group,
config, N, D and C), ``log(row, step)`` for every metrics row, ``finish(record)`` with the
final record. The training loop never imports a tracker: a sink imports its package when
it starts. A sink that fails (its package missing, its server down, a full disk) warns once
and is switched off; the run goes on, and the other sinks with it.

- ``jsonl``: ``<run>/metrics.jsonl``, one JSON object per row (strict JSON: NaN as null),
  reopened for each row so a file deleted mid-run comes back.
- ``tensorboard``: event files in ``<run>/tensorboard`` (``torch.utils.tensorboard``).
- ``wandb``: one W&B run per lab run, grouped by sweep, config and final record attached;
  offline (files in ``<run>/wandb``) unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says
  otherwise, so nothing reaches a network by default.
- ``mlflow``: one MLflow run per lab run in an experiment named after the sweep, params
  from the config, metrics per step; the store is ``MLFLOW_TRACKING_URI``, else a file store
  in ``<sweep>/mlruns`` (MLflow's file store is in maintenance mode but still works).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("lab.train")

from lab.runs.files import open_append
from lab.config.schema import LOGGERS


@dataclass
class RunInfo:
    """What a tracker is told about a run when it starts."""

    name: str
    group: str | None  # the sweep, when the run is one of a sweep's
    project: str
    out: Path
    config: dict
    summary: dict = field(default_factory=dict)  # N, D, C, ...


def json_safe(row: dict) -> dict:
    """NaN and infinite floats as null: JSON has no such numbers (json.dumps would write a
    bare NaN that strict readers reject)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _scalars(row: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _flat(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else json.dumps(v)
    return out


class Sink:
    name = "sink"
    essential = False  # an essential sink's errors end the run (the lab's own metrics file)

    def start(self, run: RunInfo) -> None: ...

    def log(self, row: dict, step: int) -> None: ...

    def finish(self, record: dict) -> None: ...


class JsonlSink(Sink):
    name = "jsonl"
    essential = True  # the run's own curve: a full disk here fails the run, as elsewhere

    def __init__(self, path: Path):
        self.path, self.written = path, 0

    def log(self, row: dict, step: int) -> None:
        if self.written and not self.path.exists():
            log.warning(
                "%s was removed during the run; rows before step %d are lost", self.path, step
            )
        with open_append(self.path) as f:
            f.write(json.dumps(json_safe(row)) + "\n")
        self.written += 1


class TensorBoardSink(Sink):
    name = "tensorboard"

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(run.out / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=2) + "\n```")

    def log(self, row: dict, step: int) -> None:
        for key, value in _scalars(row).items():
            if key not in ("step",):
                self.writer.add_scalar(key, value, step)

    def finish(self, record: dict) -> None:
        for key in ("val_loss", "train_loss"):
            value = record.get(key)
            if isinstance(value, float) and math.isfinite(value):
                self.writer.add_scalar(f"final/{key}", value, record.get("steps", 0))
        self.writer.close()


class WandbSink(Sink):
    name = "wandb"

    def start(self, run: RunInfo) -> None:
        import wandb

        online = os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online"
        self.run = wandb.init(
            project=run.project,
            group=run.group,
            name=run.name,
            dir=str(run.out),
            config={**run.config, **run.summary},
            mode=os.environ.get("WANDB_MODE") or ("online" if online else "offline"),
            reinit="finish_previous",
        )

    def log(self, row: dict, step: int) -> None:
        self.run.log(_scalars(row), step=step)

    def finish(self, record: dict) -> None:
        self.run.summary.update({k: v for k, v in json_safe(record).items() if k != "config"})
        self.run.finish()


class MlflowSink(Sink):
    name = "mlflow"

    def start(self, run: RunInfo) -> None:
        import mlflow

        if "MLFLOW_TRACKING_URI" not in os.environ:
            store = (run.out.parent if run.group else run.out) / "mlruns"
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri(store.resolve().as_uri())
        mlflow.set_experiment(run.group or run.project)
        self.mlflow = mlflow
        self.active = mlflow.start_run(run_name=run.name)
        params = _flat(run.config)
        params.update({k: v for k, v in run.summary.items() if isinstance(v, int | float | str)})
        for i in range(0, len(params), 100):  # MLflow takes params in batches
            mlflow.log_params(dict(list(params.items())[i : i + 100]))

    def log(self, row: dict, step: int) -> None:
        self.mlflow.log_metrics({k: v for k, v in _scalars(row).items() if k != "step"}, step=step)

    def finish(self, record: dict) -> None:
        final = {f"final_{k}": v for k, v in _scalars(json_safe(record)).items()}
        self.mlflow.log_metrics(final)
        self.mlflow.end_run(status="FINISHED" if record.get("status") == "ok" else "FAILED")


SINKS = {
    "jsonl": JsonlSink,
    "tensorboard": TensorBoardSink,
    "wandb": WandbSink,
    "mlflow": MlflowSink,
}
assert tuple(SINKS) == LOGGERS, "a sink for each name train.loggers accepts (lab.config.schema)"


class Trackers:
    """The run's sinks behind one front: every call goes to every sink that still works; a
    sink that raises is reported once and dropped."""

    def __init__(self, sinks: list[Sink]):
        self.sinks, self.started = list(sinks), False

    def _each(self, method: str, *args) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker must never end the run
                if sink.essential:
                    raise
                self.sinks.remove(sink)
                log.warning(
                    "logger %s failed (%s: %s); the run goes on without it",
                    sink.name,
                    type(e).__name__,
                    str(e).strip().splitlines()[0] if str(e).strip() else "",
                )

    def start(self, run: RunInfo) -> None:
        self.started = True
        self._each("start", run)

    def log(self, row: dict, step: int) -> None:
        self._each("log", row, step)

    def finish(self, record: dict) -> None:
        if self.started:
            self._each("finish", record)


def make_trackers(names, metrics_path: Path) -> Trackers:
    """Sinks for ``train.loggers`` (already checked against LOGGERS by the config)."""
    return Trackers(
        [JsonlSink(metrics_path) if str(n) == "jsonl" else SINKS[str(n)]() for n in names]
    )

"""Where a run's metrics go: ``metrics.jsonl`` always by default, and experiment trackers on
request (``train.loggers=[jsonl,tensorboard,wandb,mlflow]``).

Each logger is a small sink with three calls: ``start(run)`` once (the run's name, group,
config, N, D and C), ``log(row, step)`` for every metrics row, ``finish(record)`` with the
final record. The training loop never imports a tracker: a sink imports its package when
it starts. A sink that fails (its package missing, its server down, a full disk) warns once
and is switched off; the run goes on, and the other sinks with it.

- ``jsonl``: ``<run>/metrics.jsonl``, one JSON object per row (strict JSON: NaN as null),
  reopened for each row so a file deleted mid-run comes back. Its flat names
  (``train_loss``, ``val_loss``, ...) are the lab's file format, read by ``lab-analyze``.
- the trackers get the names grouped as the field's trackers show them (``TRACKER_NAMES``:
  ``train/loss``, ``val/loss``, ``val/bpb``, ``optim/lr``, ``optim/grad_norm``,
  ``perf/tokens_per_s``, ``perf/mfu``), with ``tokens`` and ``flops`` (C so far, the lab's
  default convention) as x-axes: W&B's ``define_metric`` (every chart over tokens by
  default); in TensorBoard and MLflow, whose x-axis is an integer step, the losses again as
  ``<name>_vs_tokens`` (step = tokens) and ``<name>_vs_mflops`` (step = C in MFLOPs). N, D
  and C go in as hyperparameters with the config (TensorBoard's HParams, MLflow params, W&B
  config), the run's record and its loss curve (``loss.png``) as artifacts when it ends.
- ``tensorboard``: event files in ``<run>/tensorboard`` (``torch.utils.tensorboard``).
- ``wandb``: one W&B run per lab run, grouped by sweep, config and final record attached;
  offline (files in ``<run>/wandb``) unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says
  otherwise, so nothing reaches a network by default.
- ``mlflow``: one MLflow run per lab run in an experiment named after the sweep, params
  from the config, metrics per step; the store is ``MLFLOW_TRACKING_URI``, else a file store
  in ``<sweep>/mlruns`` (MLflow's file store is in maintenance mode; reading it needs
  ``MLFLOW_ALLOW_FILE_STORE=true``, which the sink sets for itself).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.config.record import METRICS_NAME, RECORD_NAME
from lab.config.schema import LOGGERS
from lab.runs.files import open_append, read_jsonl, write_atomic

log = logging.getLogger("lab.train")

# metrics.jsonl's names → the trackers' (grouped as W&B, TensorBoard and MLflow show them)
TRACKER_NAMES = {
    "train_loss": "train/loss",
    "batch_loss": "train/batch_loss",
    "val_loss": "val/loss",
    "val_bpb": "val/bpb",
    "lr": "optim/lr",
    "grad_norm": "optim/grad_norm",
    "tokens_per_s": "perf/tokens_per_s",
    "mfu": "perf/mfu",
    "elapsed_s": "perf/elapsed_s",
    "tokens": "tokens",
    "flops": "flops",
}
X_AXES = ("tokens", "flops")
AGAINST_X = ("train/loss", "val/loss", "val/bpb")  # also logged against tokens and FLOPs
FINAL = ("val_loss", "val_loss_se", "val_bpb", "train_loss", "train_bpb", "wall_time_s")
CURVE_NAME = "loss.png"


@dataclass
class RunInfo:
    """What a tracker is told about a run when it starts."""

    name: str
    group: str | None  # the sweep, when the run is one of a sweep's
    project: str
    out: Path
    config: dict
    summary: dict = field(default_factory=dict)  # N, D, C, ...
    _kept: list[Path] | None = field(default=None, repr=False)

    def kept(self) -> list[Path]:
        """What trackers keep of the finished run (``artifacts``), made once for all of
        them: the first sink to finish draws the curve, the others take the same files."""
        if self._kept is None:
            self._kept = artifacts(self.out)
        return self._kept


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


def tracker_row(row: dict) -> dict[str, float]:
    """A metrics row's finite numbers under the trackers' names (the step left out: it is
    each tracker's own x-axis)."""
    return {TRACKER_NAMES.get(k, k): v for k, v in _scalars(row).items() if k != "step"}


def against_x(values: dict[str, float]) -> list[tuple[str, float, int]]:
    """(name, value, integer step) of the losses again against tokens and MFLOPs, for the
    trackers whose x-axis is an integer step (C itself passes int64 past 9e18 FLOPs)."""
    out = []
    for axis, unit, scale in (("tokens", "tokens", 1.0), ("flops", "mflops", 1e-6)):
        if axis in values:
            x = int(round(values[axis] * scale))
            out += [(f"{k}_vs_{unit}", values[k], x) for k in AGAINST_X if k in values]
    return out


def final_metrics(record: dict) -> dict[str, float]:
    """The record's final numbers, as ``final/<key>``."""
    return {f"final/{k}": v for k, v in _scalars(json_safe(record)).items() if k in FINAL}


def hyperparameters(run: RunInfo) -> dict[str, int | float | str | bool]:
    """N, D, C and the config, flat (``model.d_model``), as trackers' hyperparameters."""
    params = {k: v for k, v in run.summary.items() if isinstance(v, int | float | str)}
    params.update(_flat(run.config))
    return params


def loss_curve(out: Path) -> Path | None:
    """``<run>/loss.png``: the run's training and validation loss against tokens (from
    metrics.jsonl), for the trackers to keep; None when there are no rows to draw."""
    if not (out / METRICS_NAME).is_file():
        return None
    rows, _ = read_jsonl(out / METRICS_NAME)
    train = [(r["tokens"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    val = [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    for points, label in ((train, "train (smoothed)"), (val, "validation")):
        if points:
            ax.plot(*zip(*points), label=label, marker="o" if label == "validation" else None)
    ax.set(xlabel="tokens", ylabel="loss (nats/token)", title=out.name)
    ax.legend()
    fig.tight_layout()
    path = out / CURVE_NAME
    write_atomic(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def artifacts(out: Path) -> list[Path]:
    """What a tracker keeps of a finished run: its record and its loss curve."""
    found = [out / RECORD_NAME] if (out / RECORD_NAME).is_file() else []
    curve = loss_curve(out)
    return found + ([curve] if curve else [])


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

        self.run = run
        self.writer = SummaryWriter(log_dir=str(run.out / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=2) + "\n```")

    def log(self, row: dict, step: int) -> None:
        values = tracker_row(row)
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        for key, value, x in against_x(values):
            self.writer.add_scalar(key, value, x)

    def finish(self, record: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = final_metrics(record)
        for key, value in final.items():
            self.writer.add_scalar(key, value, record.get("steps", 0))
        # HParams: N, D, C and the config against the final numbers, in this run's folder
        # (SummaryWriter.add_hparams would write a second run beside it)
        params = {k: v for k, v in hyperparameters(self.run).items() if v is not None}
        for summary in hparams(params, final):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("record", "```\n" + json.dumps(json_safe(record), indent=2) + "\n```")
        curve = next((p for p in self.run.kept() if p.name == CURVE_NAME), None)
        if curve is not None:
            import matplotlib.image

            image = matplotlib.image.imread(curve)[..., :3]
            self.writer.add_image("loss_curve", image, dataformats="HWC")
        self.writer.close()


class WandbSink(Sink):
    name = "wandb"

    def start(self, run: RunInfo) -> None:
        import wandb

        online = os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online"
        self.info = run
        self.run = wandb.init(
            project=run.project,
            group=run.group,
            name=run.name,
            dir=str(run.out),
            config={**run.config, **run.summary},
            mode=os.environ.get("WANDB_MODE") or ("online" if online else "offline"),
            reinit="finish_previous",
        )
        for axis in X_AXES:  # tokens and FLOPs as x-axes; every chart over tokens by default
            self.run.define_metric(axis)
        for group in ("train", "val", "optim", "perf"):
            self.run.define_metric(f"{group}/*", step_metric="tokens")

    def log(self, row: dict, step: int) -> None:
        self.run.log(tracker_row(row), step=step)

    def finish(self, record: dict) -> None:
        import wandb

        self.run.summary.update({k: v for k, v in json_safe(record).items() if k != "config"})
        self.run.summary.update(final_metrics(record))
        kept = self.info.kept()
        if kept:
            artifact = wandb.Artifact(f"run-{self.run.id}", type="run")
            for path in kept:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)
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
        self.mlflow, self.info = mlflow, run
        self.active = mlflow.start_run(run_name=run.name)
        params = hyperparameters(run)
        for i in range(0, len(params), 100):  # MLflow takes params in batches
            mlflow.log_params(dict(list(params.items())[i : i + 100]))

    def log(self, row: dict, step: int) -> None:
        values = tracker_row(row)
        self.mlflow.log_metrics(values, step=step)
        for key, value, x in against_x(values):
            self.mlflow.log_metric(key, value, step=x)

    def finish(self, record: dict) -> None:
        self.mlflow.log_metrics(final_metrics(record))
        for path in self.info.kept():
            self.mlflow.log_artifact(str(path))
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

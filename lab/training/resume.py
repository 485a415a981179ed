"""Continuing a run from its folder's checkpoint (``train.resume``): which checkpoint, if
any, and the metrics written after it, which a resumed run writes again."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lab.config.record import CHECKPOINT_NAME, METRICS_NAME
from lab.runs.checkpoint import load_checkpoint
from lab.runs.files import read_jsonl, write_atomic, write_empty
from lab.runs.records import read_record

log = logging.getLogger("lab.train")


def find_resume_point(out: Path, key: str, mode: str) -> dict | None:
    """The checkpoint to continue from under ``train.resume=mode``: "true" needs one of this
    config (FileNotFoundError / ValueError otherwise), "auto" takes it when it is there and
    of this config, "false" never."""
    path = out / CHECKPOINT_NAME
    if mode == "false" or (mode == "auto" and not path.exists()):
        return None
    if mode == "auto" and (read_record(out) or {}).get("status") == "ok":
        return None  # a finished run trained again (train.skip_done=false): from the start
    try:
        payload = load_checkpoint(path)
    except ValueError:
        if mode == "true":
            raise
        log.warning("train.resume=auto: %s is unreadable; starting over", path)
        return None
    if payload.get("config_hash") != key:
        if mode == "true":
            raise ValueError(f"train.resume: the checkpoint in {out} belongs to another config")
        log.warning(
            "train.resume=auto: the checkpoint in %s is of another config; starting over", out
        )
        return None
    return payload


def refuse_another_finished_run(out: Path, key: str, overwrite: bool) -> None:
    """ValueError when ``out`` holds a finished run of another config (unless
    ``overwrite``): training there would replace its record, checkpoint and metrics."""
    done = read_record(out) or {}
    other = done.get("config_hash")
    if done.get("status") == "ok" and other and other != key and not overwrite:
        raise ValueError(
            f"{out} holds a finished run of another config (config hash {other}; this run's "
            f"is {key}): train in another folder, or set train.overwrite=true to replace it"
        )


def resume(trainer, payload: dict | None, record: dict) -> None:
    """Restore ``payload`` into ``trainer`` (noting the step in ``record``) and cut the
    metrics file back to that step; with no payload, start the metrics file empty."""
    metrics = trainer.out / METRICS_NAME
    if payload is None:
        if trainer.dist.main:
            write_empty(metrics)
        return
    trainer.load(payload)
    trainer.saved_step = trainer.state.step
    record["resumed_from_step"] = trainer.state.step
    if trainer.dist.main:
        truncate_metrics(metrics, trainer.state.step)
    log.info("resuming from step %d (%s tokens)", trainer.state.step, f"{trainer.state.tokens:,}")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint a run resumes from, and any torn line
    (what a crash or a full disk mid-write leaves), with a warning naming the file."""
    if not path.exists():
        return
    rows, torn = read_jsonl(path)
    if torn:
        log.warning("%s: line(s) %s are not whole JSON rows (a torn write); dropped", path, torn)
    keep = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= step]
    text = "".join(json.dumps(r) + "\n" for r in keep).encode()
    write_atomic(path, lambda f: f.write(text))

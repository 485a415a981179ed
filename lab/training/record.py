"""The run's record (``result.json``): what it is (config, N and C under each convention,
D, corpus, device, versions), written when it starts with status "running" and again when
it ends ("ok", "failed" or "diverged"), and what the trackers are told of it."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import kernels
from lab.config.counting import param_counts, training_flops
from lab.config.record import (
    C_CONVENTIONS,
    CHECKPOINT_NAME,
    DEFAULT_C_CONVENTION,
    METRICS_NAME,
    N_CONVENTIONS,
    N_EMBEDDING_KEY,
    RECORD_NAME,
    format_si,
)
from lab.config.schema import Config, to_dict
from lab.runs.files import write_json_atomic
from lab.runs.trackers import RunInfo

log = logging.getLogger("lab.train")


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The lab's git commit (with '+dirty' when the tree has changes), None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


@lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    import numpy
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def start_record(setup) -> dict:
    """The record of a run about to start (a ``lab.training.setup.RunSetup``)."""
    cfg, out, corpus = setup.cfg, setup.out, setup.corpus
    counts = param_counts(cfg.model)
    record = {
        "run_id": f"{out.name}-{setup.key}",
        "status": "running",
        "config": to_dict(cfg),
        "config_hash": setup.key,
        **{N_CONVENTIONS[c]: counts[c] for c in N_CONVENTIONS},
        N_EMBEDDING_KEY: counts["embedding"],
        "tokens": cfg.data.tokens,
        "budget": cfg.data.budget,
        "corpus": corpus.summary(),
        "unique_tokens": int(corpus.train.size),
        "epochs": cfg.data.tokens / corpus.train.size,
        "device": str(setup.device),
        "backends": {op: kernels.backend_for(op, setup.device) for op in kernels.OPS},
        "versions": versions(),
        "git_commit": git_commit(),
        "metrics_path": METRICS_NAME,
        "checkpoint_path": CHECKPOINT_NAME,
        "started_at": now(),
    }
    record.update(flops(cfg, cfg.data.tokens))
    if record["epochs"] > 1:
        log.warning(
            "data.tokens=%d exceeds the %d unique training tokens: %.2f epochs (repeated data)",
            cfg.data.tokens,
            corpus.train.size,
            record["epochs"],
        )
    if setup.lr_law is not None:
        record["lr_law"] = setup.lr_law
    return record


def flops(cfg: Config, tokens: int) -> dict:
    """The record's compute columns, one per convention (lab.config.record.C_CONVENTIONS)."""
    return {C_CONVENTIONS[c]: v for c, v in training_flops(cfg.model, tokens).items()}


def run_info(cfg: Config, out: Path, record: dict, group: str | None) -> RunInfo:
    """What the trackers are told when the run starts: its config, N, D and C."""
    summary = {k: record[k] for k in (*N_CONVENTIONS.values(), "tokens", "budget") if k in record}
    summary.update({k: v for k, v in record.items() if k.startswith("flops_")})
    return RunInfo(
        name=out.name,
        group=group,
        project=cfg.train.tracker_project,
        out=out,
        config=record["config"],
        summary=summary,
    )


def write(record: dict, out: Path, main: bool) -> None:
    """Write the record (rank 0 only)."""
    if main:
        write_json_atomic(out / RECORD_NAME, record)


def record_failure(record: dict, error: Exception, out: Path, main: bool) -> None:
    """Mark the record failed with ``error`` and write it; if even that fails (a full
    disk), log it: the original error is the news."""
    record.update(status="failed", error=f"{type(error).__name__}: {error}", finished_at=now())
    try:
        write(record, out, main)
    except OSError as write_error:
        log.error("could not record the failure in %s: %s", out, write_error)


def header(record: dict, trainer) -> list[str]:
    """The lines a run logs before its first step: what is about to run, on what, from
    which data, into which folder."""
    cfg, plan, state = trainer.cfg, trainer.plan, trainer.state
    n, d = record["n_params_non_embedding"], record["tokens"]
    c, corpus = record[C_CONVENTIONS[DEFAULT_C_CONVENTION]], record["corpus"]
    backends = sorted(set(record["backends"].values()))
    dist = trainer.dist
    where = f"{record['device']}" + (
        f" x {dist.world} processes ({cfg.train.parallel})" if dist.world > 1 else ""
    )
    resumed = f", resuming at step {state.step:,}" if state.step else ""
    return [
        f"run {trainer.out.name} -> {trainer.out}",
        f"model {cfg.model.name}: N {format_si(n)} non-embedding "
        f"({format_si(record['n_params_total'])} in all), context {cfg.model.context}",
        f"D {format_si(d)} tokens (D/N {d / max(n, 1):.3g}), C {format_si(c)} FLOPs "
        f"(6ND + attention); {plan.total_steps:,} steps of {plan.tokens_per_step:,} tokens{resumed}",
        f"device {where}, kernels {'/'.join(backends)}, lr {cfg.optim.lr:.3g} "
        f"({cfg.optim.schedule})",
        f"data {corpus['source']} (hash {corpus['content_hash']}, "
        f"{format_si(corpus['tokens_train'])} training tokens, {record['epochs']:.3g} epochs), "
        f"tokenizer {corpus['tokenizer']} ({corpus['vocab_size']:,} tokens)",
    ]


def process_seconds() -> float | None:
    """Seconds since this process started (Linux's /proc), None where that is unknown."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started / ticks)

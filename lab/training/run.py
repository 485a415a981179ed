"""Train one model on exactly D tokens and write its result record.

``train(cfg, out_dir)`` is a plain function: the Hydra entry point calls it, and so can a
test or a notebook. It validates the config, reads the corpus and (with ``train.resume``)
finds the checkpoint before building anything, so bad input fails in a second, not after
training. In the run folder:

- ``result.json``: the record, written when the run starts (status "running") and replaced
  when it ends ("ok", "failed" or "diverged");
- ``metrics.jsonl``: a row every ``train.log_every`` steps (about 50 per run by default:
  training loss, learning rate, gradient norm, tokens/s, elapsed time), with the
  validation loss in the rows of evaluations; other trackers by ``train.loggers``;
- ``checkpoint.pt``: written atomically every ``train.checkpoint_every`` steps (default: at
  each evaluation) and at the end; a run started again in the same folder continues from it
  on the same trajectory (data order and dropout included) when the config is the same
  (``train.resume=auto``, the default; ``true`` insists, ``false`` starts over);
- ``branch_D=<D>/``: with ``optim.schedule=wsd`` and ``data.branches``, each cooldown branch
  taken off the stable phase at token budget D, recorded as a run of its own.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from lab.config.record import METRICS_NAME
from lab.config.schema import Config
from lab.runs.trackers import make_trackers
from lab.training import distributed, record
from lab.training.branches import Branches
from lab.training.loop import Loop
from lab.training.resume import resume
from lab.training.schedule import lr_at
from lab.training.setup import prepare
from lab.training.signals import Interrupted, Watch
from lab.training.trainer import Trainer

log = logging.getLogger("lab.train")


def train(cfg: Config, out_dir: str | Path, tracker_group: str | None = None) -> dict:
    """Train ``cfg`` on exactly ``cfg.data.tokens`` tokens; write and return the record.
    ``tracker_group`` groups the run in experiment trackers (a sweep passes its name).

    Raises ValueError / FileNotFoundError for bad configuration or data (or a resume
    without a checkpoint) before training starts. A NaN or infinite loss ends the run with
    status "diverged"; SIGTERM, SIGUSR2 or SIGINT with status "interrupted", checkpointed,
    raising ``Interrupted``; any other exception is recorded as "failed" and re-raised."""
    run = prepare(cfg, Path(out_dir))  # every check, before anything is built
    cfg, out, main = run.cfg, run.out, run.dist.main
    rec = record.start_record(run)
    trackers = make_trackers(cfg.train.loggers if main else [], out / METRICS_NAME)
    try:
        trainer = Trainer(cfg, run.corpus, run.device, out, run.dist, run.key)
        resume(trainer, run.resume_from, rec)
        record.write(rec, out, main)
        if main:
            for line in record.header(rec, trainer):
                log.info(line)
        trackers.start(record.run_info(cfg, out, rec, tracker_group))
        with Watch() as watch:  # SIGTERM, SIGUSR2, SIGINT: checkpoint at the next step
            branches = Branches(trainer, cfg, run.resume_from is not None, watch)
            lr_fn = functools.partial(lr_at, total_steps=trainer.plan.total_steps, cfg=cfg.optim)
            parts = trainer.parts(trackers, branch_points=branches.points, watch=watch)
            result = Loop(trainer, cfg.data.tokens, lr_fn, parts).run()
            if result["status"] == "ok" and branches.plans:
                result["branches"] = branches.run_all(rec, result)
    except Exception as e:
        record.record_failure(rec, e, out, main)
        trackers.finish(rec)
        raise
    finally:
        distributed.teardown(run.dist)
    rec.update(result, finished_at=record.now())
    record.write(rec, out, main)
    trackers.finish(rec)
    if rec["status"] == "interrupted":
        raise Interrupted(watch.received, trainer.state.step, out)
    return rec

"""WSD cooldown branches (Hägele et al. 2024): one stable run, several cooldowns. With
``optim.schedule=wsd`` and ``data.branches``, the stable phase is snapshotted where each
branch's cooldown starts; after the main run ends, each branch restores its snapshot, cools
down to its own D and is recorded as a run of its own in ``branch_D=<D>/``.

A snapshot is written to its branch's folder when it is taken (``snapshot.pt``, atomically,
like a checkpoint) and removed once the branch's record is written: a run killed anywhere
(in the stable phase past a branch's start, between branches, inside one) and started
again resumes from its checkpoint, reads the snapshots it passed from disk, keeps the
branches that finished, and ends with every branch's result as an uninterrupted run's."""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import replace

from lab.config.record import METRICS_NAME
from lab.config.schema import Config, to_dict
from lab.runs.checkpoint import load_checkpoint, save_checkpoint
from lab.runs.files import write_empty
from lab.runs.records import read_record
from lab.runs.trackers import make_trackers
from lab.training import record as records
from lab.training.loop import Loop
from lab.training.schedule import cooldown_start, lr_at

SNAPSHOT_NAME = "snapshot.pt"


class Branches:
    """The branches of one run: where each starts, its snapshot, and how to run it.
    ``resumed``: the run continues from a checkpoint, so branches already recorded as
    finished (of this config, from this start) are kept, not trained again."""

    def __init__(self, trainer, cfg: Config, resumed: bool = False, watch=None):
        self.trainer, self.cfg, self.plans, self.resumed = trainer, cfg, {}, resumed
        self.watch = watch  # a signal seen stops a branch at its next step, unrecorded
        plan = trainer.plan
        for d in sorted(set(cfg.data.branches)):
            steps = math.ceil(d / plan.tokens_per_step)
            start = cooldown_start(steps, cfg.optim)
            if start < plan.warmup:
                raise ValueError(
                    f"data.branches: the cooldown for D={d} would start at step {start}, "
                    f"inside the warmup ({plan.warmup} steps); use larger branch budgets"
                )
            self.plans[d] = {"tokens": d, "steps": steps, "start": start}

    @property
    def points(self) -> dict:
        """Step → the callback that snapshots the stable phase there (``BranchPoints``)."""
        return {b["start"]: functools.partial(self._snapshot, b) for b in self.plans.values()}

    def folder(self, d: int):
        return self.trainer.out / f"branch_D={d}"

    def _snapshot(self, branch: dict) -> None:
        branch["snapshot"] = copy.deepcopy(self.trainer.payload())
        if self.trainer.dist.main:
            save_checkpoint(self.folder(branch["tokens"]) / SNAPSHOT_NAME, branch["snapshot"])

    def _restore(self, d: int, branch: dict) -> dict:
        """The branch's snapshot: in memory when this process took it, else from disk."""
        if "snapshot" in branch:
            return branch["snapshot"]
        path = self.folder(d) / SNAPSHOT_NAME
        if not path.exists():
            raise ValueError(
                f"data.branches: the snapshot of branch D={d} (step {branch['start']}) is "
                f"missing from {path.parent}; train the run again with train.resume=false"
            )
        snapshot = load_checkpoint(path)
        if snapshot.get("config_hash") != self.trainer.key:
            raise ValueError(f"data.branches: {path} belongs to another config")
        return snapshot

    def _finished(self, d: int, branch: dict, parent: dict) -> dict | None:
        """The branch's record when a resumed run finds it finished, of this config."""
        done = read_record(self.folder(d)) if self.resumed else None
        if (
            done
            and done.get("status") == "ok"
            and done.get("config_hash") == parent.get("config_hash")
            and done.get("branch_start_step") == branch["start"]
        ):
            return done
        return None

    def run_all(self, parent: dict, result: dict) -> list[dict]:
        """Run every branch, shortest first; the trainer ends in the main run's state. A
        branch stopped by a signal ends the list, and marks ``result`` interrupted."""
        done = []
        for d, b in sorted(self.plans.items()):
            done.append(self.run(parent, d, b))
            if done[-1]["status"] == "interrupted":
                result["status"] = "interrupted"
                break
        return done

    def run(self, parent: dict, d: int, branch: dict) -> dict:
        """Restore the stable-phase snapshot taken at the branch's cooldown start, cool down
        to D tokens, and record it as a run in ``branch_D=<D>/``."""
        trainer, cfg = self.trainer, self.cfg
        out = self.folder(d)
        done = self._finished(d, branch, parent)
        if done is not None:
            return _summary(d, done, out)
        out.mkdir(exist_ok=True)
        main_state = copy.deepcopy(trainer.payload())
        trainer.load(self._restore(d, branch))
        if trainer.dist.main:
            write_empty(out / METRICS_NAME)
        lr_fn = functools.partial(
            lr_at,
            total_steps=trainer.plan.total_steps,
            cfg=cfg.optim,
            warmup=trainer.plan.warmup,
            cooldown_end=branch["steps"],
        )
        jsonl = make_trackers(["jsonl"] if trainer.dist.main else [], out / METRICS_NAME)
        parts = trainer.parts(jsonl, checkpoints=False, watch=self.watch)
        result = Loop(trainer, d, lr_fn, parts).run()
        if result["status"] == "interrupted":  # its snapshot stays: a rerun trains it again
            trainer.load(main_state)
            return _summary(d, result, out)
        branch_cfg = replace(cfg, data=replace(cfg.data, tokens=d, branches=[]))
        record = {
            **parent,
            "run_id": f"{parent['run_id']}-D{d}",
            "config": to_dict(branch_cfg),
            "tokens": d,
            "branch_of": str(trainer.out),
            "branch_start_step": branch["start"],
            "epochs": d / trainer.corpus.train.size,
            "finished_at": records.now(),
            **result,
            **records.flops(cfg, d),
        }
        records.write(record, out, trainer.dist.main)
        if trainer.dist.main and result["status"] == "ok":
            (out / SNAPSHOT_NAME).unlink(missing_ok=True)  # its record holds the result now
        trainer.load(main_state)
        return _summary(d, record, out)


def _summary(d: int, record: dict, out) -> dict:
    """What the main run's record keeps of a branch."""
    return {
        "tokens": d,
        "status": record["status"],
        "val_loss": record["val_loss"],
        "path": str(out),
    }

"""WSD cooldown branches (Hägele et al. 2024): one stable run, several cooldowns. With
``optim.schedule=wsd`` and ``data.branches``, the stable phase is snapshotted where each
branch's cooldown starts; after the main run ends, each branch restores its snapshot, cools
down to its own D and is recorded as a run of its own in ``branch_D=<D>/``."""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import replace

from lab.config.record import METRICS_NAME
from lab.config.schema import Config, to_dict
from lab.runs.trackers import make_trackers
from lab.training import record as records
from lab.training.loop import Loop
from lab.training.schedule import cooldown_start, lr_at


class Branches:
    """The branches of one run: where each starts, its snapshot, and how to run it."""

    def __init__(self, trainer, cfg: Config):
        self.trainer, self.cfg, self.plans = trainer, cfg, {}
        plan = trainer.plan
        for d in sorted(set(cfg.data.branches)):
            steps = math.ceil(d / plan.tokens_per_step)
            start = cooldown_start(steps, cfg.optim)
            if start < plan.warmup:
                raise ValueError(
                    f"data.branches: the cooldown for D={d} would start at step {start}, "
                    f"inside the warmup ({plan.warmup} steps); use larger branch budgets"
                )
            self.plans[d] = {"steps": steps, "start": start}

    @property
    def points(self) -> dict:
        """Step → the callback that snapshots the stable phase there (``BranchPoints``)."""
        return {b["start"]: functools.partial(self._snapshot, b) for b in self.plans.values()}

    def _snapshot(self, branch: dict) -> None:
        branch["snapshot"] = copy.deepcopy(self.trainer.payload())

    def run_all(self, parent: dict) -> list[dict]:
        """Run every branch, shortest first; the trainer ends in the main run's state."""
        return [self.run(parent, d, b) for d, b in sorted(self.plans.items())]

    def run(self, parent: dict, d: int, branch: dict) -> dict:
        """Restore the stable-phase snapshot taken at the branch's cooldown start, cool down
        to D tokens, and record it as a run in ``branch_D=<D>/``."""
        trainer, cfg = self.trainer, self.cfg
        out = trainer.out / f"branch_D={d}"
        out.mkdir(exist_ok=True)
        main_state = copy.deepcopy(trainer.payload())
        trainer.load(branch["snapshot"])
        if trainer.dist.main:
            (out / METRICS_NAME).write_text("")
        lr_fn = functools.partial(
            lr_at,
            total_steps=trainer.plan.total_steps,
            cfg=cfg.optim,
            warmup=trainer.plan.warmup,
            cooldown_end=branch["steps"],
        )
        jsonl = make_trackers(["jsonl"] if trainer.dist.main else [], out / METRICS_NAME)
        result = Loop(trainer, d, lr_fn, trainer.parts(jsonl, checkpoints=False)).run()
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
        trainer.load(main_state)
        return {
            "tokens": d,
            "status": result["status"],
            "val_loss": result["val_loss"],
            "path": str(out),
        }

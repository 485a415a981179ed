"""Learning-rate schedules, as a function of the optimizer step.

- ``cosine``: linear warmup, then cosine decay to lr·min_lr_ratio at the last step.
- ``wsd``: warmup–stable–decay (Hu et al. 2024, "MiniCPM"; Hägele et al. 2024, "Scaling Laws
  and Compute-Optimal Training Beyond Fixed Training Durations"): linear warmup, constant lr,
  then a cooldown over the last ``cooldown_fraction`` of the steps to lr·min_lr_ratio,
  shaped ``linear``, ``cosine`` or ``sqrt`` (1 − √progress, Hägele et al.'s best). Because
  the stable phase does not depend on the run's length, one run can branch into cooldowns
  at several token budgets (see ``data.branches``).
- ``constant``: linear warmup, then constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def warmup_steps(cfg, total_steps: int) -> int:
    return round(cfg.warmup_fraction * total_steps)


def lr_at(
    step: int, total_steps: int, cfg, warmup: int | None = None, cooldown_end: int | None = None
) -> float:
    """The learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    ``warmup`` overrides the warmup length (a WSD branch keeps its parent run's); for WSD,
    the cooldown ends at ``cooldown_end`` (default ``total_steps``)."""
    warmup = warmup_steps(cfg, total_steps) if warmup is None else warmup
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    end = total_steps if cooldown_end is None else cooldown_end
    start = cooldown_start(end, cfg)
    if step < start:
        return cfg.lr
    progress = min(1.0, (step - start + 1) / max(1, end - start))
    if cfg.cooldown_shape == "linear":
        factor = 1.0 - progress
    elif cfg.cooldown_shape == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0 - math.sqrt(progress)
    return floor + (cfg.lr - floor) * factor


def cooldown_start(total_steps: int, cfg) -> int:
    """First step of a WSD cooldown that ends at ``total_steps``."""
    return total_steps - round(cfg.cooldown_fraction * total_steps)


@dataclass(frozen=True)
class StepPlan:
    """A run's step counts: tokens per step, steps to D tokens, warmup, and how often it
    evaluates and checkpoints (``train.eval_every``: about 4 evaluations by default;
    ``train.checkpoint_every``: at every evaluation by default)."""

    tokens_per_step: int
    total_steps: int
    warmup: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def of(cls, cfg) -> StepPlan:
        """The plan of a Config (``cfg.data.tokens`` already resolved from a budget)."""
        t = cfg.train
        tokens_per_step = t.batch_size * cfg.model.context
        total = math.ceil(cfg.data.tokens / tokens_per_step)
        eval_every = t.eval_every or max(1, math.ceil(total / 4))
        return cls(
            tokens_per_step=tokens_per_step,
            total_steps=total,
            warmup=warmup_steps(cfg.optim, total),
            eval_every=eval_every,
            checkpoint_every=t.checkpoint_every or eval_every,
        )

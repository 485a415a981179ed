"""``Trainer``: one run's model, optimizer and batches. It takes one optimizer step,
evaluates, and packs and restores the checkpoint payload; ``lab.training.loop`` drives it,
and the WSD branches (``lab.training.branches``) reuse it."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lab.config.counting import flops_per_token
from lab.config.record import CHECKPOINT_NAME, DEFAULT_C_CONVENTION
from lab.config.schema import Config, to_dict
from lab.data.corpus import Corpus, random_batch
from lab.model.gpt import GPT
from lab.model.parametrization import build_optimizer
from lab.runs.checkpoint import (
    capture_rng,
    full_state,
    load_full_state,
    load_sharded,
    restore_rng,
    save_checkpoint,
    save_sharded,
)
from lab.training import distributed
from lab.training.device import MFU, autocast
from lab.training.evaluation import Evaluator
from lab.training.loop import (
    BranchPoints,
    Checkpoints,
    EarlyStopping,
    Evaluation,
    Interruption,
    Metrics,
    Progress,
)
from lab.training.schedule import StepPlan

log = logging.getLogger("lab.train")


@dataclass
class LoopState:
    """The counters a checkpoint carries besides the model, optimizer and RNG states."""

    step: int = 0
    tokens: int = 0
    running: float | None = None  # moving average of the training loss
    best_val: float = float("inf")
    evals_since_best: int = 0
    elapsed: float = 0.0  # seconds of training, over all sessions of the run
    val_loss: float = float("nan")


class Trainer:
    """The model, optimizer and data sampler of one run (and of its WSD branches)."""

    def __init__(self, cfg: Config, corpus: Corpus, device: torch.device, out: Path, dist, key):
        self.cfg, self.corpus, self.device, self.out = cfg, corpus, device, out
        self.dist, self.key = dist, key  # the processes; the config hash checkpoints carry
        torch.manual_seed(cfg.train.seed)
        self.rng = np.random.default_rng([cfg.train.seed, 1])
        self.model = GPT(cfg.model).to(device)
        self.model.checkpoint_blocks = cfg.train.activation_checkpointing == "block"
        self.sharded = cfg.train.parallel == "fsdp"  # sharded checkpoints, at any world size
        self.net = distributed.wrap(self.model, dist, device, str(cfg.train.parallel))
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.plan = StepPlan.of(cfg)
        self.autocast = autocast(device)
        self.evaluator = Evaluator(cfg, corpus, device, self.autocast)
        self.mfu = MFU(cfg.model, device)
        self.flops_per_token = flops_per_token(cfg.model)[DEFAULT_C_CONVENTION]
        self.state = LoopState()
        self.saved_step: int | None = None  # step of the run folder's checkpoint
        self.data_seconds = 0.0  # time spent drawing batches, this session
        self._grad_norm = None

    def train_step(self, n_tokens: int, lr: float) -> float:
        """One step on a global batch whose first ``n_tokens`` targets count (the last step
        of a run may be partial). Returns the batch's mean loss over the processes."""
        t, world = self.cfg.train, self.dist.world
        started = time.perf_counter()
        x, y = random_batch(
            self.corpus.train,
            t.batch_size,
            self.cfg.model.context,
            self.rng,
            pin=self.device.type == "cuda",
        )
        self.data_seconds += time.perf_counter() - started
        if n_tokens < y.numel():
            y = y.clone()
            y.view(-1)[n_tokens:] = -1  # ignored: the run consumes exactly D tokens
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        if world == 1 and t.grad_accum == 1:
            micro = [slice(None)]  # the whole batch: no gather copy
        else:
            mine = torch.tensor_split(torch.arange(x.shape[0]), world)[self.dist.rank]
            micro = torch.tensor_split(mine, t.grad_accum)
        local_sum = 0.0
        for i, rows in enumerate(micro):
            ctx = distributed.gradient_sync(self.net, i == len(micro) - 1 or world == 1)
            xb = x[rows].to(self.device, non_blocking=True)
            yb = y[rows].to(self.device, non_blocking=True)
            with ctx, self.autocast:
                logits, _ = self.net(xb)
                loss_sum = F.cross_entropy(
                    logits.float().view(-1, logits.size(-1)),
                    yb.reshape(-1),
                    ignore_index=-1,
                    reduction="sum",
                )
                # DDP and FSDP average gradients over ranks: scale to the global mean
                (loss_sum * (world / n_tokens)).backward()
            local_sum += loss_sum.item()
        loss = self.dist.all_sum(local_sum, self.device) / n_tokens
        if math.isfinite(loss):
            clip = self.cfg.optim.grad_clip  # 0: no clipping, but the norm is still logged
            self._grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), clip if clip > 0 else float("inf")
            )
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def evaluate(self, which: str = "val", stop=None) -> dict:
        """The model's loss statistics on the ``which`` windows (``Evaluator.stats``),
        read until ``stop`` says so (an ``evaluation.Stop``; None: all of them)."""
        return self.evaluator.stats(self.model, which, stop)

    @property
    def grad_norm(self) -> float:
        """The global gradient norm of the last step, before clipping (read when logged, so
        the step itself never waits for it)."""
        if self._grad_norm is None:
            return float("nan")
        return float(distributed.full(self._grad_norm))

    def parts(self, trackers, checkpoints: bool = True, branch_points=None, watch=None) -> list:
        """The loop's parts for this run, in the order they act after a step."""
        t, main, plan = self.cfg.train, self.dist.main, self.plan
        log_every = t.log_every or max(1, plan.total_steps // 50)
        parts = [BranchPoints(branch_points)] if branch_points else []
        parts += [Interruption(watch), Evaluation(plan.eval_every)]
        parts += [EarlyStopping(t.early_stop_patience)]
        parts += [Metrics(trackers, log_every, enabled=main), Progress(enabled=main)]
        if checkpoints:
            parts.append(Checkpoints(plan.checkpoint_every))
        return parts

    # -- checkpoints ------------------------------------------------------------------------
    def payload(self) -> dict:
        """Everything a checkpoint holds, the model and optimizer states whole (under fsdp
        gathered to rank 0's CPU: a WSD snapshot, or the main run's state kept in memory)."""
        if self.sharded:
            model_state, optim_state = full_state(self.model, self.optimizer)
        else:
            model_state, optim_state = self.model.state_dict(), self.optimizer.state_dict()
        return {"model": model_state, "optimizer": optim_state, **self._meta()}

    def _meta(self) -> dict:
        return {
            "state": asdict(self.state),
            "rng": capture_rng(self.rng),
            "config_hash": self.key,
            "model_config": to_dict(self.cfg)["model"],
            "tokenizer": self.corpus.tokenizer.to_payload(),
        }

    def weights_finite(self) -> bool:
        """Whether every weight is finite, on every rank (each checks its own shards)."""
        bad = sum(
            int((~torch.isfinite(distributed.local(p))).sum()) for p in self.model.parameters()
        )
        return self.dist.all_sum(float(bad), self.device) == 0

    def save(self) -> None:
        """Checkpoint, unless the weights went non-finite: the last good one stays."""
        if not self.weights_finite():
            log.warning("non-finite weights at step %d: checkpoint not written", self.state.step)
            return
        if self.sharded:  # every rank writes its shards
            save_sharded(
                self.out, self.state.step, self.model, self.optimizer, self._meta(), self.dist.main
            )
        elif self.dist.main:
            save_checkpoint(self.out / CHECKPOINT_NAME, self.payload())
        self.saved_step = self.state.step

    def load(self, payload: dict) -> None:
        if payload.get("sharded"):  # written under fsdp at any number of processes
            load_sharded(payload, self.out, self.model, self.optimizer)
        elif self.sharded:
            load_full_state(self.model, self.optimizer, payload["model"], payload["optimizer"])
        else:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        self.state = LoopState(**payload["state"])
        restore_rng(self.rng, payload["rng"])

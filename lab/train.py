"""Train one model on exactly D tokens and write its result record.

``train(cfg, out_dir)`` is a plain function: the Hydra entry point calls it, and so can a
test or a notebook. It validates the config, reads the corpus and (with ``train.resume``)
finds the checkpoint before building anything, so bad input fails in a second, not after
training. In the run folder:

- ``result.json``: the record, written when the run starts (status "running") and replaced
  when it ends ("ok", "failed" or "diverged");
- ``metrics.jsonl``: one line per evaluation (step, tokens, losses, lr, tokens/s, MFU);
- ``checkpoint.pt``: written atomically every ``train.checkpoint_every`` steps (default: at
  each evaluation) and at the end; ``train.resume=true`` continues from it on the same
  trajectory (data order and dropout included);
- ``branch_D=<D>/``: with ``optim.schedule=wsd`` and ``data.branches``, each cooldown branch
  taken off the stable phase at token budget D, recorded as a run of its own.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import kernels
from lab import distributed
from lab.checkpoint import (
    CHECKPOINT_NAME,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from lab.config import Config, DataConfig, config_hash, to_dict, validate
from lab.counting import budget_tokens, flops_per_token, param_counts, peak_flops, training_flops
from lab.data import Corpus, eval_windows, load_corpus, random_batch, require_context
from lab.model import GPT, Norm
from lab.records import METRICS_NAME, RECORD_NAME, git_commit, versions, write_json_atomic
from lab.schedule import cooldown_start, lr_at, warmup_steps

log = logging.getLogger("lab.train")

_corpus_cache: dict[tuple, Corpus] = {}


def cached_corpus(cfg: DataConfig, context: int) -> Corpus:
    """load_corpus, remembered within the process (a sweep reads its corpus once)."""
    key = (cfg.path, cfg.max_bytes, cfg.val_fraction, cfg.tokenizer, cfg.bpe_vocab_size,
           cfg.bpe_train_bytes, cfg.text_field, cfg.bin_dtype, cfg.cache_dir)  # fmt: skip
    if key not in _corpus_cache:
        _corpus_cache.clear()
        _corpus_cache[key] = load_corpus(cfg)
    corpus = _corpus_cache[key]
    require_context(corpus, context)
    return corpus


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def resolve_budget(cfg: Config) -> Config:
    """With data.budget set, data.tokens becomes D = C / (6·N) for this model."""
    if cfg.data.budget is None:
        return cfg
    return replace(cfg, data=replace(cfg.data, tokens=budget_tokens(cfg.model, cfg.data.budget)))


def below_one_context(cfg: Config) -> str | None:
    """Why a run's budget is too small to train (D below one context), or None."""
    if cfg.data.budget is None:
        return None
    tokens = budget_tokens(cfg.model, cfg.data.budget)
    if tokens >= cfg.model.context:
        return None
    return (
        f"budget C={cfg.data.budget:.3g} is too small for model {cfg.model.name!r}: "
        f"D = C/(6N) = {tokens} tokens, below one context of {cfg.model.context}"
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of linear layers only: not on norms, biases, embeddings."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, Norm) for p in m.parameters()}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith(("wte.", "wpe."))
        if p.dim() >= 2 and not is_embedding and id(p) not in norm_params:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def evaluate(model: GPT, windows, batch_size: int, device: torch.device) -> float:
    """Mean loss in nats per token over fixed windows."""
    was_training = model.training
    model.eval()
    x_all, y_all = windows
    total, count = 0.0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for i in range(0, x_all.shape[0], batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        with autocast:
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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
    """The model, optimizer, data sampler and loop of one run (and of its WSD branches)."""

    def __init__(
        self, cfg: Config, corpus: Corpus, device: torch.device, out: Path, dist, key: str
    ):
        m, o, t = cfg.model, cfg.optim, cfg.train
        self.cfg, self.corpus, self.device, self.out, self.dist, self.key = (
            cfg,
            corpus,
            device,
            out,
            dist,
            key,
        )
        torch.manual_seed(t.seed)
        self.rng = np.random.default_rng([t.seed, 1])
        self.model = GPT(m).to(device)
        self.net = self.model
        if dist.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if t.compile:
            self.net = torch.compile(self.net)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps
        )
        self.tokens_per_step = t.batch_size * m.context
        self.total_steps = math.ceil(cfg.data.tokens / self.tokens_per_step)
        self.warmup = warmup_steps(o, self.total_steps)
        self.eval_every = t.eval_every or max(1, math.ceil(self.total_steps / 4))
        self.checkpoint_every = t.checkpoint_every or self.eval_every
        n_eval = t.eval_batches * t.batch_size
        self.val_windows = eval_windows(corpus.val, n_eval, m.context)
        self.train_windows = eval_windows(corpus.train, n_eval, m.context)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        self.flops_per_token = flops_per_token(m)["6N_attn_head"]
        self.peak = peak_flops(device)
        self.state = LoopState()
        self.data_seconds = 0.0  # time spent drawing batches, this session

    # -- one optimizer step -------------------------------------------------------------
    def train_step(self, n_tokens: int, lr: float) -> float:
        """One step on a global batch whose first ``n_tokens`` targets count (the last step
        of a run may be partial). Returns the batch's mean loss over the processes."""
        t = self.cfg.train
        started = time.perf_counter()
        x, y = random_batch(self.corpus.train, t.batch_size, self.cfg.model.context, self.rng,
                            pin=self.device.type == "cuda")  # fmt: skip
        self.data_seconds += time.perf_counter() - started
        if n_tokens < y.numel():
            y = y.clone()
            y.view(-1)[n_tokens:] = -1  # ignored: the run consumes exactly D tokens
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.dist.world == 1 and t.grad_accum == 1:
            micro = [slice(None)]  # the whole batch: no gather copy
        else:
            mine = torch.tensor_split(torch.arange(x.shape[0]), self.dist.world)[self.dist.rank]
            micro = torch.tensor_split(mine, t.grad_accum)
        local_sum = 0.0
        for i, rows in enumerate(micro):
            sync = i == len(micro) - 1 or self.dist.world == 1
            ctx = contextlib.nullcontext() if sync else self.net.no_sync()
            xb = x[rows].to(self.device, non_blocking=True)
            yb = y[rows].to(self.device, non_blocking=True)
            with ctx, self.autocast:
                logits, _ = self.net(xb)
                loss_sum = F.cross_entropy(
                    logits.float().view(-1, logits.size(-1)), yb.reshape(-1),
                    ignore_index=-1, reduction="sum",
                )  # fmt: skip
                # DDP averages gradients over ranks: scale so the result is the global mean
                (loss_sum * (self.dist.world / n_tokens)).backward()
            local_sum += loss_sum.item()
        loss = self.dist.all_sum(local_sum, self.device) / n_tokens
        if math.isfinite(loss):
            if self.cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    # -- the loop -------------------------------------------------------------------------
    def run(self, budget: int, lr_fn, end_evals: bool = True, snapshots: dict | None = None,
            metrics_path: Path | None = None, checkpoints: bool = True) -> dict:  # fmt: skip
        """Train from ``self.state.step`` until ``budget`` tokens; returns how it ended.

        ``lr_fn(step)`` gives the learning rate; ``snapshots`` maps a step to a callback
        called before that step (the WSD branch points)."""
        s, t = self.state, self.cfg.train
        steps = math.ceil(budget / self.tokens_per_step)
        metrics_path = metrics_path or self.out / METRICS_NAME
        metrics = open(metrics_path, "a") if self.dist.main else None  # noqa: SIM115
        bar = _progress(steps, s.step) if self.dist.main else None
        status, message, stopped_early, evaluated_at = "ok", None, False, -1
        session_start, session_tokens = time.perf_counter(), 0
        run_start, self.data_seconds = session_start, 0.0
        try:
            while s.step < steps:
                if snapshots and s.step in snapshots:
                    snapshots[s.step]()
                n = min(self.tokens_per_step, budget - s.step * self.tokens_per_step)
                lr = lr_fn(s.step)
                loss = self.train_step(n, lr)
                if not math.isfinite(loss):
                    status = "diverged"
                    message = f"loss became {loss} at step {s.step} (lr {lr:.3g}); stopped"
                    log.error("run diverged: %s; the last good checkpoint is kept", message)
                    break
                s.step += 1
                s.tokens += n
                session_tokens += n
                s.running = loss if s.running is None else 0.9 * s.running + 0.1 * loss
                if bar:
                    bar.update(1)
                    bar.set_postfix(loss=f"{s.running:.3f}", lr=f"{lr:.2e}")
                last = s.step == steps
                if s.step % self.eval_every == 0 or last:
                    elapsed = s.elapsed + time.perf_counter() - session_start
                    tps = session_tokens / max(1e-9, time.perf_counter() - session_start)
                    s.val_loss = evaluate(self.model, self.val_windows, t.batch_size, self.device)
                    evaluated_at = s.step
                    self._log_metrics(metrics, lr, tps, elapsed)
                    if s.val_loss < s.best_val:
                        s.best_val, s.evals_since_best = s.val_loss, 0
                    else:
                        s.evals_since_best += 1
                    if t.early_stop_patience and s.evals_since_best >= t.early_stop_patience:
                        stopped_early = True
                        log.info(
                            "early stop: no better val loss in %d evaluations", s.evals_since_best
                        )
                if checkpoints and (s.step % self.checkpoint_every == 0 or last or stopped_early):
                    s.elapsed += time.perf_counter() - session_start
                    session_start = time.perf_counter()
                    self.save()
                if stopped_early:
                    break
        finally:
            if metrics:
                metrics.close()
            if bar:
                bar.close()
        s.elapsed += time.perf_counter() - session_start
        if end_evals and status == "ok" and evaluated_at != s.step:
            s.val_loss = evaluate(self.model, self.val_windows, t.batch_size, self.device)
        train_loss = float("nan")
        if end_evals and status == "ok":
            train_loss = evaluate(self.model, self.train_windows, t.batch_size, self.device)
        tps = s.tokens / s.elapsed if s.elapsed > 0 else None
        result = {
            "status": status, "steps": s.step, "tokens_seen": s.tokens,
            "train_loss": train_loss, "val_loss": s.val_loss, "train_loss_running": s.running,
            "generalization_gap": s.val_loss - train_loss, "wall_time_s": s.elapsed,
            "tokens_per_s": tps, "stopped_early": stopped_early,
            "mfu": tps * self.flops_per_token / self.peak if tps and self.peak else None,
            "data_wait_fraction": self.data_seconds / max(1e-9, time.perf_counter() - run_start),
        }  # fmt: skip
        if message:
            result["error"] = message
        return result

    def _log_metrics(self, metrics, lr: float, tps: float, elapsed: float) -> None:
        s = self.state
        row = {"step": s.step, "tokens": s.tokens, "train_loss": s.running, "val_loss": s.val_loss,
               "lr": lr, "tokens_per_s": tps, "elapsed_s": elapsed,
               "mfu": tps * self.flops_per_token / self.peak if self.peak else None}  # fmt: skip
        if metrics:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
        if self.dist.main and not sys.stderr.isatty():
            log.info("step %d  tokens %s  train %.4f  val %.4f  lr %.2e  %.0f tok/s", s.step,
                     f"{s.tokens:,}", s.running, s.val_loss, lr, tps)  # fmt: skip

    # -- checkpoints and snapshots ----------------------------------------------------------
    def payload(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state), "rng": capture_rng(self.rng), "config_hash": self.key,
            "model_config": asdict(self.cfg.model), "tokenizer": self.corpus.tokenizer.to_payload(),
        }  # fmt: skip

    def save(self) -> None:
        """Checkpoint, unless the weights went non-finite: the last good one stays."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            log.warning("non-finite weights at step %d: checkpoint not written", self.state.step)
            return
        if self.dist.main:
            save_checkpoint(self.out / CHECKPOINT_NAME, self.payload())

    def load(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = LoopState(**payload["state"])
        restore_rng(self.rng, payload["rng"])


def _progress(total: int, start: int):
    """A progress bar on an interactive terminal; None in logs (plain lines there)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=False)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


def train(cfg: Config, out_dir: str | Path) -> dict:
    """Train ``cfg`` on exactly ``cfg.data.tokens`` tokens; write and return the record.

    Raises ValueError / FileNotFoundError for bad configuration or data (or a resume
    without a checkpoint) before training starts. A NaN or infinite loss ends the run with
    status "diverged"; any other exception is recorded as "failed" and re-raised."""
    validate(cfg)
    key = config_hash(cfg)  # of the config as asked for: the sweep's resume key
    too_small = below_one_context(cfg)
    if too_small:
        raise ValueError(too_small)
    cfg = resolve_budget(cfg)
    out = Path(out_dir)
    device = resolve_device(cfg.train.device)
    resume_from = None
    if cfg.train.resume:
        resume_from = load_checkpoint(out / CHECKPOINT_NAME)
        if resume_from["config_hash"] != key:
            raise ValueError(f"train.resume: the checkpoint in {out} belongs to another config")
    kernels.set_backend(cfg.train.backend, **cfg.train.backend_ops)
    corpus = cached_corpus(cfg.data, cfg.model.context)
    tokenizer = corpus.tokenizer
    if (
        corpus.max_token_id is not None
        and cfg.model.vocab_size
        and corpus.max_token_id >= cfg.model.vocab_size
    ):
        raise ValueError(
            f"data.path: token ids in {corpus.source} reach {corpus.max_token_id}, beyond "
            f"model.vocab_size={cfg.model.vocab_size}"
        )
    if (
        cfg.model.vocab_size
        and cfg.model.vocab_size < tokenizer.vocab_size
        and corpus.max_token_id is None
    ):
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size}; set it to 0 to take the tokenizer's"
        )
    cfg = replace(
        cfg, model=replace(cfg.model, vocab_size=cfg.model.vocab_size or tokenizer.vocab_size)
    )
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dist = distributed.setup(device.type)
    if device.type == "cuda" and dist.world > 1:
        device = torch.device("cuda", dist.local_rank)
    if cfg.train.batch_size % (dist.world * cfg.train.grad_accum):
        raise ValueError(
            f"train.batch_size={cfg.train.batch_size} must divide evenly over {dist.world} "
            f"process(es) × train.grad_accum={cfg.train.grad_accum} micro-batches"
        )
    out.mkdir(parents=True, exist_ok=True)
    record = _start_record(cfg, key, out, corpus, device)
    try:
        trainer = Trainer(cfg, corpus, device, out, dist, key)
        if resume_from is not None:
            trainer.load(resume_from)
            record["resumed_from_step"] = trainer.state.step
            if dist.main:
                _truncate_metrics(out / METRICS_NAME, trainer.state.step)
            log.info(
                "resuming from step %d (%s tokens)", trainer.state.step, f"{trainer.state.tokens:,}"
            )
        elif dist.main:
            (out / METRICS_NAME).write_text("")
        if dist.main:
            write_json_atomic(out / RECORD_NAME, record)
        branches = _plan_branches(trainer, cfg) if cfg.data.branches else {}
        snapshots = {start: (lambda d=d: branches[d].update(snapshot=_snapshot(trainer)))
                     for d, b in branches.items() for start in [b["start"]]}  # fmt: skip
        result = trainer.run(cfg.data.tokens, lambda s: lr_at(s, trainer.total_steps, cfg.optim),
                             snapshots=snapshots)  # fmt: skip
        if result["status"] == "ok" and branches:
            result["branches"] = [
                _run_branch(trainer, cfg, record, d, b) for d, b in sorted(branches.items())
            ]
    except Exception as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=_now())
        if dist.main:
            write_json_atomic(out / RECORD_NAME, record)
        raise
    finally:
        distributed.teardown(dist)
    record.update(result, finished_at=_now())
    if dist.main:
        write_json_atomic(out / RECORD_NAME, record)
    return record


def _start_record(cfg: Config, key: str, out: Path, corpus: Corpus, device) -> dict:
    counts = param_counts(cfg.model)
    record = {
        "run_id": f"{out.name}-{key}", "status": "running", "config": to_dict(cfg), "config_hash": key,
        "n_params_total": counts["total"], "n_params_non_embedding": counts["non_embedding"],
        "n_params_embedding": counts["embedding"], "tokens": cfg.data.tokens, "budget": cfg.data.budget,
        "corpus": corpus.summary(), "unique_tokens": int(corpus.train.size),
        "epochs": cfg.data.tokens / corpus.train.size, "device": str(device),
        "backends": {op: kernels.backend_for(op, device) for op in kernels.OPS},
        "versions": versions(), "git_commit": git_commit(), "metrics_path": METRICS_NAME,
        "checkpoint_path": CHECKPOINT_NAME, "started_at": _now(),
    }  # fmt: skip
    record.update({f"flops_{k}": v for k, v in training_flops(cfg.model, cfg.data.tokens).items()})
    if record["epochs"] > 1:
        log.warning("data.tokens=%d exceeds the %d unique training tokens: %.2f epochs (repeated data)",
                    cfg.data.tokens, corpus.train.size, record["epochs"])  # fmt: skip
    return record


# -- WSD cooldown branches (Hägele et al. 2024): one stable run, several cooldowns -----------
def _plan_branches(trainer: Trainer, cfg: Config) -> dict[int, dict]:
    branches = {}
    for d in sorted(set(cfg.data.branches)):
        steps = math.ceil(d / trainer.tokens_per_step)
        start = cooldown_start(steps, cfg.optim)
        if start < trainer.warmup:
            raise ValueError(
                f"data.branches: the cooldown for D={d} would start at step {start}, inside the "
                f"warmup ({trainer.warmup} steps); use larger branch budgets"
            )
        branches[d] = {"steps": steps, "start": start}
    return branches


def _snapshot(trainer: Trainer) -> dict:
    return copy.deepcopy({k: v for k, v in trainer.payload().items() if k != "model_config"})


def _run_branch(trainer: Trainer, cfg: Config, parent: dict, d: int, branch: dict) -> dict:
    """Restore the stable-phase snapshot taken at the branch's cooldown start, cool down to
    D tokens, and record it as a run in ``branch_D=<D>/``."""
    out = trainer.out / f"branch_D={d}"
    out.mkdir(exist_ok=True)
    main_state = copy.deepcopy(trainer.payload())
    trainer.load({**branch["snapshot"], "model_config": None})
    if trainer.dist.main:
        (out / METRICS_NAME).write_text("")
    result = trainer.run(d, lambda s: lr_at(s, trainer.total_steps, cfg.optim, warmup=trainer.warmup,
                                            cooldown_end=branch["steps"]),
                         metrics_path=out / METRICS_NAME, checkpoints=False)  # fmt: skip
    branch_cfg = replace(cfg, data=replace(cfg.data, tokens=d, branches=[]))
    record = {**parent, "run_id": f"{parent['run_id']}-D{d}", "config": to_dict(branch_cfg),
              "tokens": d, "branch_of": str(trainer.out), "branch_start_step": branch["start"],
              "epochs": d / trainer.corpus.train.size, "finished_at": _now(), **result}  # fmt: skip
    record.update({f"flops_{k}": v for k, v in training_flops(cfg.model, d).items()})
    if trainer.dist.main:
        write_json_atomic(out / RECORD_NAME, record)
    trainer.load(main_state)
    return {
        "tokens": d,
        "status": result["status"],
        "val_loss": result["val_loss"],
        "path": str(out),
    }

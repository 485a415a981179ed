"""Train one model on exactly D tokens and write its result record.

``train(cfg, out_dir)`` is a plain function: the Hydra entry point calls it, and so can a
test or a notebook. It validates the config and reads the corpus before building
anything, so bad input fails in a second, not after training. The record
(``result.json``) is written when the run starts (status "running") and replaced when it
ends ("ok", "failed" or "diverged"); evaluations append to ``metrics.jsonl`` as they happen.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import kernels
from lab.config import Config, DataConfig, config_hash, to_dict, validate
from lab.counting import budget_tokens, param_counts, training_flops
from lab.data import (
    ByteTokenizer,
    Corpus,
    eval_windows,
    load_corpus,
    random_batch,
    require_context,
)
from lab.model import GPT, LayerNorm
from lab.records import METRICS_NAME, RECORD_NAME, git_commit, versions, write_json_atomic

log = logging.getLogger("lab.train")

_corpus_cache: dict[tuple, Corpus] = {}


def cached_corpus(cfg: DataConfig, context: int) -> Corpus:
    """load_corpus, remembered within the process (a sweep reads its corpus once)."""
    key = (cfg.path, cfg.max_bytes, cfg.val_fraction, cfg.tokenizer)
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


def lr_at(step: int, total_steps: int, cfg) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio."""
    warmup = round(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of linear layers only: not on norms, biases, embeddings."""
    decay, no_decay = [], []
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, LayerNorm) for p in m.parameters()
    }
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
    model.eval()
    x_all, y_all = windows
    total, count = 0.0, 0
    for i in range(0, x_all.shape[0], batch_size):
        x, y = x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
        _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train()
    return total / count


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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


def train(cfg: Config, out_dir: str | Path) -> dict:
    """Train ``cfg`` on exactly ``cfg.data.tokens`` tokens; write and return the record.

    Raises ValueError / FileNotFoundError for bad configuration or data before training
    starts. A NaN or infinite loss ends the run with status "diverged"; any other
    exception is recorded as "failed" and re-raised."""
    validate(cfg)
    key = config_hash(cfg)  # of the config as asked for: the sweep's resume key
    too_small = below_one_context(cfg)
    if too_small:
        raise ValueError(too_small)
    cfg = resolve_budget(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    kernels.set_backend(cfg.train.backend, **cfg.train.backend_ops)
    tokenizer = ByteTokenizer()
    corpus = cached_corpus(cfg.data, cfg.model.context)
    if cfg.model.vocab_size and cfg.model.vocab_size < tokenizer.vocab_size:
        raise ValueError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size}; set it to 0 to take the tokenizer's"
        )
    mcfg = replace(cfg.model, vocab_size=cfg.model.vocab_size or tokenizer.vocab_size)
    cfg = replace(cfg, model=mcfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    counts = param_counts(mcfg)
    flops = training_flops(mcfg, cfg.data.tokens)
    record = {
        "run_id": f"{out.name}-{key}",
        "status": "running",
        "config": to_dict(cfg),
        "config_hash": key,
        "n_params_total": counts["total"],
        "n_params_non_embedding": counts["non_embedding"],
        "n_params_embedding": counts["embedding"],
        "tokens": cfg.data.tokens,
        "budget": cfg.data.budget,
        **{f"flops_{k}": v for k, v in flops.items()},
        "corpus": corpus.summary(),
        "unique_tokens": int(corpus.train.size),
        "epochs": cfg.data.tokens / corpus.train.size,
        "device": str(device),
        "backends": {op: kernels.backend_for(op, device) for op in kernels.OPS},
        "versions": versions(),
        "git_commit": git_commit(),
        "metrics_path": METRICS_NAME,
        "started_at": _now(),
    }
    write_json_atomic(out / RECORD_NAME, record)
    if record["epochs"] > 1:
        log.warning(
            "data.tokens=%d exceeds the %d unique training tokens: %.2f epochs (repeated data)",
            cfg.data.tokens,
            corpus.train.size,
            record["epochs"],
        )
    try:
        result = _run(cfg, corpus, device, out)
    except Exception as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=_now())
        write_json_atomic(out / RECORD_NAME, record)
        raise
    record.update(result, finished_at=_now())
    write_json_atomic(out / RECORD_NAME, record)
    return record


def _run(cfg: Config, corpus: Corpus, device: torch.device, out: Path) -> dict:
    m, o, t = cfg.model, cfg.optim, cfg.train
    torch.manual_seed(t.seed)
    rng = np.random.default_rng([t.seed, 1])
    model = GPT(m).to(device)
    optimizer = torch.optim.AdamW(
        param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps
    )
    tokens_per_step = t.batch_size * m.context
    full_steps, remainder = divmod(cfg.data.tokens, tokens_per_step)
    total_steps = full_steps + (remainder > 0)
    eval_every = t.eval_every or max(1, math.ceil(total_steps / 4))
    n_eval = t.eval_batches * t.batch_size
    val_windows = eval_windows(corpus.val, n_eval, m.context)
    train_windows = eval_windows(corpus.train, n_eval, m.context)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    metrics = open(out / METRICS_NAME, "w")  # noqa: SIM115 - closed below
    tokens_seen, running, started = 0, None, time.perf_counter()
    train_loss = val_loss = float("nan")
    status, message = "ok", None
    try:
        for step in range(total_steps):
            x, y = random_batch(corpus.train, t.batch_size, m.context, rng)
            step_tokens = tokens_per_step
            if step == full_steps:  # the last, partial step: exactly D tokens in all
                rows = math.ceil(remainder / m.context)
                x, y = x[:rows], y[:rows].clone()
                y.view(-1)[remainder:] = -1  # ignored by the loss
                step_tokens = remainder
            lr = lr_at(step, total_steps, o)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                _, loss = model(x.to(device), y.to(device))
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                status = "diverged"
                message = f"loss became {loss_value} at step {step} (lr {lr:.3g})"
                log.error("run diverged: %s", message)
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            optimizer.step()
            tokens_seen += step_tokens
            running = loss_value if running is None else 0.9 * running + 0.1 * loss_value
            last = step == total_steps - 1
            if (step + 1) % eval_every == 0 or last:
                val_loss = evaluate(model, val_windows, t.batch_size, device)
                if last:
                    train_loss = evaluate(model, train_windows, t.batch_size, device)
                elapsed = time.perf_counter() - started
                row = {
                    "step": step + 1,
                    "tokens": tokens_seen,
                    "train_loss": running,
                    "val_loss": val_loss,
                    "lr": lr,
                    "tokens_per_s": tokens_seen / elapsed,
                    "elapsed_s": elapsed,
                }
                metrics.write(json.dumps(row) + "\n")
                metrics.flush()
                log.info(
                    "step %d/%d  tokens %s  train %.4f  val %.4f  lr %.2e  %.0f tok/s",
                    step + 1,
                    total_steps,
                    f"{tokens_seen:,}",
                    running,
                    val_loss,
                    lr,
                    row["tokens_per_s"],
                )
    finally:
        metrics.close()
    wall = time.perf_counter() - started
    result = {
        "status": status,
        "steps": total_steps,
        "tokens_seen": tokens_seen,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "train_loss_running": running,
        "generalization_gap": val_loss - train_loss,
        "wall_time_s": wall,
        "tokens_per_s": tokens_seen / wall if wall > 0 else None,
    }
    if message:
        result["error"] = message
    return result

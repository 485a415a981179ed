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

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import kernels
from lab import distributed
from lab.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from lab.config import Config, DataConfig, config_hash, to_dict, validate
from lab.counting import (
    budget_tokens,
    flops_per_token,
    param_counts,
    peak_flops,
    training_flops,
)
from lab.data import Corpus, eval_windows, load_corpus, random_batch, require_context
from lab.loggers import RunInfo, Trackers, make_trackers
from lab.loop import (
    BranchPoints,
    Checkpoints,
    EarlyStopping,
    Evaluation,
    Loop,
    Metrics,
    Progress,
)
from lab.lr_law import load_lr_law, rate
from lab.model import GPT, Norm
from lab.records import git_commit, read_record, versions, write_json_atomic
from lab.schedule import cooldown_start, lr_at, warmup_steps
from lab.schema import (
    C_CONVENTIONS,
    CHECKPOINT_NAME,
    METRICS_NAME,
    N_CONVENTIONS,
    N_EMBEDDING_KEY,
    RECORD_NAME,
)

log = logging.getLogger("lab.train")
EVAL_TOKENS_PER_CALL = 8192  # tokens per forward call of an evaluation (logits: ×vocab)

_corpus_cache: dict[tuple, Corpus] = {}


def cached_corpus(cfg: DataConfig, context: int) -> Corpus:
    """load_corpus, remembered within the process (a sweep reads its corpus once)."""
    key = tuple(
        (f.name, getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name not in ("tokens", "budget", "branches")  # how much is read, not what
    )
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


def resolve_lr_law(cfg: Config) -> tuple[Config, dict | None]:
    """With optim.lr_law set, the config with optim.lr from the law at this model's N (in
    the law's N convention; and D), and what the record keeps of it: the law's path, the
    N it was read at and the rate it gave."""
    if cfg.optim.lr_law is None:
        return cfg, None
    law = load_lr_law(cfg.optim.lr_law, str(cfg.model.parametrization))
    n = param_counts(cfg.model)[law.get("n_convention", "non_embedding")]
    lr = rate(law, n, cfg.data.tokens)
    return replace(cfg, optim=replace(cfg.optim, lr=lr)), {"path": law["path"], "n": n, "lr": lr}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of linear layers only: not on norms, biases, embeddings.
    Each group carries ``lr_scale``, the share of the schedule's rate it trains at: 1, and
    under μP 1/m for the hidden matrices (``GPT.hidden_matrices``; Yang et al. 2022's Adam
    rule). The optimizer's state holds it, so a resumed run keeps its per-group rates."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, Norm) for p in m.parameters()}
    mult = model.cfg.width_mult
    hidden = {id(p) for p in model.hidden_matrices()} if mult != 1.0 else set()
    decay, decay_hidden, no_decay = [], [], []
    for name, p in model.named_parameters():
        is_embedding = name.startswith(("wte.", "wpe."))
        if id(p) in hidden:
            decay_hidden.append(p)
        elif p.dim() >= 2 and not is_embedding and id(p) not in norm_params:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if decay_hidden:
        groups.insert(
            0, {"params": decay_hidden, "weight_decay": weight_decay, "lr_scale": 1 / mult}
        )
    return groups


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
    """The model, optimizer and data sampler of one run (and of its WSD branches): one
    optimizer step, evaluation, and the checkpoint payload. ``lab.loop`` drives it."""

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
        # the final evaluation: data.eval_tokens in non-overlapping windows where the split
        # has room (never fewer windows than a periodic evaluation)
        n_final = max(n_eval, min(cfg.data.eval_tokens, corpus.val.size - 1) // m.context)
        self.final_val_windows = eval_windows(corpus.val, n_final, m.context)
        bytes_of = getattr(corpus.tokenizer, "token_bytes", None)  # pre-tokenized ids: none
        self.token_bytes = torch.as_tensor(bytes_of()) if bytes_of else None
        self.eval_seconds = 0.0
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        self.flops_per_token = flops_per_token(m)["6N_attn_head"]
        self.peak = peak_flops(device)
        self.state = LoopState()
        self.saved_step: int | None = None  # step of the run folder's checkpoint
        self.data_seconds = 0.0  # time spent drawing batches, this session

    def train_step(self, n_tokens: int, lr: float) -> float:
        """One step on a global batch whose first ``n_tokens`` targets count (the last step
        of a run may be partial). Returns the batch's mean loss over the processes."""
        t = self.cfg.train
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
                    logits.float().view(-1, logits.size(-1)),
                    yb.reshape(-1),
                    ignore_index=-1,
                    reduction="sum",
                )
                # DDP averages gradients over ranks: scale so the result is the global mean
                (loss_sum * (self.dist.world / n_tokens)).backward()
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

    @torch.no_grad()
    def evaluate(self, windows) -> float:
        """Mean loss in nats per token over fixed windows (inputs, targets)."""
        return self.evaluate_stats(windows)["loss"]

    @torch.no_grad()
    def evaluate_stats(self, windows) -> dict:
        """Loss over fixed windows (inputs, targets), with its standard error over the
        windows, and bits per byte (from each target token's UTF-8 bytes) with its
        standard error (of a ratio estimate: Σ nats / Σ bytes, linearised)."""
        started = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        x_all, y_all = windows
        # forward-only: as many windows per call as fill EVAL_TOKENS_PER_CALL tokens (at
        # least a training batch), since small models are bound by per-call overhead
        batch_size = max(self.cfg.train.batch_size, EVAL_TOKENS_PER_CALL // x_all.shape[1])
        nats, nbytes = [], []
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i : i + batch_size].to(self.device)
            y = y_all[i : i + batch_size]
            with self.autocast:
                logits, _ = self.model(x)
            per_token = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)),
                y.to(self.device).reshape(-1),
                reduction="none",
            )
            nats.append(per_token.view(y.shape).sum(1).double().cpu())
            if self.token_bytes is not None:
                nbytes.append(self.token_bytes[y].sum(1).double())
        self.model.train(was_training)
        nats = torch.cat(nats)  # per window
        k, T = nats.numel(), y_all.shape[1]
        stats = {
            "loss": float(nats.sum() / (k * T)),
            "loss_se": float((nats / T).std() / math.sqrt(k)) if k > 1 else float("nan"),
            "tokens": k * T,
            "bpb": None,
            "bpb_se": None,
        }
        if nbytes:
            nbytes = torch.cat(nbytes)
            ratio = nats.sum() / nbytes.sum()  # nats per byte
            spread = ((nats - ratio * nbytes) ** 2).sum() / max(1, k - 1)
            stats["bpb"] = float(ratio / math.log(2))
            se = math.sqrt(float(spread) / k) / float(nbytes.mean()) / math.log(2)
            stats["bpb_se"] = se if k > 1 else float("nan")
        self.eval_seconds += time.perf_counter() - started
        return stats

    @property
    def grad_norm(self) -> float:
        """The global gradient norm of the last step, before clipping (read when logged, so
        the step itself never waits for it)."""
        norm = getattr(self, "_grad_norm", None)
        return float("nan") if norm is None else float(norm)

    def mfu(self, tokens_per_s: float | None) -> float | None:
        """Model FLOPs utilisation at this throughput (CUDA with a known peak only)."""
        if not tokens_per_s or not self.peak:
            return None
        return tokens_per_s * self.flops_per_token / self.peak

    def parts(self, trackers: Trackers, checkpoints: bool = True, branch_points=None) -> list:
        """The loop's parts for this run, in the order they act after a step."""
        t, main = self.cfg.train, self.dist.main
        log_every = t.log_every or max(1, self.total_steps // 50)
        parts = [BranchPoints(branch_points)] if branch_points else []
        parts += [Evaluation(self.eval_every), EarlyStopping(t.early_stop_patience)]
        parts += [Metrics(trackers, log_every, enabled=main), Progress(enabled=main)]
        if checkpoints:
            parts.append(Checkpoints(self.checkpoint_every))
        return parts

    # -- checkpoints and snapshots --------------------------------------------------------
    def payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "rng": capture_rng(self.rng),
            "config_hash": self.key,
            "model_config": to_dict(self.cfg)["model"],
            "tokenizer": self.corpus.tokenizer.to_payload(),
        }

    def save(self) -> None:
        """Checkpoint, unless the weights went non-finite: the last good one stays."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            log.warning("non-finite weights at step %d: checkpoint not written", self.state.step)
            return
        if self.dist.main:
            save_checkpoint(self.out / CHECKPOINT_NAME, self.payload())
        self.saved_step = self.state.step

    def checkpoint_step(self) -> int | None:
        """The step of the checkpoint in the run folder, or None when there is none."""
        return self.saved_step

    def load(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = LoopState(**payload["state"])
        restore_rng(self.rng, payload["rng"])


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


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


def check_vocabulary(cfg: Config, corpus: Corpus) -> Config:
    """The config with ``model.vocab_size`` set from the tokenizer when it is 0. Raises
    ValueError when the corpus's token ids do not fit the model's vocabulary."""
    m, vocab = cfg.model, corpus.tokenizer.vocab_size
    if corpus.max_token_id is not None and m.vocab_size and corpus.max_token_id >= m.vocab_size:
        raise ValueError(
            f"data.path: token ids in {corpus.source} reach {corpus.max_token_id}, beyond "
            f"model.vocab_size={m.vocab_size}"
        )
    if m.vocab_size and m.vocab_size < vocab and corpus.max_token_id is None:
        raise ValueError(
            f"model.vocab_size={m.vocab_size} is smaller than the tokenizer's {vocab}; "
            "set it to 0 to take the tokenizer's"
        )
    return replace(cfg, model=replace(m, vocab_size=m.vocab_size or vocab))


def train(cfg: Config, out_dir: str | Path, tracker_group: str | None = None) -> dict:
    """Train ``cfg`` on exactly ``cfg.data.tokens`` tokens; write and return the record.
    ``tracker_group`` groups the run in experiment trackers (a sweep passes its name).

    Raises ValueError / FileNotFoundError for bad configuration or data (or a resume
    without a checkpoint) before training starts. A NaN or infinite loss ends the run with
    status "diverged"; any other exception is recorded as "failed" and re-raised."""
    validate(cfg)
    key = config_hash(cfg)  # of the config as asked for: the sweep's resume key
    cfg = resolve_budget(cfg)
    out = Path(out_dir)
    device = resolve_device(cfg.train.device)
    resume_from = find_resume_point(out, key, cfg.train.resume)
    kernels.set_backend(
        str(cfg.train.backend), **{k: str(v) for k, v in cfg.train.backend_ops.items()}
    )
    corpus = cached_corpus(cfg.data, cfg.model.context)
    cfg = check_vocabulary(cfg, corpus)
    cfg, lr_law = resolve_lr_law(cfg)
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
    if lr_law is not None:
        record["lr_law"] = lr_law
    trackers = make_trackers(cfg.train.loggers if dist.main else [], out / METRICS_NAME)
    try:
        trainer = Trainer(cfg, corpus, device, out, dist, key)
        if resume_from is not None:
            trainer.load(resume_from)
            trainer.saved_step = trainer.state.step
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
        trackers.start(_run_info(cfg, out, record, tracker_group))
        branches = _plan_branches(trainer, cfg) if cfg.data.branches else {}
        points = {
            b["start"]: (lambda b=b: b.update(snapshot=_snapshot(trainer)))
            for b in branches.values()
        }
        lr_fn = functools.partial(lr_at, total_steps=trainer.total_steps, cfg=cfg.optim)
        parts = trainer.parts(trackers, branch_points=points)
        result = Loop(trainer, cfg.data.tokens, lr_fn, parts).run()
        if result["status"] == "ok" and branches:
            result["branches"] = [
                _run_branch(trainer, cfg, record, d, b) for d, b in sorted(branches.items())
            ]
    except Exception as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", finished_at=_now())
        if dist.main:
            try:
                write_json_atomic(out / RECORD_NAME, record)
            except OSError as write_error:  # a full disk: the original error is the news
                log.error("could not record the failure in %s: %s", out, write_error)
        trackers.finish(record)
        raise
    finally:
        distributed.teardown(dist)
    record.update(result, finished_at=_now())
    if dist.main:
        write_json_atomic(out / RECORD_NAME, record)
    trackers.finish(record)
    return record


def _run_info(cfg: Config, out: Path, record: dict, group: str | None) -> RunInfo:
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


def _start_record(cfg: Config, key: str, out: Path, corpus: Corpus, device) -> dict:
    counts = param_counts(cfg.model)
    record = {
        "run_id": f"{out.name}-{key}",
        "status": "running",
        "config": to_dict(cfg),
        "config_hash": key,
        **{N_CONVENTIONS[c]: counts[c] for c in N_CONVENTIONS},
        N_EMBEDDING_KEY: counts["embedding"],
        "tokens": cfg.data.tokens,
        "budget": cfg.data.budget,
        "corpus": corpus.summary(),
        "unique_tokens": int(corpus.train.size),
        "epochs": cfg.data.tokens / corpus.train.size,
        "device": str(device),
        "backends": {op: kernels.backend_for(op, device) for op in kernels.OPS},
        "versions": versions(),
        "git_commit": git_commit(),
        "metrics_path": METRICS_NAME,
        "checkpoint_path": CHECKPOINT_NAME,
        "started_at": _now(),
    }
    record.update(_flops(cfg, cfg.data.tokens))
    if record["epochs"] > 1:
        log.warning(
            "data.tokens=%d exceeds the %d unique training tokens: %.2f epochs (repeated data)",
            cfg.data.tokens,
            corpus.train.size,
            record["epochs"],
        )
    return record


def _flops(cfg: Config, tokens: int) -> dict:
    """The record's compute columns, one per convention (lab.schema.C_CONVENTIONS)."""
    return {C_CONVENTIONS[c]: v for c, v in training_flops(cfg.model, tokens).items()}


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
    return copy.deepcopy(trainer.payload())


def _run_branch(trainer: Trainer, cfg: Config, parent: dict, d: int, branch: dict) -> dict:
    """Restore the stable-phase snapshot taken at the branch's cooldown start, cool down to
    D tokens, and record it as a run in ``branch_D=<D>/``."""
    out = trainer.out / f"branch_D={d}"
    out.mkdir(exist_ok=True)
    main_state = copy.deepcopy(trainer.payload())
    trainer.load(branch["snapshot"])
    if trainer.dist.main:
        (out / METRICS_NAME).write_text("")
    lr_fn = functools.partial(
        lr_at,
        total_steps=trainer.total_steps,
        cfg=cfg.optim,
        warmup=trainer.warmup,
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
        "finished_at": _now(),
        **result,
        **_flops(cfg, d),
    }
    if trainer.dist.main:
        write_json_atomic(out / RECORD_NAME, record)
    trainer.load(main_state)
    return {
        "tokens": d,
        "status": result["status"],
        "val_loss": result["val_loss"],
        "path": str(out),
    }

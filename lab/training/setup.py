"""Everything a run checks and resolves before it builds a model: the config's rules, its
hash (the sweep's resume key), D from a compute budget, the device, the checkpoint to
continue from, the kernel backend, the corpus and its vocabulary, a fitted lr law, and the
processes. Bad input fails here, in a second, not after training."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import kernels
from lab.config.counting import budget_tokens, param_counts
from lab.config.lr_law import load_lr_law, rate
from lab.config.rules import validate
from lab.config.schema import Config, DataConfig, config_hash
from lab.data.corpus import Corpus, load_corpus, require_context
from lab.runs.files import refuse_links
from lab.training import distributed
from lab.training.device import ABSURD_SECONDS, fastest_seconds, resolve_device
from lab.training.resume import find_resume_point, refuse_another_finished_run


@dataclass
class RunSetup:
    """A run ready to build: the resolved config and what it trains on."""

    cfg: Config  # D resolved, the vocabulary and the lr law's rate filled in
    key: str  # config_hash of the config as asked for
    out: Path
    device: torch.device
    corpus: Corpus
    dist: distributed.Dist
    resume_from: dict | None  # the checkpoint payload to continue from
    lr_law: dict | None  # what the record keeps of a fitted lr law


def prepare(cfg: Config, out: Path) -> RunSetup:
    """Check and resolve ``cfg`` for a run in ``out`` (ValueError / FileNotFoundError on
    bad input, before anything is built or written but the run folder)."""
    validate(cfg)
    refuse_links(out)
    key = config_hash(cfg)  # of the config as asked for: the sweep's resume key
    refuse_another_finished_run(out, key, cfg.train.overwrite)
    cfg = resolve_budget(cfg)
    device = resolve_device(cfg.train.device)
    warn_if_absurd(cfg, device)
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
    return RunSetup(cfg, key, out, device, corpus, dist, resume_from, lr_law)


log = logging.getLogger("lab")


def warn_if_absurd(cfg: Config, device) -> float:
    """Warn, before anything is built, when even an optimistic estimate of the run's time on
    ``device`` (``lab.training.device.fastest_seconds``) is past ``ABSURD_SECONDS``: a
    ``data.tokens`` or model size off by orders of magnitude. Returns the estimate."""
    threads = cfg.train.threads or torch.get_num_threads()
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    seconds, rate = fastest_seconds(cfg.model, cfg.data.tokens, device, threads)
    seconds /= world
    if seconds > ABSURD_SECONDS:
        days = seconds / 86400
        span = f"{days / 365:.3g} years" if days > 365 else f"{days:.3g} days"
        log.warning(
            "this run would take at least %s on %s (%.3g FLOPs at an optimistic %.3g FLOP/s "
            "on %d process(es)): check data.tokens=%d and model=%s",
            span,
            device,
            seconds * rate * world,
            rate,
            world,
            cfg.data.tokens,
            cfg.model.name,
        )
    return seconds


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

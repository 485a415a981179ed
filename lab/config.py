"""The lab's configuration: dataclasses that are both the Hydra schema and what
``lab.train.train`` takes.

Hydra composes ``conf/config.yaml`` onto these structured configs (registered in the
ConfigStore by ``register_configs``), so an unknown key or a wrong type in a YAML file or
an override fails at composition, before anything runs. ``validate`` adds the checks
between fields. Nothing under ``lab/`` besides ``lab.cli`` sees a DictConfig.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SWEEPS_DIR = ROOT / "sweeps"

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
BACKEND_CHOICES = ("auto", "torch", "triton")
SCHEDULES = ("cosine", "wsd", "constant")
COOLDOWN_SHAPES = ("linear", "cosine", "sqrt")


@dataclass
class ModelConfig:
    """A GPT-style decoder: pre-norm blocks of attention and MLP."""

    name: str = "custom"
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_ff: int = 0  # 0: 4·d_model (swiglu: 8/3·d_model, rounded up to a multiple of 8)
    context: int = 128  # the training window length
    max_positions: int = 0  # rows of the learned position table; 0: = context
    vocab_size: int = 0  # 0 means the tokenizer's vocabulary size
    dropout: float = 0.0  # on the residual branches
    embd_dropout: float = 0.0  # on the embeddings
    attn_dropout: float = 0.0  # on the attention probabilities
    activation: str = "gelu"  # relu | gelu | gelu_tanh | swiglu
    norm: str = "layernorm"  # layernorm | rmsnorm
    positions: str = "learned"  # learned | rope
    rope_theta: float = 10000.0
    bias: bool = True
    tie_embeddings: bool = True

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.activation == "swiglu":  # same parameters as a 4·d MLP with two matrices
            return -(-8 * self.d_model // 3 // 8) * 8
        return 4 * self.d_model

    @property
    def n_positions(self) -> int:
        return self.max_positions or self.context


@dataclass
class DataConfig:
    """What the model reads and how much of it (the token budget D)."""

    path: str | None = None  # file, folder, glob, .jsonl/.parquet, .bin; None: the stdlib corpus
    max_bytes: int = 4_000_000  # cap on the text read (bytes); 0: no cap
    val_fraction: float = 0.1  # share of documents held out for validation
    tokens: int = 1_000_000  # D: training tokens the run consumes, exactly
    budget: float | None = None  # compute C (FLOPs, C = 6·N·D); when set, D = C / (6·N)
    branches: list[int] = field(default_factory=list)  # WSD: also cool down at these D < tokens
    tokenizer: str = "bytes"  # bytes | bpe | path to a tokenizer.json
    bpe_vocab_size: int = 4096  # tokenizer=bpe: vocabulary size to train
    bpe_train_bytes: int = 50_000_000  # tokenizer=bpe: train on at most this much text
    text_field: str = "text"  # JSONL / Parquet: the field holding the text
    bin_dtype: str = "uint16"  # pre-tokenized .bin files: uint16 | uint32
    cache_dir: str | None = (
        None  # tokenized corpora and BPE tokenizers; None: $LAB_CACHE_DIR or ~/.cache
    )


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (see lab/schedule.py)."""

    lr: float = 3e-3
    schedule: str = "cosine"  # cosine | wsd | constant
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    warmup_fraction: float = 0.05  # share of the steps spent warming up
    cooldown_fraction: float = 0.2  # wsd: share of the steps spent cooling down
    cooldown_shape: str = "sqrt"  # wsd: linear | cosine | sqrt
    weight_decay: float = 0.1  # on matrices only; not on norms, biases, embeddings
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off


@dataclass
class TrainConfig:
    batch_size: int = 32  # sequences per optimizer step, over all processes
    grad_accum: int = 1  # micro-batches per step (per process)
    eval_every: int = 0  # steps between evaluations; 0: about 4 per run
    eval_batches: int = 8  # batches of held-out windows per evaluation
    early_stop_patience: int = 0  # stop after this many evaluations without a better val loss
    checkpoint_every: int = 0  # steps between checkpoints; 0: at every evaluation
    resume: bool = False  # continue from the run folder's checkpoint
    compile: bool = False  # torch.compile the model
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    backend: str = "auto"  # kernel backend for every op: auto | torch | triton
    backend_ops: dict[str, str] = field(default_factory=dict)  # per op, e.g. {linear: triton}
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    skip_done: bool = True  # in a sweep, keep a finished run whose config is unchanged


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def register_configs(sweeps_dir: Path | None = None) -> None:
    """Register with Hydra's ConfigStore the schema (``conf/config.yaml`` builds on it) and,
    as the group ``sweeps``, every ``sweeps/NAME.yaml`` (so ``+sweeps=NAME`` finds it from
    any working directory, with no search-path setting)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="lab_schema", node=Config)
    cs.store(group="model", name="schema", node=ModelConfig)
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="optim", name="schema", node=OptimConfig)
    cs.store(group="train", name="schema", node=TrainConfig)
    for path in sorted((sweeps_dir or SWEEPS_DIR).glob("*.yaml")):
        cs.store(group="sweeps", name=path.stem, node=OmegaConf.load(path), package="_global_")


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from nested plain dicts (a resolved Hydra config or a record)."""
    return Config(
        model=ModelConfig(**d.get("model", {})),
        data=DataConfig(**d.get("data", {})),
        optim=OptimConfig(**d.get("optim", {})),
        train=TrainConfig(**d.get("train", {})),
    )


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# Fields that do not change what a run computes; left out of the config hash.
_HASH_EXCLUDED = {
    ("train", "skip_done"),
    ("train", "threads"),
    ("train", "resume"),
    ("train", "checkpoint_every"),
}


def config_hash(cfg: Config) -> str:
    """A short hash of everything that decides a run's result (the sweep's resume key)."""
    d = to_dict(cfg)
    for section, key in _HASH_EXCLUDED:
        d[section].pop(key, None)
    blob = json.dumps(d, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def validate(cfg: Config) -> None:
    """Checks between fields that the schema's types cannot express.

    Raises ValueError naming the offending key and its allowed values."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    for key, value in (
        ("model.n_layer", m.n_layer),
        ("model.n_head", m.n_head),
        ("model.d_model", m.d_model),
        ("model.context", m.context),
        ("data.tokens", d.tokens),
        ("train.batch_size", t.batch_size),
        ("train.eval_batches", t.eval_batches),
    ):
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    if m.d_model % m.n_head != 0:
        raise ValueError(f"model.d_model={m.d_model} is not divisible by model.n_head={m.n_head}")
    if m.d_ff < 0:
        raise ValueError(f"model.d_ff must be >= 0 (0 means 4*d_model), got {m.d_ff}")
    if m.vocab_size < 0:
        raise ValueError(f"model.vocab_size must be >= 0 (0: the tokenizer's), got {m.vocab_size}")
    if m.activation not in ACTIVATIONS:
        raise ValueError(f"model.activation must be one of {ACTIVATIONS}, got {m.activation!r}")
    if m.norm not in NORMS:
        raise ValueError(f"model.norm must be one of {NORMS}, got {m.norm!r}")
    if m.positions not in POSITIONS:
        raise ValueError(f"model.positions must be one of {POSITIONS}, got {m.positions!r}")
    if m.positions == "rope" and (m.d_model // m.n_head) % 2:
        raise ValueError(
            f"model.positions=rope needs an even head dim, got {m.d_model // m.n_head}"
        )
    for key in ("dropout", "embd_dropout", "attn_dropout"):
        if not 0.0 <= getattr(m, key) < 1.0:
            raise ValueError(f"model.{key} must be in [0, 1), got {getattr(m, key)}")
    if m.max_positions and m.context > m.max_positions:
        raise ValueError(
            f"model.context={m.context} is larger than the positional table "
            f"(model.max_positions={m.max_positions})"
        )
    if d.budget is not None and not d.budget > 0:
        raise ValueError(f"data.budget must be > 0 FLOPs (or null), got {d.budget}")
    if not 0.0 < d.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if d.tokenizer not in ("bytes", "bpe") and not d.tokenizer.endswith(".json"):
        raise ValueError(
            f"data.tokenizer must be 'bytes', 'bpe' or the path of a tokenizer.json, got {d.tokenizer!r}"
        )
    if d.max_bytes < 0:
        raise ValueError(f"data.max_bytes must be >= 0 (0: no cap), got {d.max_bytes}")
    if d.bpe_vocab_size < 257:
        raise ValueError(
            f"data.bpe_vocab_size must be >= 257 (bytes + end of document), got {d.bpe_vocab_size}"
        )
    if d.bin_dtype not in ("uint16", "uint32"):
        raise ValueError(f"data.bin_dtype must be 'uint16' or 'uint32', got {d.bin_dtype!r}")
    if o.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {o.schedule!r}")
    if o.cooldown_shape not in COOLDOWN_SHAPES:
        raise ValueError(
            f"optim.cooldown_shape must be one of {COOLDOWN_SHAPES}, got {o.cooldown_shape!r}"
        )
    if not 0.0 < o.cooldown_fraction <= 1.0:
        raise ValueError(f"optim.cooldown_fraction must be in (0, 1], got {o.cooldown_fraction}")
    if d.branches:
        if o.schedule != "wsd":
            raise ValueError("data.branches (cooldown branches) need optim.schedule=wsd")
        bad = [b for b in d.branches if not 0 < b < d.tokens]
        if bad:
            raise ValueError(
                f"data.branches must lie between 0 and data.tokens={d.tokens}, got {bad}"
            )
    if t.grad_accum < 1 or t.batch_size % t.grad_accum:
        raise ValueError(
            f"train.grad_accum={t.grad_accum} must be >= 1 and divide train.batch_size={t.batch_size}"
        )
    if t.early_stop_patience < 0 or t.checkpoint_every < 0:
        raise ValueError("train.early_stop_patience and train.checkpoint_every must be >= 0")
    if not o.lr > 0:
        raise ValueError(f"optim.lr must be > 0, got {o.lr}")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    if not 0.0 <= o.warmup_fraction < 1.0:
        raise ValueError(f"optim.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
    if o.weight_decay < 0 or o.grad_clip < 0:
        raise ValueError("optim.weight_decay and optim.grad_clip must be >= 0")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be one of ('auto', 'cpu', 'cuda'), got {t.device!r}")
    if t.backend not in BACKEND_CHOICES:
        raise ValueError(f"train.backend must be one of {BACKEND_CHOICES}, got {t.backend!r}")
    for op, b in t.backend_ops.items():
        if b not in BACKEND_CHOICES:
            raise ValueError(f"train.backend_ops.{op} must be one of {BACKEND_CHOICES}, got {b!r}")
    if t.eval_every < 0 or t.threads < 0:
        raise ValueError("train.eval_every and train.threads must be >= 0")

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
from typing import Any  # noqa: UP035 - OmegaConf reads typing.Dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SWEEPS_DIR = ROOT / "sweeps"

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
BACKEND_CHOICES = ("auto", "torch", "triton")


@dataclass
class ModelConfig:
    """A GPT-style decoder: pre-norm blocks of attention and MLP, learned positions."""

    name: str = "custom"
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_ff: int = 0  # 0 means 4 * d_model
    context: int = 128  # positions in the table, and the training window length
    vocab_size: int = 0  # 0 means the tokenizer's vocabulary size
    dropout: float = 0.0
    activation: str = "gelu"
    bias: bool = True
    tie_embeddings: bool = True

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model


@dataclass
class DataConfig:
    """What the model reads and how much of it (the token budget D)."""

    path: str | None = None  # a text file or folder; None: the embedded stdlib corpus
    max_bytes: int = 4_000_000  # cap on the corpus read (bytes of text)
    val_fraction: float = 0.1  # share of documents held out for validation
    tokens: int = 1_000_000  # D: training tokens the run consumes, exactly
    budget: float | None = None  # compute C (FLOPs, C = 6·N·D); when set, D = C / (6·N)
    tokenizer: str = "bytes"


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay."""

    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    warmup_fraction: float = 0.05  # share of the steps spent warming up
    weight_decay: float = 0.1  # on matrices only; not on norms, biases, embeddings
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off


@dataclass
class TrainConfig:
    batch_size: int = 32  # sequences per step
    eval_every: int = 0  # steps between evaluations; 0: about 5 per run
    eval_batches: int = 8  # batches of held-out windows per evaluation
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
_HASH_EXCLUDED = {("train", "skip_done"), ("train", "threads")}


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
        ("data.max_bytes", d.max_bytes),
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
    if not 0.0 <= m.dropout < 1.0:
        raise ValueError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if d.budget is not None and not d.budget > 0:
        raise ValueError(f"data.budget must be > 0 FLOPs (or null), got {d.budget}")
    if not 0.0 < d.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if d.tokenizer != "bytes":
        raise ValueError(f"data.tokenizer must be one of ('bytes',), got {d.tokenizer!r}")
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

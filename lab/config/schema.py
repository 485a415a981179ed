"""The lab's configuration: dataclasses that are both the Hydra schema and what
``lab.training.run.train`` takes.

Defaults live here and only here: the YAML files under ``conf/`` and ``sweeps/`` set what
differs (the model ladder, a sweep's grid). Hydra composes ``conf/config.yaml`` onto these
structured configs (registered in the ConfigStore by ``register_configs``), so an unknown
key, a wrong type or a value outside a choice's Enum fails at composition, with the allowed
values in the message. ``validate`` holds the rules between fields. Nothing under ``lab/``
besides ``lab.cli.commands`` sees a DictConfig.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernels import activations
from kernels.registry import BACKENDS
from lab.config.record import HASH_EXCLUDED, canonical_config

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
SWEEPS_DIR = ROOT / "sweeps"


RESUME_MODES = ("auto", "true", "false")
# the metrics sinks of train.loggers (lab.runs.trackers has one for each)
LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")


class Choice(str, enum.Enum):
    """A config choice: an Enum whose members are their own string values, so records,
    hashes and comparisons (``cfg.model.norm == "rmsnorm"``) see plain strings."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def _choice(name: str, values) -> type[Choice]:
    return Choice(name, {v: v for v in values})


# Activations come from the kernels' registry: a new activation is a new choice here.
ActivationName = _choice("ActivationName", activations.names())
Mlp = _choice("Mlp", ("plain", "gated"))  # gated: act(x W_gate) ⊙ (x W_value) (GLU variants)
NormKind = _choice("NormKind", ("layernorm", "rmsnorm"))
Positions = _choice("Positions", ("learned", "rope"))
# the token mixer of each block: attention (a transformer), a gated causal convolution
# (Dauphin et al. 2017; the short convolutions of H3 and Hyena) or an LSTM (Kaplan et al.
# 2020, section 3.2, compare transformers with LSTMs)
Mixer = _choice("Mixer", ("attention", "conv", "lstm"))
# sp: standard parametrization; mup: maximal update parametrization (Yang et al. 2022,
# "Tensor Programs V"), relative to a base width model.base_d_model
Parametrization = _choice("Parametrization", ("sp", "mup"))
Schedule = _choice("Schedule", ("cosine", "wsd", "constant"))
CooldownShape = _choice("CooldownShape", ("linear", "cosine", "sqrt"))
BinDtype = _choice("BinDtype", ("uint16", "uint32"))
Device = _choice("Device", ("auto", "cpu", "cuda"))
Backend = _choice("Backend", BACKENDS)
# how several processes share the work: ddp (a full model on each, gradients all-reduced) or
# fsdp (FSDP2's fully_shard per block and on the root: parameters, gradients and optimizer
# state sharded over the processes, Zhao et al. 2023; torchtitan's layout)
Parallel = _choice("Parallel", ("ddp", "fsdp"))
# block: recompute each block's activations in the backward pass instead of keeping them
# (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost")
ActivationCheckpointing = _choice("ActivationCheckpointing", ("none", "block"))


@functools.cache
def _choice_fields(cls) -> dict[str, type[Choice]]:
    hints = typing.get_type_hints(cls)
    return {name: t for name, t in hints.items() if isinstance(t, type) and issubclass(t, Choice)}


def _coerce_choices(obj, section: str) -> None:
    """Turn plain strings (from a record or a test) into the fields' Enums; an unknown
    value is a ValueError naming the key and the allowed values."""
    for name, kind in _choice_fields(type(obj)).items():
        value = getattr(obj, name)
        if isinstance(value, kind):
            continue
        try:
            setattr(obj, name, kind(value))
        except ValueError:
            raise ValueError(
                f"{section}.{name} must be one of {kind.values()}, got {value!r}"
            ) from None


@dataclass
class ModelConfig:
    """A GPT-style decoder: pre-norm blocks of attention and MLP."""

    name: str = "custom"
    """the size's name in conf/model (runs tables and folders show it)"""
    n_layer: int = 2
    """transformer blocks"""
    n_head: int = 2
    """attention heads per block (d_model / n_head is the head dim)"""
    d_model: int = 64
    """the residual stream's width"""
    d_ff: int = 0
    """the MLP's hidden width; 0: 4·d_model (mlp=gated: 8/3·d_model, rounded up to a multiple
    of 8)"""
    context: int = 128
    """the training window length"""
    max_positions: int = 0
    """rows of the learned position table; 0: = context"""
    vocab_size: int = 0
    """rows of the embedding and the output layer; 0: the tokenizer's vocabulary size"""
    dropout: float = 0.0
    """on the residual branches"""
    embd_dropout: float = 0.0
    """on the embeddings"""
    attn_dropout: float = 0.0
    """on the attention probabilities"""
    activation: ActivationName = ActivationName("gelu")
    """any name in kernels.activations"""
    mlp: Mlp = Mlp.plain
    """plain: act(x W1) W2; gated: (act(x W_g) ⊙ x W_v) W2 (SwiGLU: silu)"""
    norm: NormKind = NormKind.layernorm
    """the norm before each block's branches and before the output layer"""
    mixer: Mixer = Mixer.attention
    """what mixes tokens in each block (then the MLP)"""
    conv_kernel: int = 4
    """mixer=conv: taps of the causal convolution (positions seen)"""
    parametrization: Parametrization = Parametrization.sp
    """mup: hidden init std / sqrt(m), attention logits · sqrt(base head dim) / head dim (1/d_head
    scaling, equal to SP's at the base width), output logits / m, Adam lr / m on hidden
    matrices, for the width multiplier m = d_model / base_d_model (lab/model/gpt.py)
    """
    base_d_model: int = 0
    """mup: the base width (m = 1 there); required with mup"""
    readout_zero_init: bool = False
    """an untied output layer starts at zero (μP's recommended readout init, Yang et al. 2022; its
    logits then start at 0 at every width), under either parametrization
    """
    positions: Positions = Positions.learned
    """a learned position table, or rotary embeddings on queries and keys"""
    rope_theta: float = 10000.0
    """positions=rope: the rotation base"""
    bias: bool = True
    """biases in the linear layers and layer norms"""
    tie_embeddings: bool = True
    """the output layer shares the token embedding's weights"""

    def __post_init__(self) -> None:
        if self.activation == "swiglu":  # configs and checkpoints written before `mlp`
            self.activation, self.mlp = "silu", "gated"
        _coerce_choices(self, "model")

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.mlp == Mlp.gated:  # same parameters as a 4·d MLP with two matrices
            return -(-8 * self.d_model // 3 // 8) * 8
        return 4 * self.d_model

    @property
    def width_mult(self) -> float:
        """m = d_model / base_d_model under mup; 1 under sp."""
        if self.parametrization == Parametrization.mup and self.base_d_model:
            return self.d_model / self.base_d_model
        return 1.0

    @property
    def n_positions(self) -> int:
        return self.max_positions or self.context


@dataclass
class DataConfig:
    """What the model reads and how much of it (the token budget D)."""

    path: str | None = None
    """a text file, folder or glob; .jsonl/.parquet/.arrow records; a Hugging Face dataset's
    save_to_disk folder; .bin token ids; None: the Python standard library (lab/data/sources.py)"""
    max_bytes: int = 4_000_000
    """cap on the text read (bytes); 0: no cap"""
    val_fraction: float = 0.1
    """share of documents held out for validation"""
    eval_tokens: int = 327_680
    """at most this many held-out tokens in a run's final evaluation (its record's val_loss, with a
    standard error over windows), which stops earlier at train.final_eval_se or
    train.final_eval_share; capped by the validation split. Periodic evaluations read up to
    train.eval_batches batches
    """
    tokens: int = 1_000_000
    """D: training tokens the run consumes, exactly"""
    budget: float | None = None
    """compute C (FLOPs, C = 6·N·D); when set, D = C / (6·N)"""
    branches: list[int] = field(default_factory=list)
    """WSD: also cool down at these D < tokens"""
    tokenizer: str = "bytes"
    """bytes | bpe (trained on the corpus) | gpt2 (GPT-2's 50,257 tokens, offline: the gpt2
    extra) | a path to a tokenizer.json"""
    bpe_vocab_size: int = 4096
    """tokenizer=bpe: vocabulary size to train"""
    bpe_train_bytes: int = 50_000_000
    """tokenizer=bpe: train on at most this much text"""
    text_field: str = "text"
    """JSONL, Parquet, Arrow and Hugging Face datasets: the field holding the text"""
    bin_dtype: BinDtype = BinDtype.uint16
    """pre-tokenized .bin files: the width of their ids"""
    vocab_size: int = 0
    """pre-tokenized .bin files: their vocabulary size (GPT-2's: 50257); 0: a tokenizer.json beside
    them (or data.tokenizer=PATH), else the largest id + 1
    """
    cache_dir: str | None = None
    """tokenized corpora and BPE tokenizers; None: $LAB_CACHE_DIR or ~/.cache/scaling-lab"""

    def __post_init__(self) -> None:
        _coerce_choices(self, "data")


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (see lab/training/schedule.py)."""

    lr: float = 3e-3
    """the peak learning rate (AdamW)"""
    lr_law: str | None = None
    """a fitted lr*(N) (`lab-analyze lr` writes PATH/lr.json): the run's lr comes from it and its N
    instead of optim.lr (its record holds the law's path and the rate it gave)
    """
    schedule: Schedule = Schedule.cosine
    """after the warmup: cosine to min_lr_ratio, constant, or wsd (warmup-stable-decay, cooled
    down over cooldown_fraction of the steps)"""
    min_lr_ratio: float = 0.1
    """final lr = lr * min_lr_ratio"""
    warmup_fraction: float = 0.05
    """share of the steps spent warming up"""
    cooldown_fraction: float = 0.2
    """wsd: share of the steps spent cooling down"""
    cooldown_shape: CooldownShape = CooldownShape.sqrt
    """wsd: the learning rate's shape over the cooldown"""
    weight_decay: float = 0.1
    """on matrices only; not on norms, biases, embeddings"""
    beta1: float = 0.9
    """AdamW's first-moment decay"""
    beta2: float = 0.95
    """AdamW's second-moment decay"""
    eps: float = 1e-8
    """AdamW's epsilon"""
    grad_clip: float = 1.0
    """max global grad norm; 0 turns clipping off"""

    def __post_init__(self) -> None:
        _coerce_choices(self, "optim")


@dataclass
class TrainConfig:
    batch_size: int = 32
    """sequences per optimizer step, over all processes"""
    grad_accum: int = 1
    """micro-batches per step (per process)"""
    eval_every: int = 0
    """steps between evaluations; 0: about 4 per run"""
    eval_batches: int = 8
    """batches of held-out windows per evaluation"""
    final_eval_se: float = 0.005
    """the final evaluation (the record's val_loss) reads held-out windows until the standard error
    of the loss is at most this share of it (0: no such stop) ..."""
    final_eval_share: float = 0.15
    """... or until its forward passes cost this share of the run's compute (0: no limit), the
    periodic evaluations half of it; at least 32 windows and at most data.eval_tokens tokens"""
    early_stop_patience: int = 0
    """stop after this many evaluations without a better val loss"""
    checkpoint_every: int = 0
    """steps between checkpoints; 0: at every evaluation. On a preemptible cluster a SIGTERM or
    SIGUSR2 checkpoints at the next step anyway; this bounds what a SIGKILL (a node lost,
    KillWait passed) costs
    """
    resume: str = "auto"
    """continue from the run folder's checkpoint: auto (when it is there and of this config, so a
    rerun sweep or a requeued job picks up where it stopped) | true (it must be) | false
    """
    compile: bool = False
    """torch.compile the model"""
    seed: int = 0
    """seeds the weights, the data order and dropout"""
    device: Device = Device.auto
    """where to train (auto: cuda when there is one)"""
    backend: Backend = Backend.auto
    """kernel backend for every op (auto: Triton on a GPU, PyTorch elsewhere)"""
    backend_ops: dict[str, Backend] = field(default_factory=dict)
    """a backend per op, over train.backend: {linear: triton}"""
    threads: int = 0
    """torch CPU threads; 0 leaves torch's default"""
    parallel: Parallel = Parallel.ddp
    """with several processes (torchrun): ddp | fsdp (sharded; on CUDA its parameters are gathered
    in bf16 and gradients reduced in fp32); fsdp checkpoints are sharded
    (torch.distributed.checkpoint) and load at any number of processes
    """
    activation_checkpointing: ActivationCheckpointing = ActivationCheckpointing.none
    """block: recompute each block's activations in the backward pass (less memory, about a
    third more compute)"""
    skip_done: bool = True
    """in a sweep, keep a finished run whose config is unchanged"""
    overwrite: bool = False
    """train in a folder that holds a finished run of another config, replacing it (else that is an
    error naming both configs' hashes)
    """
    log_every: int = 0
    """steps between metrics rows; 0: about 50 rows per run"""
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])
    """where metrics go (lab/runs/trackers.py): jsonl | tensorboard | wandb | mlflow, each tracker
    an optional extra (pip install -e '.[wandb]')
    """
    tracker_project: str = "scaling-lab"
    """the project (W&B) or experiment (MLflow) name"""

    def __post_init__(self) -> None:
        _coerce_choices(self, "train")
        unknown = [str(n) for n in self.loggers if str(n) not in LOGGERS]
        if unknown:
            raise ValueError(f"train.loggers: unknown {unknown}; choose from {LOGGERS}")
        self.loggers = [str(n) for n in self.loggers]
        resume = str(self.resume).lower()  # Hydra reads `train.resume=true` as a bool
        if resume not in RESUME_MODES:
            raise ValueError(f"train.resume must be one of {RESUME_MODES}, got {self.resume!r}")
        self.resume = resume
        for op, b in self.backend_ops.items():
            if b not in Backend.values():
                raise ValueError(
                    f"train.backend_ops.{op} must be one of {Backend.values()}, got {b!r}"
                )
            self.backend_ops[op] = Backend(b)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Fields that do not change what a run computes: left out of the config hash (the sweep's
# resume key) and out of a sweep's run folder names (conf/config.yaml reads this list
# through the ``lab_dirname_excluded`` resolver).


def safe_dirname(name: str) -> str:
    """A run folder name from Hydra's override string, with path separators escaped as in
    URLs ("/" → "%2F", and "%" → "%25" first, so the escaping is reversible)."""
    name = str(name).replace("%", "%25").replace("/", "%2F")
    return name.replace("\\", "%5C")


def register_configs(sweeps_dir: Path | None = None) -> None:
    """Register with Hydra's ConfigStore the schema (``conf/config.yaml`` builds on it),
    as the group ``sweeps`` every ``sweeps/NAME.yaml`` (so ``+sweeps=NAME`` finds it from
    any working directory, with no search-path setting), and as the group GROUP every
    ``sweeps/GROUP/NAME.yaml`` (a sweep file's bundles)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lab_dirname_excluded"):
        OmegaConf.register_new_resolver("lab_dirname_excluded", lambda: ["sweeps", *HASH_EXCLUDED])
    if not OmegaConf.has_resolver("lab_safe_dirname"):
        OmegaConf.register_new_resolver("lab_safe_dirname", safe_dirname)
    cs = ConfigStore.instance()
    cs.store(name="lab_schema", node=Config)
    root = sweeps_dir or SWEEPS_DIR
    for path in sorted(root.glob("*.yaml")):
        cs.store(group="sweeps", name=path.stem, node=OmegaConf.load(path), package="_global_")
    # sweeps/GROUP/NAME.yaml: bundles of settings that change together (a model size with
    # its own token budget, say), swept as `+GROUP: a,b,c` where a plain grid would take
    # every combination; each may override a group default (`defaults: [override /model: x]`)
    for path in sorted(root.glob("*/*.yaml")):
        node = OmegaConf.load(path)
        cs.store(group=path.parent.name, name=path.stem, node=node, package="_global_")


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from nested plain dicts (a resolved Hydra config or a record).

    Raises ValueError for an unknown key or a value outside a choice."""
    sections = {
        "model": ModelConfig,
        "data": DataConfig,
        "optim": OptimConfig,
        "train": TrainConfig,
    }
    built = {}
    for name, cls in sections.items():
        values = dict(d.get(name) or {})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown key(s) in {name}: {', '.join(unknown)}")
        built[name] = cls(**values)
    return Config(**built)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as nested plain dicts (choices as their strings): what records hold."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Config) -> str:
    """A short hash of everything that decides a run's result (the sweep's resume key)."""
    d = canonical_config(to_dict(cfg))  # added fields at their old behaviour: the old hash
    law = d["optim"].get("lr_law")
    if law:  # the rate comes from the file: a refitted law is another config
        try:
            d["optim"]["lr_law"] = [
                law,
                hashlib.sha256(Path(law).expanduser().read_bytes()).hexdigest(),
            ]
        except OSError:
            pass  # validate reports a missing file
    blob = json.dumps(d, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

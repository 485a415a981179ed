"""The run record's schema, in one torch-free place both ``lab`` (which writes records)
and ``analysis`` (which reads them) import: file names, statuses, the N and C conventions
and the record keys that hold them, the flat table's columns, and how numbers print.

A record (``result.json``) is one JSON object per run; ``lab.training`` writes it, atomically,
when the run starts (status "running") and when it ends.
"""

from __future__ import annotations

import json
import math

RECORD_NAME = "result.json"  # a run's record
METRICS_NAME = "metrics.jsonl"  # a run's loss curve, one JSON object per line
CHECKPOINT_NAME = "checkpoint.pt"  # a run's checkpoint (torch.save, weights_only loads)
SHARDED_NAME = "checkpoint.dcp"  # train.parallel=fsdp: its tensors, one folder per step
SWEEP_TABLE = "runs.csv"  # a sweep's flat table of its runs

STATUS_RUNNING, STATUS_OK, STATUS_FAILED, STATUS_DIVERGED, STATUS_SKIPPED = (
    "running",
    "ok",
    "failed",
    "diverged",
    "skipped",
)

# Parameter counts (lab.config.counting.param_counts): convention → record key.
N_CONVENTIONS = {"non_embedding": "n_params_non_embedding", "total": "n_params_total"}
N_EMBEDDING_KEY = "n_params_embedding"
# Training FLOPs (lab.config.counting.flops_per_token × D): convention → record key.
C_CONVENTIONS = {f: f"flops_{f}" for f in ("6N", "6N_attn", "6N_attn_head")}
FLOP_CONVENTIONS = tuple(C_CONVENTIONS)
# What a fit can take as "the loss": nats per token of the run's tokenizer, or bits per UTF-8
# byte of text (comparable across tokenizers).
LOSSES = ("val_loss", "train_loss", "val_bpb", "train_bpb")
LOSS_UNITS = {
    "val_loss": "nats/token",
    "train_loss": "nats/token",
    "val_bpb": "bits/byte",
    "train_bpb": "bits/byte",
}
# The conventions a fit takes unless told otherwise, read by lab-analyze's options and by
# analysis.load_runs alike: N without embeddings (Kaplan et al. 2020; the N whose 6N FLOPs
# a token C counts), C = 6ND plus the attention FLOPs (PaLM's appendix B: at the lab's sizes
# attention is a large share of the compute), and the final validation loss.
DEFAULT_N_CONVENTION = "non_embedding"
DEFAULT_C_CONVENTION = "6N_attn"
DEFAULT_LOSS = "val_loss"

# The flat columns of the sweep-level table, in order.
# Config fields added after records existed, each with the value that keeps the old
# behaviour: a record without the field reads as that value (lab.runs.records.config_value),
# and the config hash leaves the field out at that value, so a config that keeps the old
# behaviour keeps its old hash (and its finished runs).
ADDED_FIELDS = {
    "model.mlp": "plain",
    "model.mixer": "attention",
    "model.conv_kernel": 4,
    "model.parametrization": "sp",
    "model.base_d_model": 0,
    "model.readout_zero_init": False,
    "optim.lr_law": None,
    "train.parallel": "ddp",
    "data.vocab_size": 0,
}

# Config fields that do not change what a run computes: left out of the config hash (the
# sweep's resume key), of a sweep's run folder names, and of the hyperparameter digests
HASH_EXCLUDED = (
    "train.skip_done",
    "train.threads",
    "train.resume",
    "train.checkpoint_every",
    "train.log_every",
    "train.loggers",
    "train.tracker_project",
    "train.overwrite",
    "train.activation_checkpointing",  # the same gradients, recomputed
    "train.final_eval_se",  # how precisely the trained model is measured, not the model
    "train.final_eval_share",
)


def canonical_config(config: dict, drop: tuple[str, ...] = ()) -> dict:
    """A copy of a config dict (as records hold it) without what does not decide a run's
    result: the ``HASH_EXCLUDED`` fields, the dotted keys ``drop`` names, and each field of
    ``ADDED_FIELDS`` that holds its old-behaviour value. The config hash and the runs
    table's hyperparameter digests are hashes of it."""
    d = json.loads(json.dumps(config))
    for dotted in (*HASH_EXCLUDED, *drop):
        section, _, key = dotted.partition(".")
        if isinstance(d.get(section), dict):
            d[section].pop(key, None)
    for dotted, neutral in ADDED_FIELDS.items():
        section, _, key = dotted.partition(".")
        if isinstance(d.get(section), dict) and d[section].get(key, neutral) == neutral:
            d[section].pop(key, None)
    return d


TABLE_COLUMNS = [
    "run",
    "status",
    "model",
    "mixer",
    "parametrization",
    "lr",
    "seed",
    *N_CONVENTIONS.values(),
    "tokens",
    "budget",
    *C_CONVENTIONS.values(),
    "train_loss",
    "val_loss",
    "val_loss_se",
    "train_bpb",
    "val_bpb",
    "val_bpb_se",
    "eval_tokens",
    "unique_tokens",
    "epochs",
    "wall_time_s",
    "tokens_per_s",
    "config_hash",
    # digests of the config without the seed and the fields above: runs with equal
    # `hparams` are repeats (seeds) of one setting; equal `hparams_but_lr` differ at most
    # in optim.lr (and the seed): one learning-rate sweep
    "hparams",
    "hparams_but_lr",
    "error",
    "run_dir",
]


def format_si(x: float) -> str:
    """1234567 -> '1.23M'."""
    if x is None or not math.isfinite(x):
        return str(x)
    if abs(x) >= 1e21:
        return f"{x:.3g}"
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale * (1 - 1e-9):
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"

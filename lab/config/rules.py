"""``validate``: the rules between a config's fields, and its ranges, that the schema's
types cannot express (choices are Enums, checked when the config is built)."""

from __future__ import annotations

import math

from kernels.registry import OPS
from lab.config.counting import below_one_context
from lab.config.lr_law import load_lr_law
from lab.config.schema import Config, Mixer, Parametrization, Positions, Schedule


def validate(cfg: Config) -> None:
    """Checks between fields, and of ranges, that the schema's types cannot express (choices
    are Enums, checked when the config is built).

    Raises ValueError naming the offending key and what it allows."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    at_least_one = {
        "model.n_layer": m.n_layer,
        "model.n_head": m.n_head,
        "model.d_model": m.d_model,
        "model.context": m.context,
        "data.tokens": d.tokens,
        "data.eval_tokens": d.eval_tokens,
        "train.batch_size": t.batch_size,
        "train.eval_batches": t.eval_batches,
        "train.grad_accum": t.grad_accum,
    }
    non_negative = {
        "model.d_ff": m.d_ff,
        "model.vocab_size": m.vocab_size,
        "model.max_positions": m.max_positions,
        "data.max_bytes": d.max_bytes,
        "data.vocab_size": d.vocab_size,
        "train.eval_every": t.eval_every,
        "train.threads": t.threads,
        "train.early_stop_patience": t.early_stop_patience,
        "train.checkpoint_every": t.checkpoint_every,
        "train.log_every": t.log_every,
        "optim.weight_decay": o.weight_decay,
        "optim.grad_clip": o.grad_clip,
    }
    fractions = {  # key: (value, low, high, high included)
        "model.dropout": (m.dropout, 0.0, 1.0, False),
        "model.embd_dropout": (m.embd_dropout, 0.0, 1.0, False),
        "model.attn_dropout": (m.attn_dropout, 0.0, 1.0, False),
        "optim.min_lr_ratio": (o.min_lr_ratio, 0.0, 1.0, True),
        "optim.warmup_fraction": (o.warmup_fraction, 0.0, 1.0, False),
        "train.final_eval_se": (t.final_eval_se, 0.0, 1.0, False),
        "train.final_eval_share": (t.final_eval_share, 0.0, 1.0, False),
    }
    for key, value in at_least_one.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    for key, value in non_negative.items():
        if not value >= 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    for key, (value, low, high, closed) in fractions.items():
        if not (low <= value <= high if closed else low <= value < high):
            raise ValueError(
                f"{key} must be in [{low:g}, {high:g}{']' if closed else ')'}, got {value}"
            )
    if m.mixer == Mixer.conv and not 1 <= m.conv_kernel <= m.context:
        raise ValueError(
            f"model.conv_kernel must be in [1, model.context={m.context}], got {m.conv_kernel}"
        )
    if m.mixer != Mixer.attention and m.positions == Positions.rope:
        raise ValueError(
            f"model.positions=rope rotates attention's queries and keys; model.mixer={m.mixer} "
            "has none: use model.positions=learned"
        )
    if o.lr_law is not None:
        load_lr_law(o.lr_law, str(m.parametrization))  # missing, corrupt or mismatched: here
    if m.parametrization == Parametrization.mup:
        if m.base_d_model < 1:
            raise ValueError(
                "model.parametrization=mup needs model.base_d_model, the width at which it "
                "equals sp (e.g. the smallest width of the sweep)"
            )
        if m.base_d_model % m.n_head:
            raise ValueError(
                f"model.base_d_model={m.base_d_model} is not divisible by "
                f"model.n_head={m.n_head} (the base head dim sets the attention scale)"
            )
    if m.readout_zero_init and m.tie_embeddings:
        raise ValueError(
            "model.readout_zero_init needs an untied output layer (model.tie_embeddings=false):"
            " a tied one is the token embedding"
        )
    if m.d_model % m.n_head != 0:
        raise ValueError(f"model.d_model={m.d_model} is not divisible by model.n_head={m.n_head}")
    if m.positions == Positions.rope and (m.d_model // m.n_head) % 2:
        raise ValueError(
            f"model.positions=rope needs an even head dim, got {m.d_model // m.n_head}"
        )
    if m.max_positions and m.context > m.max_positions:
        raise ValueError(
            f"model.context={m.context} is larger than the positional table "
            f"(model.max_positions={m.max_positions})"
        )
    if d.budget is not None:
        if not d.budget > 0:
            raise ValueError(f"data.budget must be > 0 FLOPs (or null), got {d.budget}")
        too_small = below_one_context(cfg)
        if too_small:
            raise ValueError(too_small)
    if not 0.0 < d.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if d.tokenizer not in ("bytes", "bpe", "gpt2") and not d.tokenizer.endswith(".json"):
        raise ValueError(
            "data.tokenizer must be 'bytes', 'bpe', 'gpt2' or the path of a tokenizer.json, "
            f"got {d.tokenizer!r}"
        )
    if d.bpe_vocab_size < 257:
        raise ValueError(
            f"data.bpe_vocab_size must be >= 257 (bytes + end of document), got {d.bpe_vocab_size}"
        )
    if d.branches:
        if o.schedule != Schedule.wsd:
            raise ValueError("data.branches (cooldown branches) need optim.schedule=wsd")
        bad = [b for b in d.branches if not 0 < b < d.tokens]
        if bad:
            raise ValueError(
                f"data.branches must lie between 0 and data.tokens={d.tokens}, got {bad}"
            )
    if not 0.0 < o.cooldown_fraction <= 1.0:
        raise ValueError(f"optim.cooldown_fraction must be in (0, 1], got {o.cooldown_fraction}")
    if t.batch_size % t.grad_accum:
        raise ValueError(
            f"train.grad_accum={t.grad_accum} must divide train.batch_size={t.batch_size}"
        )
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise ValueError(f"optim.lr must be a finite number > 0, got {o.lr}")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise ValueError(f"optim.{key} must be in [0, 1), got {getattr(o, key)}")
    if not o.eps > 0:
        raise ValueError(f"optim.eps must be > 0, got {o.eps}")
    unknown_ops = sorted(set(t.backend_ops) - set(OPS))
    if unknown_ops:
        raise ValueError(f"train.backend_ops: unknown op(s) {unknown_ops}; ops are {tuple(OPS)}")

"""Plan a sweep before launching it: every run's N, D, C and an estimated wall time.

The estimate comes from a short throughput probe: for each distinct model (and batch,
context, device) in the sweep, a few real training steps on random tokens are timed, and a
run's time is D / (tokens per second) plus the evaluation passes it will make. Nothing is
written and no run starts.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

import kernels
from lab.cli.bench import timed
from lab.cli.sweeps import expand_sweep
from lab.config.composition import compose
from lab.config.counting import below_one_context, budget_tokens, param_counts, training_flops
from lab.config.record import format_si
from lab.config.schema import Config
from lab.model.gpt import GPT
from lab.model.parametrization import param_groups
from lab.training.device import resolve_device

PROBE_STEPS = 3


def measure_tokens_per_second(cfg: Config, steps: int = PROBE_STEPS) -> float:
    """Training tokens per second of ``cfg``'s model, batch and device, over ``steps``
    timed steps after one warm-up step, on random tokens."""
    device = resolve_device(cfg.train.device)
    model_cfg = replace(cfg.model, vocab_size=cfg.model.vocab_size or 257)
    torch.manual_seed(0)
    with kernels.use_backend(cfg.train.backend, **cfg.train.backend_ops):
        model = GPT(model_cfg).to(device)
        opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
        shape = (cfg.train.batch_size, model_cfg.context)
        x = torch.randint(0, model_cfg.vocab_size, shape, device=device)
        y = torch.randint(0, model_cfg.vocab_size, shape, device=device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

        def step():
            with autocast:
                _, loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        seconds_per_step = timed(step, steps, device)
    return shape[0] * shape[1] / seconds_per_step


def plan(name: str, overrides: list[str] | None = None, probe: bool = True) -> list[dict]:
    """One row per run of sweeps/NAME.yaml: overrides, model, N, D, C, estimated seconds."""
    rows, speeds = [], {}
    for job in expand_sweep(name, overrides):
        cfg = compose(job)
        swept = [o for o in job if not o.startswith("+sweeps=")]
        n = param_counts(replace(cfg.model, vocab_size=257))["non_embedding"]
        skip = below_one_context(cfg)
        tokens = budget_tokens(cfg.model, cfg.data.budget) if cfg.data.budget else cfg.data.tokens
        row = {
            "run": ",".join(swept),
            "model": cfg.model.name,
            "N": n,
            "D": tokens,
            "C": training_flops(replace(cfg.model, vocab_size=257), tokens)["6N_attn"],
            "seconds": None,
            "note": "skipped: D below one context" if skip else "",
        }
        if probe and not skip:
            key = (repr(cfg.model), cfg.train.batch_size, cfg.train.device, cfg.train.backend)
            if key not in speeds:
                speeds[key] = measure_tokens_per_second(cfg)
            steps = math.ceil(tokens / (cfg.train.batch_size * cfg.model.context))
            evals = 5 * 2 * cfg.train.eval_batches  # forward-only batches, at ~1/3 of a step
            row["seconds"] = (
                tokens + evals / 3 * cfg.train.batch_size * cfg.model.context
            ) / speeds[key]
            row["tokens_per_s"] = speeds[key]
            row["steps"] = steps
        rows.append(row)
    return rows


def format_plan(name: str, rows: list[dict]) -> str:

    lines = [
        f"plan for sweep {name!r}: {len(rows)} runs",
        f"{'N':>8} {'D':>8} {'C':>8} {'est. time':>10}  run",
    ]
    total = 0.0
    for r in rows:
        t = "-" if r["seconds"] is None else _duration(r["seconds"])
        total += r["seconds"] or 0.0
        lines.append(
            f"{format_si(r['N']):>8} {format_si(r['D']):>8} {format_si(r['C']):>8} "
            f"{t:>10}  {r['run']}{'  (' + r['note'] + ')' if r['note'] else ''}"
        )
    lines.append(
        f"total: about {_duration(total)} run one after another (basic launcher); "
        f"N non-embedding, C = 6ND + attention FLOPs (the analysis's default); times from a "
        f"{PROBE_STEPS}-step throughput probe"
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"

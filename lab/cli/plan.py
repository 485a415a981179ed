"""Plan a sweep before launching it: every run's N, D, D/N, steps, C, the memory it needs
per device and an estimated time. Nothing is written and no run starts.

Two ways to time it:

- on this machine (no ``--device``, or ``--device cpu``): a short throughput probe, for
  each distinct model (and batch, context, device) in the sweep a few real training steps
  on random tokens, and a run's time is D / (tokens per second) plus its evaluations;
- for a GPU, from any machine (``--device h200``, ``h100`` or ``a100``, ``--gpus K``): the
  run's FLOPs (6N + attention + head, per token; a third more with block checkpointing,
  which repeats the forward) over K × the GPU's dense bf16 peak × the model FLOPs
  utilisation (MFU) the lab measured there (``MFU_RECORD`` in lab/BENCHMARKS.md), else
  ``DEFAULT_MFU``; and GPU-hours = K × that time.

Memory per device is ``lab.config.memory.estimate`` at the run's micro-batch (its batch over
K processes and its gradient accumulation), under its ``train.parallel`` and
``train.activation_checkpointing``, plus a tenth for the allocator. A run that does not fit
says which setting makes it fit.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import kernels
from lab.cli.bench import timed
from lab.cli.sweeps import expand_sweep
from lab.config.composition import compose
from lab.config.counting import below_one_context, budget_tokens, flops_per_token, param_counts
from lab.config.memory import HEADROOM, estimate
from lab.config.record import format_si
from lab.config.schema import ROOT, Config
from lab.data.tokenizer import ByteTokenizer
from lab.model.gpt import GPT
from lab.model.parametrization import param_groups
from lab.training.device import resolve_device

PROBE_STEPS = 3
BYTE_VOCAB = ByteTokenizer.vocab_size  # a config's vocab_size 0: the default tokenizer's


@dataclass(frozen=True)
class Gpu:
    name: str
    peak: float  # dense bf16 FLOP/s
    memory: float  # bytes per GPU


# Vendors' datasheets: dense (no sparsity) bf16 tensor-core peaks of the SXM parts.
GPUS = {
    "h200": Gpu("H200", 989e12, 141e9),
    "h100": Gpu("H100", 989e12, 80e9),
    "a100": Gpu("A100", 312e12, 80e9),
}
DEVICES = (*GPUS, "cpu")
# No lab MFU measured on a GPU yet: 0.40, below the 0.456 plain PyTorch reached on GPT-2
# small under torch.compile on an H200 (lab/BENCHMARKS.md), and typical of published
# ladders' 35-50% (Chowdhery et al. 2022, table 3).
DEFAULT_MFU = 0.40
# a measured figure is a line "planner MFU, H200: 0.45" in lab/BENCHMARKS.md (where the
# GPT-2 step is benchmarked) or kernels/BENCHMARKS.md
MFU_RECORD = re.compile(r"^planner MFU, (\w+): ([0-9.]+)\s*$", re.MULTILINE)
BENCHMARKS = (ROOT / "lab" / "BENCHMARKS.md", ROOT / "kernels" / "BENCHMARKS.md")
RECOMPUTE = 4 / 3  # block checkpointing: forward (2N) again on top of 6N


def measured_mfu(gpu: str, files: tuple[Path, ...] = BENCHMARKS) -> float | None:
    """The lab's own MFU on ``gpu`` as the benchmark files record it (the last one said),
    or None."""
    found = {}
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        found.update({name.lower(): float(v) for name, v in MFU_RECORD.findall(text)})
    return found.get(gpu)


def measure_tokens_per_second(cfg: Config, steps: int = PROBE_STEPS) -> float:
    """Training tokens per second of ``cfg``'s model, batch and device, over ``steps``
    timed steps after one warm-up step, on random tokens."""
    device = resolve_device(cfg.train.device)
    model_cfg = replace(cfg.model, vocab_size=cfg.model.vocab_size or BYTE_VOCAB)
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


def machine_memory() -> float:
    """This machine's RAM in bytes (what a CPU run has)."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_per_device(cfg: Config, gpus: int, bf16: bool, **settings) -> float | None:
    """Planned bytes per device (``estimate`` × HEADROOM) of ``cfg`` on ``gpus`` processes,
    with ``settings`` (grad_accum, parallel, checkpointing) overriding the run's; None for
    a model the estimate does not cover."""
    t = cfg.train
    grad_accum = settings.get("grad_accum", t.grad_accum)
    micro = max(1, t.batch_size // (gpus * grad_accum))
    parallel = settings.get("parallel", str(t.parallel))
    checkpointing = settings.get("checkpointing", str(t.activation_checkpointing))
    try:
        mem = estimate(cfg.model, micro, gpus, parallel, checkpointing, bf16=bf16)
    except ValueError:
        return None
    return mem.planned


def what_fits(cfg: Config, gpus: int, capacity: float, bf16: bool) -> str:
    """The first setting, in order of what it costs, under which ``cfg`` fits ``capacity``
    bytes per device: more gradient accumulation (smaller micro-batches; the same
    trajectory), block checkpointing (a third more compute), FSDP over the GPUs, or more
    GPUs under FSDP."""
    t = cfg.train
    accums = [a for a in (2, 4, 8, 16, 32, 64, 128, 256) if a > t.grad_accum]
    accums = [a for a in accums if t.batch_size % (gpus * a) == 0] or [t.grad_accum]
    steps = [({"grad_accum": a}, f"train.grad_accum={a}") for a in accums]
    steps += [
        (
            {"grad_accum": a, "checkpointing": "block"},
            f"train.grad_accum={a} train.activation_checkpointing=block",
        )
        for a in [t.grad_accum, *accums]
    ]
    if gpus > 1:
        steps += [
            (
                {"grad_accum": a, "checkpointing": c, "parallel": "fsdp"},
                f"train.parallel=fsdp train.grad_accum={a}"
                + (" train.activation_checkpointing=block" if c == "block" else ""),
            )
            for c in ("none", "block")
            for a in [t.grad_accum, *accums]
        ]
    for settings, text in steps:
        need = memory_per_device(cfg, gpus, bf16, **settings)
        if need is not None and need <= capacity:
            return f"fits with {text}"
    for k in (2, 4, 8, 16, 32, 64, 128, 256, 512):
        if k <= gpus or t.batch_size % k:
            continue
        settings = {"grad_accum": 1, "checkpointing": "block", "parallel": "fsdp"}
        if (memory_per_device(cfg, k, bf16, **settings) or math.inf) <= capacity:
            return f"needs train.parallel=fsdp on {k} GPUs (--gpus {k})"
    return "does not fit on this device at any setting the planner tries"


def plan(
    name: str,
    overrides: list[str] | None = None,
    probe: bool = True,
    device: str | None = None,
    gpus: int = 1,
) -> list[dict]:
    """One row per run of sweeps/NAME.yaml: its overrides, model, N, D, D/N, steps, C,
    memory per device, estimated seconds (and GPU-hours for a GPU ``device``)."""
    if device is not None and device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if gpus < 1:
        raise ValueError(f"--gpus must be at least 1, got {gpus}")
    gpu = GPUS.get(device or "")
    measured = measured_mfu(device) if gpu else None
    mfu = (measured or DEFAULT_MFU) if gpu else None
    rows, speeds = [], {}
    for job in expand_sweep(name, overrides):
        cfg = compose(job)
        if device == "cpu":  # probed on the CPU even where train.device=auto finds a GPU
            cfg = replace(cfg, train=replace(cfg.train, device="cpu"))
        model = replace(cfg.model, vocab_size=cfg.model.vocab_size or BYTE_VOCAB)
        cfg = replace(cfg, model=model)
        swept = [o for o in job if not o.startswith("+sweeps=")]
        counts = param_counts(model)
        n = counts["non_embedding"]
        skip = below_one_context(cfg)
        tokens = budget_tokens(model, cfg.data.budget) if cfg.data.budget else cfg.data.tokens
        per_token = flops_per_token(model)
        flops = float(per_token["6N_attn_head"]) * tokens  # what the GPU computes
        t = cfg.train
        world = gpus if gpu else 1
        row = {
            "run": ",".join(swept),
            "model": model.name,
            "N": n,
            "N_total": counts["total"],
            "D": tokens,
            "D_per_N": tokens / n,
            "steps": math.ceil(tokens / (t.batch_size * model.context)),
            "C": float(per_token["6N_attn"]) * tokens,  # the analysis's default convention
            "seconds": None,
            "gpu_hours": None,
            "memory": memory_per_device(cfg, world, bf16=gpu is not None),
            "note": "skipped: D below one context" if skip else "",
        }
        capacity = gpu.memory if gpu else machine_memory()
        if t.batch_size % (world * t.grad_accum):
            row["note"] = (
                f"train.batch_size={t.batch_size} does not divide over {world} GPU(s) × "
                f"train.grad_accum={t.grad_accum}"
            )
        elif row["memory"] is not None and row["memory"] > capacity:
            row["note"] = what_fits(cfg, world, capacity, bf16=gpu is not None)
        if gpu and not skip:
            recompute = RECOMPUTE if t.activation_checkpointing == "block" else 1.0
            row["seconds"] = flops * recompute / (gpu.peak * mfu * gpus)
            row["gpu_hours"] = row["seconds"] * gpus / 3600
        elif probe and not skip:
            key = (repr(model), t.batch_size, t.device, t.backend)
            if key not in speeds:
                speeds[key] = measure_tokens_per_second(cfg)
            evals = 5 * 2 * t.eval_batches  # forward-only batches, at ~1/3 of a step
            row["seconds"] = (tokens + evals / 3 * t.batch_size * model.context) / speeds[key]
            row["tokens_per_s"] = speeds[key]
        rows.append(row)
    for row in rows:
        row.update(device=device or "this machine", gpus=gpus, mfu=mfu, mfu_measured=bool(measured))
    return rows


def format_plan(name: str, rows: list[dict]) -> str:
    gpu = GPUS.get(rows[0]["device"]) if rows else None
    where = "this machine" if gpu is None else f"{rows[0]['gpus']} × {gpu.name}"
    lines = [
        f"plan for sweep {name!r}: {len(rows)} runs",
        f"{'N':>8} {'D':>8} {'D/N':>6} {'steps':>7} {'C':>8} {'mem/dev':>8} {'est. time':>10}"
        + (f" {'GPU-h':>8}" if gpu else "")
        + "  run",
    ]
    total = hours = 0.0
    for r in rows:
        t = "-" if r["seconds"] is None else _duration(r["seconds"])
        total += r["seconds"] or 0.0
        hours += r["gpu_hours"] or 0.0
        mem = "-" if r["memory"] is None else f"{format_si(r['memory'])}B"
        lines.append(
            f"{format_si(r['N']):>8} {format_si(r['D']):>8} {r['D_per_N']:>6.3g} "
            f"{r['steps']:>7} {format_si(r['C']):>8} {mem:>8} {t:>10}"
            + (f" {r['gpu_hours']:>8.4g}" if gpu and r["gpu_hours"] is not None else "")
            + f"  {r['run']}{'  (' + r['note'] + ')' if r['note'] else ''}"
        )
    conventions = (
        "N non-embedding, C = 6ND + attention FLOPs (the analysis's default); memory per "
        f"device: lab.config.memory's estimate × {HEADROOM} (bf16 autocast on a GPU, fp32 "
        "on the CPU)"
    )
    if gpu:
        source = (
            "the lab's, measured (BENCHMARKS.md)"
            if rows[0]["mfu_measured"]
            else "a default: the lab has no MFU measured on this GPU yet"
        )
        lines.append(
            f"total: {hours:.4g} GPU-hours, about {_duration(total)} one run after another on "
            f"{where}; times at MFU {rows[0]['mfu']:.2f} ({source}) of {gpu.peak / 1e12:.0f} "
            f"TFLOP/s bf16 (FLOPs with the head's), memory against {gpu.memory / 1e9:.0f} GB; "
            f"{conventions}"
        )
    else:
        lines.append(
            f"total: about {_duration(total)} run one after another (basic launcher); times "
            f"from a {PROBE_STEPS}-step throughput probe; {conventions}"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"

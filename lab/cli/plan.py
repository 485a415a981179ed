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

import hashlib
import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import kernels
from lab.cli.bench import timed
from lab.cli.sweeps import expand_sweep, sweep_config
from lab.config.composition import compose
from lab.config.counting import below_one_context, budget_tokens, flops_per_token, param_counts
from lab.config.memory import HEADROOM, estimate
from lab.config.record import format_si
from lab.config.schema import ROOT, Config
from lab.data.corpus import cache_root
from lab.data.tokenizer import ByteTokenizer
from lab.model.gpt import GPT
from lab.model.parametrization import param_groups
from lab.runs.files import write_json_atomic
from lab.training.device import resolve_device
from lab.training.schedule import cooldown_start

PROBE_WARMUP = 2  # untimed steps first (allocator, kernels, caches)
PROBE_MIN_STEPS = 5  # the spread is over the last this many timed steps
PROBE_MAX_STEPS = 30
PROBE_MAX_SECONDS = 5.0
PROBE_SPREAD = 0.05  # interquartile range over the median at which the probe stops
RUN_OVERHEAD_S = 0.6  # a run's own set-up in a sweep's process: model, optimizer, records
PROCESS_START_S = 2.5  # a launcher process's imports before its first run
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


@dataclass(frozen=True)
class Probe:
    """A measured throughput: the median of the timed steps, their spread (interquartile
    range over the median) and how many were timed."""

    tokens_per_s: float
    spread: float  # over the last PROBE_MIN_STEPS timed steps, the ones that decided
    steps: int
    stopped_by: str = "spread"  # spread | steps | seconds
    cached: bool = False


def probe_key(cfg: Config, threads: int) -> str:
    """What a throughput depends on: the model, batch, context, device, backend, threads,
    torch and the machine."""
    model = hashlib.sha256(repr(cfg.model).encode()).hexdigest()[:12]
    t = cfg.train
    return (
        f"{model}|b{t.batch_size}|t{cfg.model.context}|{t.device}|{t.backend}|threads{threads}"
        f"|torch{torch.__version__}|{platform.node()}"
    )


def measure_tokens_per_second(cfg: Config, threads: int = 0) -> Probe:
    """Training tokens per second of ``cfg``'s model, batch and device on random tokens:
    ``PROBE_WARMUP`` untimed steps, then steps timed one by one until the spread of the
    last ones is at most ``PROBE_SPREAD`` (or ``PROBE_MAX_STEPS`` / ``PROBE_MAX_SECONDS``
    pass); the median step. ``threads``: torch's CPU threads for it (0: as they are)."""
    device = resolve_device(cfg.train.device)
    model_cfg = replace(cfg.model, vocab_size=cfg.model.vocab_size or BYTE_VOCAB)
    torch.manual_seed(0)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with kernels.use_backend(cfg.train.backend, **cfg.train.backend_ops):
            model = GPT(model_cfg).to(device)
            opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
            shape = (cfg.train.batch_size, model_cfg.context)
            x = torch.randint(0, model_cfg.vocab_size, shape, device=device)
            y = torch.randint(0, model_cfg.vocab_size, shape, device=device)
            cuda = device.type == "cuda"
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

            def step():
                with autocast:
                    _, loss = model(x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for _ in range(PROBE_WARMUP):
                step()
            times, started = [], time.perf_counter()
            while True:
                times.append(timed(step, 1, device))
                spread = _spread(times[-PROBE_MIN_STEPS:])
                spent = time.perf_counter() - started
                if len(times) >= PROBE_MIN_STEPS and spread <= PROBE_SPREAD:
                    stopped_by = "spread"
                elif len(times) >= PROBE_MAX_STEPS:
                    stopped_by = "steps"
                elif spent >= PROBE_MAX_SECONDS and len(times) >= 2:
                    stopped_by = "seconds"
                else:
                    continue
                break
    finally:
        torch.set_num_threads(before)
    median = statistics.median(times)
    return Probe(shape[0] * shape[1] / median, spread, len(times), stopped_by)


def _spread(times: list[float]) -> float:
    if len(times) < 2:
        return float("inf")
    q = statistics.quantiles(times, n=4, method="inclusive")
    return (q[2] - q[0]) / statistics.median(times)


class ProbeCache:
    """Throughputs measured before, in ``<cache>/plan_probes.json`` (the corpus cache's
    folder), by ``probe_key``: a plan of a sweep seen before is instant and says the same
    thing twice. ``fresh``: measure again (and keep the new figures)."""

    def __init__(self, root: Path, fresh: bool = False):
        self.path, self.fresh = root / "plan_probes.json", fresh
        try:
            self.entries = json.loads(self.path.read_text())
            if not isinstance(self.entries, dict):
                self.entries = {}
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def get(self, cfg: Config, threads: int) -> Probe:
        key = probe_key(cfg, threads)
        hit = None if self.fresh else self.entries.get(key)
        if isinstance(hit, dict) and {"tokens_per_s", "spread", "steps"} <= set(hit):
            stopped = hit.get("stopped_by", "spread")
            return Probe(hit["tokens_per_s"], hit["spread"], hit["steps"], stopped, cached=True)
        probe = measure_tokens_per_second(cfg, threads)
        self.entries[key] = {
            "tokens_per_s": probe.tokens_per_s,
            "spread": probe.spread,
            "steps": probe.steps,
            "stopped_by": probe.stopped_by,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.changed = True
        return probe

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.entries)
        except OSError:  # a read-only cache: the plan is still right, only slower next time
            pass


def joblib_workers(n_jobs) -> int:
    """The processes joblib's ``n_jobs`` means (joblib's convention: -1 every core, -2 all
    but one, ...)."""
    n, cores = int(n_jobs or -1), os.cpu_count() or 1
    return max(1, cores + 1 + n if n < 0 else n)


def launcher_slots(sweep) -> tuple[int, str]:
    """How many of a sweep's runs its launcher runs at once, and the launcher's name, from
    the sweep's composed config (``lab.cli.sweeps.sweep_config``): joblib's ``n_jobs`` (-1:
    every core), submitit's ``array_parallelism``, else 1."""
    launcher = sweep.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        return joblib_workers(launcher.get("n_jobs", -1)), "joblib"
    if "submitit" in target:
        return int(launcher.get("array_parallelism", 256) or 256), "submitit"
    return 1, "basic"


def eval_seconds(cfg: Config, tokens: int, tokens_per_s: float) -> float:
    """The evaluations' time in a loop to ``tokens`` tokens of the run ``cfg`` (its D
    resolved), at their budgets (``lab.training.evaluation.budgets``; the final ones'
    standard-error stop, often earlier, is not foreseen); a forward pass at a third of a
    training step's time a token."""
    from lab.training.evaluation import budgets, windows_read
    from lab.training.schedule import StepPlan

    t, context = cfg.train, cfg.model.context
    plan, most = StepPlan.of(cfg), budgets(cfg, tokens)
    periodic_windows = t.eval_batches * t.batch_size
    n_evals = math.ceil(math.ceil(tokens / plan.tokens_per_step) / plan.eval_every)
    windows = n_evals * windows_read(most["val"], periodic_windows)
    windows += windows_read(most["final"], max(periodic_windows, cfg.data.eval_tokens // context))
    windows += windows_read(most["train"], periodic_windows)
    return windows * context / (3 * tokens_per_s)


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


def _overrides(settings: dict) -> str:
    """The command-line overrides of a setting ``what_fits`` tries."""
    text = "train.parallel=fsdp " if settings.get("parallel") == "fsdp" else ""
    text += f"train.grad_accum={settings['grad_accum']}"
    if settings.get("checkpointing") == "block":
        text += " train.activation_checkpointing=block"
    return text


def what_fits(cfg: Config, gpus: int, capacity: float, bf16: bool) -> str:
    """The first setting, in order of what it costs, under which ``cfg`` fits ``capacity``
    bytes per device: more gradient accumulation (smaller micro-batches; the same
    trajectory), block checkpointing (a third more compute), FSDP over the GPUs, or more
    GPUs under FSDP."""
    t = cfg.train
    accums = [a for a in (2, 4, 8, 16, 32, 64, 128, 256) if a > t.grad_accum]
    accums = [a for a in accums if t.batch_size % (gpus * a) == 0] or [t.grad_accum]
    steps = [{"grad_accum": a} for a in accums]
    steps += [{"grad_accum": a, "checkpointing": "block"} for a in [t.grad_accum, *accums]]
    if gpus > 1:
        steps += [
            {"grad_accum": a, "checkpointing": c, "parallel": "fsdp"}
            for c in ("none", "block")
            for a in [t.grad_accum, *accums]
        ]
    for settings in steps:
        need = memory_per_device(cfg, gpus, bf16, **settings)
        if need is not None and need <= capacity:
            return f"fits with {_overrides(settings)}"
    # the fewest GPUs under FSDP, at the largest micro-batch that fits there (recomputing
    # blocks only where no micro-batch fits without)
    for k in (2, 4, 8, 16, 32, 64, 128, 256, 512):
        if k <= gpus or t.batch_size % k:
            continue
        accums = [a for a in (1, 2, 4, 8, 16, 32, 64, 128, 256) if t.batch_size % (k * a) == 0]
        for c in ("none", "block"):
            for a in accums:
                settings = {"grad_accum": a, "checkpointing": c, "parallel": "fsdp"}
                if (memory_per_device(cfg, k, bf16, **settings) or math.inf) <= capacity:
                    return f"needs {k} GPUs (--gpus {k}) with {_overrides(settings)}"
    return "does not fit on this device at any setting the planner tries"


def plan(
    name: str,
    overrides: list[str] | None = None,
    probe: bool = True,
    device: str | None = None,
    gpus: int = 1,
    fresh: bool = False,
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
    rows, speeds, cache = [], {}, None
    sweep = sweep_config(name, overrides)
    slots, launcher = launcher_slots(sweep)
    jobs = expand_sweep(name, overrides, sweep)
    at_once = max(1, min(slots, len(jobs)))
    for job in jobs:
        cfg = compose(job)
        if device == "cpu":  # probed on the CPU even where train.device=auto finds a GPU
            cfg = replace(cfg, train=replace(cfg.train, device="cpu"))
        model = replace(cfg.model, vocab_size=cfg.model.vocab_size or BYTE_VOCAB)
        cfg = replace(cfg, model=model)
        swept = [o for o in job if not o.startswith(("+sweeps=", "hydra.", "hydra/"))]
        per_step = cfg.train.batch_size * model.context
        counts = param_counts(model)
        n = counts["non_embedding"]
        skip = below_one_context(cfg)
        tokens = budget_tokens(model, cfg.data.budget) if cfg.data.budget else cfg.data.tokens
        cfg = replace(cfg, data=replace(cfg.data, tokens=tokens))
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
            # a run's threads: its own setting, else the cores shared by the runs at once
            threads = t.threads or max(1, (os.cpu_count() or 1) // at_once)
            if cache is None:
                cache = ProbeCache(cache_root(cfg.data), fresh)
            key = probe_key(cfg, threads)
            if key not in speeds:
                speeds[key] = cache.get(cfg, threads)
            speed = speeds[key].tokens_per_s
            row["seconds"] = tokens / speed + eval_seconds(cfg, tokens, speed) + RUN_OVERHEAD_S
            for d in branch_tokens(cfg):  # WSD branches: each cools down from its snapshot
                cooled = d - cooldown_start(math.ceil(d / per_step), cfg.optim) * per_step
                row["seconds"] += cooled / speed + eval_seconds(cfg, d, speed) + RUN_OVERHEAD_S
            row.update(tokens_per_s=speed, probe=speeds[key], threads=threads)
        rows.append(row)
    if cache is not None:
        cache.save()
    for row in rows:
        row.update(device=device or "this machine", gpus=gpus, mfu=mfu, mfu_measured=bool(measured))
        row.update(slots=slots, launcher=launcher)
    return rows


def branch_tokens(cfg: Config) -> list[int]:
    """The token budgets of a run's WSD cooldown branches (none unless optim.schedule=wsd)."""
    if str(cfg.optim.schedule) != "wsd":
        return []
    return sorted({int(d) for d in cfg.data.branches if 0 < int(d) < cfg.data.tokens})


def wall_seconds(rows: list[dict], slots: int, gpu: bool) -> float:
    """The sweep's wall time: its runs handed in order to ``slots`` workers, each taking
    the next run when it is free (joblib's and a job array's order), plus each worker
    process's start on this machine."""
    free = [0.0] * max(1, min(slots, len(rows)))
    for r in rows:
        i = free.index(min(free))
        free[i] += r["seconds"] or 0.0
    return max(free) + (0.0 if gpu else PROCESS_START_S)


def format_plan(name: str, rows: list[dict]) -> str:
    gpu = GPUS.get(rows[0]["device"]) if rows else None
    where = "this machine" if gpu is None else f"{rows[0]['gpus']} × {gpu.name}"
    lines = [
        f"plan for sweep {name!r}: {len(rows)} runs",
        f"{'N':>8} {'N total':>8} {'D':>8} {'D/N':>6} {'steps':>7} {'C':>8} {'mem/dev':>8} "
        + (f"{'est. time':>10} {'GPU-h':>8}" if gpu else f"{'tok/s':>8} {'est. time':>10}")
        + "  run",
    ]
    total = hours = 0.0
    for r in rows:
        t = "-" if r["seconds"] is None else _duration(r["seconds"])
        total += r["seconds"] or 0.0
        hours += r["gpu_hours"] or 0.0
        mem = "-" if r["memory"] is None else f"{format_si(r['memory'])}B"
        if gpu:
            last = f"{t:>10} " + (f"{r['gpu_hours']:>8.4g}" if r["gpu_hours"] is not None else "")
        else:
            speed = format_si(r["tokens_per_s"]) if r.get("tokens_per_s") else "-"
            last = f"{speed:>8} {t:>10}"
        lines.append(
            f"{format_si(r['N']):>8} {format_si(r['N_total']):>8} {format_si(r['D']):>8} "
            f"{r['D_per_N']:>6.3g} {r['steps']:>7} {format_si(r['C']):>8} {mem:>8} {last}"
            + f"  {r['run']}{'  (' + r['note'] + ')' if r['note'] else ''}"
        )
    conventions = (
        "N non-embedding (N total with the embeddings, as Chinchilla's D = 20 N counts it), "
        "C = 6ND + attention FLOPs (the analysis's default); memory per device: "
        f"lab.config.memory's estimate × {HEADROOM} (bf16 autocast on a GPU, fp32 "
        "on the CPU)"
    )
    slots, launcher = (rows[0]["slots"], rows[0]["launcher"]) if rows else (1, "basic")
    wall = wall_seconds(rows, slots, gpu is not None)
    at_once = "one after another" if slots == 1 else f"{slots} at a time"
    if gpu:
        source = (
            "the lab's, measured (BENCHMARKS.md)"
            if rows[0]["mfu_measured"]
            else "a default: the lab has no MFU measured on this GPU yet"
        )
        lines.append(
            f"total: {hours:.4g} GPU-hours, about {_duration(wall)} {at_once} on {where} "
            f"({launcher} launcher); times at MFU {rows[0]['mfu']:.2f} ({source}) of "
            f"{gpu.peak / 1e12:.0f} TFLOP/s bf16 (FLOPs with the head's), memory against "
            f"{gpu.memory / 1e9:.0f} GB; {conventions}"
        )
    else:
        probes = {id(r["probe"]): r["probe"] for r in rows if r.get("probe")}.values()
        spread = max((p.spread for p in probes), default=0.0)
        cached = sum(p.cached for p in probes)
        steps = sorted({p.steps for p in probes})
        capped = sum(p.stopped_by != "spread" for p in probes)
        capped_note = f", {capped} stopped at a cap before reaching 5%" if capped else ""
        lines.append(
            f"total: about {_duration(wall)} wall, {at_once} ({launcher} launcher; "
            f"{_duration(total)} of runs); each time is D / the median of a throughput "
            f"probe ({len(probes)} probed, {cached} from the cache, {steps[0] if steps else 0}-"
            f"{steps[-1] if steps else 0} timed steps, spread at most {spread:.0%}{capped_note}) plus its "
            f"evaluations and set-up; --reprobe measures again; {conventions}"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"

"""Compile the Triton kernels for a GPU architecture on a machine without one.

    python -m kernels.compile_check [attention] [gemm] [layernorm] [conv] [--arch 90]
                                    [--dtype bf16] [--head-dims 64 128] [--first] [--ttgir]
                                    [--csv PATH]

Every launch the ops' host code makes is built by Triton's own compiler down to a cubin,
and the table reports each build's shared memory, registers and spilled bytes (from
ptxas): for attention (the default op), the forward, delta pre-pass, dK/dV and dQ kernels,
both read paths (TMA tensor descriptors and pointers), causal or not, with and without
dropout; for gemm, the linear layer's three products and the activation backward; for
layernorm, forward and backward at four widths, LayerNorm and RMSNorm. Each autotuned
kernel builds every tile of its tuning list (``--first``: only the first). ``--ttgir`` adds
what the TTGIR of each build says about its inner loops (``ttgir_facts``): the layouts a
Hopper kernel loses time on, readable without a GPU. Nothing runs:
this answers "does the Hopper path build with this triton" and "which tiles spill", not
"is it fast" or "is it right" (the interpreter tests and a GPU answer those).

How: Triton's active driver is replaced by a stand-in that names the target (no CUDA
needed), and each launch the host code makes is turned into ``JITFunction.warmup``, which
compiles without launching. The stand-in touches Triton internals
(``triton.runtime.driver``); a triton upgrade may need it adjusted.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
HOPPER_SMEM = 232448  # bytes of shared memory one block may opt into on sm_90


class _TargetOnlyDriver:
    """What the JIT asks of the active driver before a launch, for a GPU that is not here."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


class _CompileOnly:
    """Stands in for a kernel (plain JIT or autotuned): ``kernel[grid](*args, **kw)``
    compiles every config for those arguments instead of launching, recording each build."""

    def __init__(self, name: str, kernel, builds: list, first_only: bool):
        self.name, self.builds, self.first_only = name, builds, first_only
        tuned = hasattr(kernel, "configs")  # an Autotuner wraps the JITFunction as .fn
        self.fn = kernel.fn if tuned else kernel
        self.configs = kernel.configs if tuned else [None]
        self.prune = getattr(kernel, "early_config_prune", None) if tuned else None

    def __getitem__(self, grid):
        return lambda *args, **kw: self._compile(args, kw)

    def _compile(self, args, kw):
        configs = self.configs
        if self.prune is not None:  # what the autotuner would try for these arguments
            configs = self.prune(configs, dict(zip(self.fn.arg_names, args)), **kw)
        for config in configs[:1] if self.first_only else configs:
            meta = dict(kw)
            if config is not None:
                meta.update(config.all_kwargs())
                if config.pre_hook is not None:
                    config.pre_hook({**dict(zip(self.fn.arg_names, args)), **meta})
            label = "x".join(str(meta[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in meta)
            row = {
                "kernel": self.name,
                "tile": label or str(meta.get("BLOCK", "-")),
                "stages": meta.get("num_stages", 3),
                "warps": meta.get("num_warps", 4),
            }
            try:
                compiled = self.fn.warmup(*args, grid=(1,), **meta)
                row.update(status="ok", shared=compiled.metadata.shared)
                row.update(_ptxas_usage(compiled.asm["ptx"]))
                row.update(ttgir_facts(compiled.asm["ttgir"]))
            except Exception as e:  # noqa: BLE001 - reported in the table, counted as failed
                row.update(status="FAILED: " + (str(e).strip().splitlines() or [""])[-1][:160])
            self.builds.append(row)


def _ptxas_usage(ptx: str) -> dict:
    """Registers and spill stores of a PTX module, from the ptxas that ships with triton
    (the newer one when the PTX version needs it)."""
    import triton

    arch = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        for ptxas in ("ptxas", "ptxas-blackwell"):
            if not (bin_dir / ptxas).exists():
                continue
            out = subprocess.run(
                [str(bin_dir / ptxas), "-v", f"--gpu-name={arch}", str(src), "-o", f"{tmp}/k.o"],
                capture_output=True,
                text=True,
            )
            regs = re.search(r"Used (\d+) registers", out.stderr)
            spill = re.search(r"(\d+) bytes spill stores", out.stderr)
            if out.returncode == 0 and regs:
                return {"regs": int(regs.group(1)), "spill_bytes": int(spill.group(1))}
    return {"regs": "?", "spill_bytes": "?"}


_LAYOUT = re.compile(r"^(#mma\d*) = #ttg\.nvidia_mma<\{(.*)\}>", re.M)
_DOT = re.compile(r"= (?:ttng\.warp_group_dot|tt\.dot) .*-> tensor<(\d+)x(\d+)x\w+, (#mma\d*)>")
_LOC = re.compile(r"\s*loc\((?:[^()]|\([^()]*\))*\)")


def _ints(text: str, key: str) -> list[int]:
    return [int(x) for x in re.search(key + r" = \[([\d, ]+)\]", text).group(1).split(",")]


TTGIR_COLUMNS = (
    "dots/iter",
    "dot warps",
    "dup dots",
    "smem/iter",
    "reg trans/iter",
    "async loads/iter",
)


def ttgir_facts(ttgir: str) -> dict:
    """What the TTGIR (Triton's GPU-level IR, after layout assignment) says about a kernel's
    inner loops, the facts a reader of the compiler output checks by hand:

    - ``dots/iter``: matrix products per iteration of the busiest innermost loop;
    - ``dot warps``: the warps-per-CTA grid of each product's layout in inner loops;
    - ``dup dots``: products whose warps cover more rows or columns than the tile has, so
      some warps compute the same tile again (an MMA layout tiles 16 rows per warp and
      ``instrShape[1]`` columns per warp; more warps than that along a dimension repeat);
    - ``smem/iter``: register values written to shared memory per inner-loop iteration
      (``ttg.local_alloc`` of a value, ``ttg.local_store``): the round trips a transpose or
      a relayout costs (tiles arriving by ``cp.async`` or TMA are not counted);
    - ``reg trans/iter``: transposes of register tensors (``tt.trans`` of a value, not of a
      shared-memory view) per inner-loop iteration;
    - ``async loads/iter``: loads the software pipeliner turned into asynchronous copies
      (``cp.async`` or TMA) issued ahead of their use: the prefetches in flight.
    """
    layouts = {}
    for name, body in _LAYOUT.findall(ttgir):
        layouts[name] = (_ints(body, "warpsPerCTA"), _ints(body, "instrShape"))
    loops: list[dict] = []  # every scf.for, with counts of what its own body holds
    stack: list[dict | None] = []  # open regions: a loop's dict, or None for other regions
    for raw in ttgir.splitlines():
        line = _LOC.sub("", raw).strip()
        if line.startswith("}"):
            if stack:
                stack.pop()
        loop = next((r for r in reversed(stack) if r is not None), None)
        if loop is not None:
            dot = _DOT.search(line)
            if dot:
                m, n, name = int(dot.group(1)), int(dot.group(2)), dot.group(3)
                warps, instr = layouts.get(name, ([0, 0], [16, 8]))
                loop["dots"] += 1
                loop["warps"].append("x".join(map(str, warps)))
                loop["dup"] += warps[0] * 16 > m or warps[1] * instr[1] > n
            if re.search(r"= ttg\.local_alloc %|ttg\.local_store ", line):
                loop["smem"] += 1
            if re.search(r"= tt\.trans %", line):
                loop["trans"] += 1
            if re.search(
                r"ttg\.async_copy_global_to_local|ttng\.async_tma_copy_global_to_local", line
            ):
                loop["async"] += 1
        if line.endswith("{"):
            if "scf.for" in line:
                new = {"dots": 0, "warps": [], "dup": 0, "smem": 0, "trans": 0, "async": 0}
                new["inner"] = True
                for outer in stack:
                    if outer is not None:
                        outer["inner"] = False
                loops.append(new)
                stack.append(new)
            else:
                stack.append(None)
    inner = [lp for lp in loops if lp["inner"]] or [
        {"dots": 0, "warps": [], "dup": 0, "smem": 0, "trans": 0, "async": 0}
    ]
    busiest = max(inner, key=lambda lp: (lp["dots"], lp["smem"]))
    return {
        "dots/iter": busiest["dots"],
        "dot warps": " ".join(busiest["warps"]) or "-",
        "dup dots": busiest["dup"],
        "smem/iter": busiest["smem"],
        "reg trans/iter": busiest["trans"],
        "async loads/iter": busiest["async"],
    }


def _groups() -> dict[str, str]:
    """Kernel group → module, from the op registry (every op with a Triton kernel)."""
    import kernels  # noqa: F401 - registers the ops
    from kernels.registry import kernel_groups

    return kernel_groups()


def compile_all(ops, arch: int, dtype, head_dims, first_only: bool, cases=None) -> list[dict]:
    """Build every kernel launch the host code of the kernel groups ``ops`` makes, for
    sm_``arch`` (only the cases labelled as in ``cases``, when given). Each group's module
    names its kernels (``COMPILE_KERNELS``) and the launches
    that build them (``compile_cases(dtype, head_dims)``, yielding (label, path, call))."""
    import importlib

    from triton.runtime.driver import driver

    previous = driver._active  # None on a machine without a GPU
    driver.set_active(_TargetOnlyDriver(arch))
    saved_env = {k: v for k, v in os.environ.items() if k.startswith("KERNELS_")}
    builds: list[dict] = []
    groups = _groups()
    try:
        for op in ops:
            module = importlib.import_module(groups[op])
            names = module.COMPILE_KERNELS  # kernel attribute → name in the table
            saved = {attr: getattr(module, attr) for attr in names}
            try:
                for attr, name in names.items():
                    setattr(module, attr, _CompileOnly(name, saved[attr], builds, first_only))
                for label, path, call in module.compile_cases(dtype, head_dims):
                    if cases and label not in cases:
                        continue
                    start = len(builds)
                    call()
                    for row in builds[start:]:
                        row.update(op=op, case=label, path=path)
            finally:
                for attr, kernel in saved.items():
                    setattr(module, attr, kernel)
    finally:
        driver.set_active(previous)
        for k in [k for k in os.environ if k.startswith("KERNELS_")]:  # the cases set some
            del os.environ[k]
        os.environ.update(saved_env)
    return builds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kernels.compile_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = _groups()
    parser.add_argument(
        "ops", nargs="*", metavar="OP", help=f"any of {', '.join(groups)} (default: attention)"
    )
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90")
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    parser.add_argument(
        "--head-dims", type=int, nargs="+", default=[64, 128], help="attention head dims"
    )
    parser.add_argument("--first", action="store_true", help="only each list's first tile")
    parser.add_argument(
        "--ttgir",
        action="store_true",
        help="add what each build's TTGIR says about its inner loops: products per "
        "iteration, their warp layouts, duplicated warps, register values stored to shared "
        "memory and register transposes per iteration (see ttgir_facts)",
    )
    parser.add_argument(
        "--case",
        action="append",
        default=None,
        metavar="LABEL",
        help='only the cases with this label (repeatable), e.g. "D=64 causal"',
    )
    parser.add_argument("--csv", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    args.ops = args.ops or ["attention"]
    unknown = sorted(set(args.ops) - set(groups))
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(groups)}")
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(
            "kernels.compile_check: unset TRITON_INTERPRET (it compiles, not interprets)",
            file=sys.stderr,
        )
        return 2
    import triton

    rows = compile_all(
        args.ops, args.arch, DTYPES[args.dtype], args.head_dims, args.first, args.case
    )
    if not rows:
        parser.error(f"no build matched --case {args.case}")
    columns = [
        "op",
        "kernel",
        "case",
        "path",
        "tile",
        "stages",
        "warps",
        "status",
        "shared",
        "regs",
        "spill_bytes",
    ]
    if args.ttgir:
        columns += list(TTGIR_COLUMNS)
    rows = [{c: r.get(c, "") for c in columns} for r in rows]
    print(
        f"sm_{args.arch} | {args.dtype} | triton {triton.__version__} | torch {torch.__version__}"
    )
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r[c]).rjust(widths[c]) for c in columns))
    failed = [r for r in rows if r["status"] != "ok"]
    too_big = [r for r in rows if r["status"] == "ok" and r["shared"] > HOPPER_SMEM]
    print(f"{len(rows)} builds: {len(failed)} failed, {len(too_big)} over the shared-memory limit")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

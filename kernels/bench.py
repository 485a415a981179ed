"""Kernel benchmarks: the Triton kernels against PyTorch, measured side by side in one run.

    python -m kernels.bench layernorm|gemm|attention|conv [--csv PATH] [--dtype bf16]
    python -m kernels.bench layernorm --smoke     tiny shapes, any device (checks the script)
    python -m kernels.bench attention --quick     a reduced table, for a short GPU window

Reports bandwidth (GB/s) or throughput (TFLOP/s), never milliseconds alone, with the ratio
to torch and to this GPU's device-to-device copy bandwidth measured in the same run. Each
shape's rows are printed and appended to the CSV as soon as they are measured.
Timing: ``triton.testing.do_bench`` (median) on CUDA; a median of wall-clock repeats on
the CPU, where figures only show that the code runs.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
LAYERNORM_SHAPES = [(16384, 768), (16384, 2048), (16384, 4096), (32768, 8192)]
SMOKE_LAYERNORM_SHAPES = [(64, 768), (16, 2048)]
# (M, N, K): 8192³ and the GPT-2 small shapes (B·T = 16384 tokens) of the PyTorch baselines
# in kernels/BENCHMARKS.md
GEMM_SHAPES = [
    (8192, 8192, 8192),
    (16384, 2304, 768),
    (16384, 3072, 768),
    (16384, 768, 3072),
    (16384, 50304, 768),
]
SMOKE_GEMM_SHAPES = [(64, 48, 32)]
# weight gradients dW = dZᵀ·X of those layers (M = outputs, N = inputs, K = 16384 tokens):
# few output tiles, the shapes split-K is for
GEMM_DW_SHAPES = [(3072, 768, 16384), (768, 3072, 16384), (2304, 768, 16384), (768, 768, 16384)]
SMOKE_GEMM_DW_SHAPES = [(48, 40, 96)]
# (D, T, causal) at B·T = 16384 tokens and H·D = 2048, as in those baselines
ATTENTION_SHAPES = [
    (d, t, c) for d in (64, 128) for t in (1024, 4096, 16384) for c in (True, False)
]
SMOKE_ATTENTION_SHAPES = [(32, 64, True)]
# --quick: T = 4k at both head dims, and D = 128 causal at 1k and 16k
QUICK_ATTENTION_SHAPES = [(d, 4096, c) for d in (64, 128) for c in (True, False)]
QUICK_ATTENTION_SHAPES += [(128, 1024, True), (128, 16384, True)]
QUICK_GEMM_SHAPES = GEMM_SHAPES[:3]
QUICK_GEMM_DW_SHAPES = GEMM_DW_SHAPES[:2]
# (B, T, C, K): a Mamba-like short convolution (C = 2·d_model for GPT-2 small and a 2048-wide
# model), at B·T = 16384 tokens
CONV_SHAPES = [(8, 2048, 1536, 4), (8, 2048, 4096, 4), (4, 4096, 4096, 8)]
SMOKE_CONV_SHAPES = [(2, 64, 48, 4)]


def timer(device: torch.device) -> Callable[..., float]:
    """ms per call of fn: median over repeats (grads of ``grad_to_none`` reset each call)."""
    if device.type == "cuda":
        import triton.testing

        def cuda_ms(fn, grad_to_none=None):
            return triton.testing.do_bench(
                fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median"
            )

        return cuda_ms

    def cpu_ms(fn, grad_to_none=None):
        times = []
        for _ in range(3):
            for t in grad_to_none or []:
                t.grad = None
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return cpu_ms


def copy_bandwidth_gbs(device: torch.device, ms: Callable, nbytes: int) -> float:
    """Device-to-device copy: bytes read + written per second."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (ms(lambda: dst.copy_(src)) * 1e-3) / 1e9


def _bench_layernorm_shape(M: int, N: int, dtype, device, ms) -> list[dict]:
    """Forward GB/s = 2·bytes(x)/t, backward GB/s = 3·bytes(x)/t (the convention of the
    baselines in kernels/BENCHMARKS.md)."""
    import torch.nn.functional as F

    from kernels import layernorm

    x = torch.randn(M, N, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(N, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(M, N, device=device, dtype=dtype)
    nbytes = x.numel() * x.element_size()
    impls = {
        "triton": lambda: layernorm.layer_norm(x, w, b, 1e-5),
        "torch": lambda: F.layer_norm(x, (N,), w, b, 1e-5),
    }
    return _bandwidth_rows("layernorm", f"{M}x{N}", impls, dy, [x, w, b], nbytes, ms)


def _bandwidth_rows(op, shape, impls, dy, leaves, nbytes, ms) -> list[dict]:
    """Each implementation's forward and backward timed, as GB/s: 2·bytes(x)/t forward (x
    read, y written), 3·bytes(x)/t backward (x and dy read, dx written)."""
    rows = []
    for impl, fwd in impls.items():
        t_fwd = ms(fwd)
        y = fwd()
        t_bwd = ms(lambda y=y: y.backward(dy, retain_graph=True), grad_to_none=leaves)
        rows.append(
            {
                "op": op,
                "shape": shape,
                "impl": impl,
                "fwd_GBps": 2 * nbytes / t_fwd / 1e6,
                "bwd_GBps": 3 * nbytes / t_bwd / 1e6,
            }
        )
    return rows


def _bench_conv_shape(B: int, T: int, C: int, K: int, dtype, device, ms) -> list[dict]:
    """The causal convolution with its fused silu against torch's depthwise ``F.conv1d``
    (transposes, padding and the silu as separate ops: the path ``kernels.causal_conv1d``
    takes on the torch backend). Forward GB/s = 2·bytes(x)/t (read x, write y); backward
    GB/s = 3·bytes(x)/t (read x and dy, write dx), the layer norm's convention."""
    import kernels
    from kernels import conv

    x = torch.randn(B, T, C, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(C, K, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(C, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(B, T, C, device=device, dtype=dtype)
    nbytes = x.numel() * x.element_size()

    def torch_path():
        with kernels.use_backend(causal_conv1d="torch"):
            return kernels.causal_conv1d(x, w, b, "silu")

    impls = {"triton": lambda: conv.causal_conv1d(x, w, b, "silu"), "torch": torch_path}
    return _bandwidth_rows("causal_conv1d", f"{B}x{T}x{C} K={K}", impls, dy, [x, w, b], nbytes, ms)


def _bench_gemm_dw_shape(M: int, N: int, K: int, dtype, device, ms) -> list[dict]:
    """A weight gradient: dZᵀ·X with dZ (K, M) and X (K, N) row-major, K the tokens, read
    through strides as the backward does (split along K when the output is small)."""
    from kernels import gemm

    dz = torch.randn(K, M, device=device, dtype=dtype)
    x = torch.randn(K, N, device=device, dtype=dtype)
    flops = 2.0 * M * N * K
    impls = {"triton": lambda: gemm.matmul(dz.t(), x), "torch": lambda: torch.matmul(dz.t(), x)}
    return [
        {
            "op": "gemm dW",
            "shape": f"{M}x{N}x{K}",
            "impl": impl,
            "TFLOPs": flops / (ms(fn) * 1e-3) / 1e12,
        }
        for impl, fn in impls.items()
    ]


def _bench_gemm_shape(M: int, N: int, K: int, dtype, device, ms) -> list[dict]:
    """TFLOP/s = 2·M·N·K / t: the plain product against torch.matmul (cuBLAS), and the fused
    bias + GELU (tanh) epilogue against torch.matmul followed by torch's bias add and GELU."""
    import torch.nn.functional as F

    from kernels import gemm

    x = torch.randn(M, K, device=device, dtype=dtype)
    w = torch.randn(N, K, device=device, dtype=dtype) / K**0.5
    b = torch.randn(N, device=device, dtype=dtype)
    flops = 2.0 * M * N * K
    cases = {
        "matmul": {
            "triton": lambda: gemm.matmul(x, w.t()),
            "torch": lambda: torch.matmul(x, w.t()),
        },
        "bias+gelu": {
            "triton": lambda: gemm.matmul(x, w.t(), b, "gelu_tanh"),
            "torch": lambda: F.gelu(torch.matmul(x, w.t()) + b, approximate="tanh"),
        },
    }
    rows = []
    for case, impls in cases.items():
        for impl, fn in impls.items():
            rows.append(
                {
                    "op": f"gemm {case}",
                    "shape": f"{M}x{N}x{K}",
                    "impl": impl,
                    "TFLOPs": flops / (ms(fn) * 1e-3) / 1e12,
                }
            )
    return rows


def _sdpa_backends(device) -> dict:
    from torch.nn.attention import SDPBackend

    if device.type != "cuda":
        return {"torch": SDPBackend.MATH}
    return {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "mem-efficient": SDPBackend.EFFICIENT_ATTENTION,
    }


def _bench_attention_shape(D, T, causal, dtype, device, ms, tokens, width) -> list[dict]:
    """TFLOP/s, forward 4·B·H·T²·D (halved when causal) and backward 2.5× that (the baselines'
    convention), for the Triton kernel and each SDPA backend PyTorch has on this device, at
    B·T = tokens and H·D = width."""
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    from kernels import flash_attention

    B, H = max(1, tokens // T), max(1, width // D)
    q, k, v = (
        torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
    )
    do = torch.randn(B, H, T, D, device=device, dtype=dtype)
    fwd_flops = 4.0 * B * H * T * T * D / (2 if causal else 1)
    # "triton" is the kernel as it runs by default (TMA descriptors on sm_90+); when that
    # is the TMA path, "triton-ptr" is the same kernel reading through pointers.
    impls = {"triton": (lambda: flash_attention.attention(q, k, v, causal), {})}
    if flash_attention.use_tma(q, k, v):
        impls["triton-ptr"] = impls["triton"][0], {"KERNELS_ATTENTION_TMA": "0"}
    for name, backend in _sdpa_backends(device).items():

        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        impls[name] = run, {}
    rows = []
    for impl, (fn, env) in impls.items():
        try:
            with mock.patch.dict(os.environ, env):
                t_fwd = ms(fn)
                o = fn()
                t_bwd = ms(lambda o=o: o.backward(do, retain_graph=True), grad_to_none=[q, k, v])
        except RuntimeError as e:  # a backend this GPU or build lacks
            print(f"attention D={D} T={T} {impl}: skipped ({str(e).splitlines()[0][:80]})")
            continue
        rows.append(
            {
                "op": f"attention D={D} {'causal' if causal else 'full'}",
                "shape": f"B{B} H{H} T{T}",
                "impl": impl,
                "fwd_TFLOPs": fwd_flops / (t_fwd * 1e-3) / 1e12,
                "bwd_TFLOPs": 2.5 * fwd_flops / (t_bwd * 1e-3) / 1e12,
            }
        )
    return rows


def with_ratios(
    rows: list[dict], metrics: list[str], copy_gbs: float | None = None, baseline: str = "torch"
) -> list[dict]:
    """Add each metric's ratio to the baseline implementation's figure for the same op and
    shape (and, for bandwidths, to the copy bandwidth)."""
    base = {(r["op"], r["shape"]): r for r in rows if r["impl"] == baseline}
    for r in rows:
        for m in metrics:
            ref = base.get((r["op"], r["shape"]))
            r[f"{m}_vs_{baseline}"] = r[m] / ref[m] if ref else float("nan")
            if copy_gbs:
                r[f"{m}_vs_copy"] = r[m] / copy_gbs
    return rows


def stream_table(groups, header: str, csv_path: str | None) -> list[dict]:
    """Print each group of rows as it is measured (columns as wide as their names, at least
    12) and append it to ``csv_path``; returns every row."""
    print(header, flush=True)
    rows: list[dict] = []
    writer = None
    f = None
    try:
        for group in groups:
            if not rows:
                columns = list(group[0])
                widths = {c: max(12, len(c)) for c in columns}
                print("  ".join(c.rjust(widths[c]) for c in columns), flush=True)
                if csv_path:
                    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
                    f = open(csv_path, "w", newline="")
                    writer = csv.DictWriter(f, fieldnames=columns)
                    writer.writeheader()
            for r in group:
                print("  ".join(_fmt(r[c]).rjust(widths[c]) for c in columns), flush=True)
            if writer:
                writer.writerows(group)
                f.flush()
            rows += group
    finally:
        if f:
            f.close()
    return rows


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def environment(device: torch.device) -> str:
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    return (
        f"{time.strftime('%Y-%m-%d')} | {name} | torch {torch.__version__} | "
        f"triton {triton.__version__}"
    )


_BW = ["fwd_GBps", "bwd_GBps"]


# Each suite returns (header, groups): groups yields the rows of one shape at a time, all
# implementations measured side by side, so main prints and saves them as they come and a
# run cut short by a time limit keeps every shape it finished.
def _layernorm_suite(dtype, device, ms, size: str, env: str):
    cuda = device.type == "cuda"
    copy_gbs = copy_bandwidth_gbs(device, ms, (1 << 30) if cuda else (1 << 20))
    shapes = SMOKE_LAYERNORM_SHAPES if size == "smoke" else LAYERNORM_SHAPES
    groups = (
        with_ratios(_bench_layernorm_shape(M, N, dtype, device, ms), _BW, copy_gbs)
        for M, N in shapes
    )
    return f"layernorm | {env} | copy {copy_gbs:.1f} GB/s", groups


def _gemm_suite(dtype, device, ms, size: str, env: str):
    shapes = {"smoke": SMOKE_GEMM_SHAPES, "quick": QUICK_GEMM_SHAPES}.get(size, GEMM_SHAPES)
    dw = {"smoke": SMOKE_GEMM_DW_SHAPES, "quick": QUICK_GEMM_DW_SHAPES}.get(size, GEMM_DW_SHAPES)
    groups = [
        *((_bench_gemm_shape, shape) for shape in shapes),
        *((_bench_gemm_dw_shape, shape) for shape in dw),
    ]
    rows = (with_ratios(bench(*shape, dtype, device, ms), ["TFLOPs"]) for bench, shape in groups)
    return f"gemm | {env}", rows


def _attention_suite(dtype, device, ms, size: str, env: str):
    shapes = {"smoke": SMOKE_ATTENTION_SHAPES, "quick": QUICK_ATTENTION_SHAPES}.get(
        size, ATTENTION_SHAPES
    )
    tokens, width = (128, 64) if size == "smoke" else (16384, 2048)
    metrics = ["fwd_TFLOPs", "bwd_TFLOPs"]
    baselines = ("flash", "cudnn") if device.type == "cuda" else ("torch",)

    def groups():
        for shape in shapes:
            rows = _bench_attention_shape(*shape, dtype, device, ms, tokens, width)
            for baseline in baselines:
                rows = with_ratios(rows, metrics, baseline=baseline)
            yield rows

    return f"attention | {env}", groups()


def _conv_suite(dtype, device, ms, size: str, env: str):
    cuda = device.type == "cuda"
    copy_gbs = copy_bandwidth_gbs(device, ms, (1 << 30) if cuda else (1 << 20))
    shapes = SMOKE_CONV_SHAPES if size == "smoke" else CONV_SHAPES
    groups = (with_ratios(_bench_conv_shape(*s, dtype, device, ms), _BW, copy_gbs) for s in shapes)
    return f"causal_conv1d (silu) | {env} | copy {copy_gbs:.1f} GB/s", groups


# One suite per kernel group of the op registry (kernels.registry.kernel_groups); a test
# checks that every group has one.
SUITES = {
    "layernorm": _layernorm_suite,
    "gemm": _gemm_suite,
    "attention": _attention_suite,
    "conv": _conv_suite,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kernels.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("op", choices=list(SUITES))
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    parser.add_argument("--csv", default=None, help="also write the table here")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes; runs without a GPU")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced table (attention: T = 4k, and D = 128 causal at 1k and 16k; gemm: "
        "8192³, two GPT shapes and two weight gradients), for a short GPU window",
    )
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print(
            "kernels.bench: needs a CUDA GPU (use --smoke to check the script on the CPU)",
            file=sys.stderr,
        )
        return 2
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported
    device = torch.device("cuda" if cuda else "cpu")
    dtype = DTYPES[args.dtype] if cuda else torch.float32
    ms = timer(device)
    dtype_name = next(k for k, v in DTYPES.items() if v == dtype)
    env = f"{dtype_name} | {environment(device)}"
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    header, groups = SUITES[args.op](dtype, device, ms, size, env)
    stream_table(groups, header, args.csv)
    if args.csv:
        print(f"csv: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

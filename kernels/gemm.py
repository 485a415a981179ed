"""Tiled matmul with a fused bias + activation epilogue in Triton, forward and backward:
``linear(x, weight, bias, activation) = activation(x Wᵀ + b)``.

One kernel, ``_matmul_kernel``, computes C = act(A·B + bias) for A (M, K) and B (K, N) of
any strides, in fp32 accumulators, bias and activation applied in registers before a
single store. Every product the op needs goes through it by passing strides, never a
transposed copy: the forward uses B = Wᵀ (W's strides swapped); the backward
dX = dZ·W and dW = dZᵀ·X (dZ's strides swapped). Programs walk the output tiles in groups
of GROUP_M rows so neighbouring programs share A and B tiles in L2 (Triton tutorial 03).

The pre-activation Z = x Wᵀ + b is **saved** by the forward (an extra store of the output's
size, only when a gradient is needed and the activation is not None), not recomputed:
recomputing it would cost the backward a third GEMM, while the store costs one write of
M·N elements — the same memory PyTorch's unfused F.linear + F.gelu keep for their backward.
dZ = dY ⊙ act′(Z) is one elementwise pass; dB is its column sum.

fp32 inputs use TF32 tensor cores on a GPU when PyTorch allows TF32 for matmuls
(``torch.backends.cuda.matmul.allow_tf32`` or a float32 matmul precision below
"highest"), and full fp32 otherwise. bf16 ``tl.dot`` is wrong under the CPU interpreter
(triton-lang/triton#11584), so bf16 is tested on a GPU only.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kernels import activations
from kernels._triton_utils import (
    ACT_BWD,
    ACT_FWD,
    TensorDescriptor,
    autotune_off,
    dot_precision,
    interpreting,
    limit_tuning,
    tma_aligned,
    tma_fallback,
    tma_wanted,
)
from kernels._triton_utils import tma_mode as _tma_mode

# Output tiles tried on a GPU, (BLOCK_M, BLOCK_N, BLOCK_K, num_stages, num_warps), the first
# being the one kept when tuning is off (KERNELS_AUTOTUNE=0): 128×256 with 8 warps led on
# the H200 Triton GEMM probe (kernels/BENCHMARKS.md); the smaller ones are for skinny
# shapes. Under the interpreter, which runs programs one by one on the CPU, one small tile.
GPU_TILES = [
    (128, 256, 64, 3, 8),
    (256, 128, 64, 3, 8),
    (128, 128, 64, 4, 8),
    (128, 128, 64, 4, 4),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
    (32, 64, 32, 4, 4),  # small M (decode-like shapes)
]
INTERPRETER_TILE = (32, 32, 32, 1, 4)
INTERPRETER_PROGRAMS = 3  # the persistent loop's program count on the CPU: tiles > programs


def _descriptor_blocks(nargs: dict) -> None:
    """Autotune pre-hook: give each TMA descriptor the block of the config about to run.
    A and B are read as stored: a transposed operand's descriptor is over its storage, so
    its block is the transposed tile. C and Z take the epilogue's sub-tile."""
    if TensorDescriptor is None or not isinstance(nargs.get("A"), TensorDescriptor):
        return
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["A"].block_shape = [bk, bm] if nargs["A_T"] else [bm, bk]
    nargs["B"].block_shape = [bn, bk] if nargs["B_T"] else [bk, bn]
    sub = [bm, bn // 2]  # the epilogue stores half a tile at a time
    for name in ("C", "Z"):
        if isinstance(nargs.get(name), TensorDescriptor):
            nargs[name].block_shape = sub


def _configs() -> list[triton.Config]:
    tiles = [INTERPRETER_TILE] if interpreting() else GPU_TILES
    if autotune_off():
        tiles = tiles[:1]
    return [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
            num_stages=s,
            num_warps=w,
            pre_hook=_descriptor_blocks,
        )
        for m, n, k, s, w in tiles
    ]


@triton.jit
def _operand(
    X,
    r0,
    c0,
    n_r,
    n_c,
    s_r,
    s_c,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    TRANS: tl.constexpr,
    TMA: tl.constexpr,
):
    """Rows [r0, r0 + BLOCK_R) × columns [c0, c0 + BLOCK_C) of a logical matrix, zero past
    its edges. Pointers: X with strides (s_r, s_c). TMA: X is a descriptor over the
    matrix as stored, row-major, or (TRANS) over its transpose; a transposed tile is read
    as stored and handed to the product as a transposed view, which the tensor cores take
    from shared memory as they are."""
    if TMA:
        if TRANS:
            tile = tl.trans(X.load([c0, r0]))
        else:
            tile = X.load([r0, c0])
    else:
        offs_r = r0 + tl.arange(0, BLOCK_R)
        offs_c = c0 + tl.arange(0, BLOCK_C)
        tile = tl.load(
            X + offs_r.to(tl.int64)[:, None] * s_r + offs_c.to(tl.int64)[None, :] * s_c,
            mask=(offs_r[:, None] < n_r) & (offs_c[None, :] < n_c),
            other=0.0,
        )
    return tile


@triton.jit
def _epilogue(
    acc,
    C,
    Bias,
    Z,
    m0,
    n0,
    M,
    N,
    stride_cm,
    stride_cn,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    STORE_Z: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Bias, the pre-activation's store, the activation and the output's store, on one
    (BLOCK_M, BLOCK_N) accumulator tile whose top-left element is (m0, n0)."""
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(Bias + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if TMA:  # the copy engine clips the tile at the matrix's edges
        if STORE_Z:
            Z.store([m0, n0], acc.to(Z.dtype))
        C.store([m0, n0], ACTIVATION(acc).to(C.dtype))
    else:
        offs = offs_m.to(tl.int64)[:, None] * stride_cm + offs_n.to(tl.int64)[None, :] * stride_cn
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        if STORE_Z:
            tl.store(Z + offs, acc.to(Z.dtype.element_ty), mask=mask)
        tl.store(C + offs, ACTIVATION(acc).to(C.dtype.element_ty), mask=mask)


# Tuned per power-of-two bucket of M, N and K (arguments the kernel takes only for this
# key): the token count changes M (and K, for dW) with every new length when generating
# token by token, and retuning for each would cost seconds a step.
@triton.autotune(
    configs=_configs(),
    key=[
        "M_BUCKET",
        "N_BUCKET",
        "K_BUCKET",
        "HAS_BIAS",
        "ACTIVATION",
        "STORE_Z",
        "SPLIT_K",
        "TMA",
        "A_T",
        "B_T",
    ],
    prune_configs_by={"early_config_prune": limit_tuning},
)
@triton.jit(do_not_specialize=["M_BUCKET", "N_BUCKET", "K_BUCKET"])
def _matmul_kernel(
    A,  # (M, K): a pointer (strides stride_am, stride_ak), or with TMA a descriptor
    B,  # (K, N): likewise (stride_bk, stride_bn)
    C,  # (M, N) out; with SPLIT_K > 1 the fp32 workspace (SPLIT_K, M, N) instead
    Bias,  # (N,) (unused without HAS_BIAS)
    Z,  # (M, N) out: the pre-activation, C's strides (unused without STORE_Z)
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    M_BUCKET,  # next powers of two of M, N, K: the autotune key, unused in the body
    N_BUCKET,
    K_BUCKET,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,  # a Triton device function z -> act(z) (kernels.activations)
    STORE_Z: tl.constexpr,
    PRECISION: tl.constexpr,  # "ieee" or "tf32" (fp32 inputs only)
    SPLIT_K: tl.constexpr,  # > 1: K cut in SPLIT_K ranges, partial sums to the workspace
    TMA: tl.constexpr,
    A_T: tl.constexpr,  # with TMA: A's descriptor is over Aᵀ (A stored column-major)
    B_T: tl.constexpr,  # with TMA: B's descriptor is over Bᵀ (e.g. B = Wᵀ, W row-major)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    tiles_mn = num_pid_m * num_pid_n
    k_tiles = tl.cdiv(K, BLOCK_K)
    k_per_split = tl.cdiv(k_tiles, SPLIT_K)
    # Persistent: a fixed number of programs (one per SM on a GPU) walk the output tiles,
    # as in Triton's persistent-matmul tutorial, so no wave of launches leaves SMs idle.
    for tile in tl.range(tl.program_id(0), tiles_mn * SPLIT_K, tl.num_programs(0)):
        split = tile // tiles_mn
        t = tile % tiles_mn
        # grouped order: GROUP_M rows of tiles side by side share A and B in L2 (tutorial 03)
        group_size = GROUP_M * num_pid_n
        first_m = (t // group_size) * GROUP_M
        group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
        m0 = (first_m + (t % group_size) % group_m) * BLOCK_M
        n0 = ((t % group_size) // group_m) * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        k_lo = split * k_per_split
        for kt in range(k_lo, tl.minimum(k_lo + k_per_split, k_tiles)):
            k0 = kt * BLOCK_K
            a = _operand(A, m0, k0, M, K, stride_am, stride_ak, BLOCK_M, BLOCK_K, A_T, TMA)
            b = _operand(B, k0, n0, K, N, stride_bk, stride_bn, BLOCK_K, BLOCK_N, B_T, TMA)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if SPLIT_K > 1:  # fp32 partial sums; the host adds the SPLIT_K slices
            offs_m = m0 + tl.arange(0, BLOCK_M)
            offs_n = n0 + tl.arange(0, BLOCK_N)
            part = C + split.to(tl.int64) * M * N
            tl.store(
                part + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :],
                acc,
                mask=(offs_m[:, None] < M) & (offs_n[None, :] < N),
            )
        else:  # the epilogue in two halves of BLOCK_N // 2 columns: half the registers live
            halves = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            left, right = tl.split(halves)
            _epilogue(
                left,
                C,
                Bias,
                Z,
                m0,
                n0,
                M,
                N,
                stride_cm,
                stride_cn,
                HAS_BIAS,
                ACTIVATION,
                STORE_Z,
                TMA,
                BLOCK_M,
                BLOCK_N // 2,
            )
            _epilogue(
                right,
                C,
                Bias,
                Z,
                m0,
                n0 + BLOCK_N // 2,
                M,
                N,
                stride_cm,
                stride_cn,
                HAS_BIAS,
                ACTIVATION,
                STORE_Z,
                TMA,
                BLOCK_M,
                BLOCK_N // 2,
            )


# dZ = dY ⊙ act′(Z), act′ from the activation's registry entry (kernels.activations,
# where each derivative is written out).
@triton.jit
def _activation_bwd_kernel(
    DY,  # (n,) contiguous upstream gradient
    Z,  # (n,) contiguous pre-activation
    DZ,  # (n,) out
    n,
    ACTIVATION_BWD: tl.constexpr,  # a Triton device function (z, dy) -> dy·act′(z)
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
    dz = ACTIVATION_BWD(z, dy)
    tl.store(DZ + offs, dz.to(DZ.dtype.element_ty), mask=mask)


SPLIT_K_MAX = 8


def tma_mode() -> str:
    """``KERNELS_GEMM_TMA``: auto (default: TMA where the GPU, the strides and the
    alignment allow it; pointers otherwise, and from then on should a TMA build fail) | 1
    (TMA wherever the strides allow, the interpreter included; errors raise) | 0 (never)."""
    return _tma_mode("KERNELS_GEMM_TMA")


# Why the TMA path was turned off for this process ("auto" mode, after a failed build).
_tma_broken: str | None = None


def _layout(x: torch.Tensor) -> bool | None:
    """How a 2-D operand can be read through a descriptor: False (row-major storage), True
    (column-major: a descriptor over its transpose), None (neither, or misaligned)."""
    if x.stride(1) == 1 and tma_aligned(x):
        return False
    if x.stride(0) == 1 and tma_aligned(x.t()):
        return True
    return None


def _programs(device: torch.device) -> int:
    """Programs of the persistent launch: one per SM on a GPU; a few on the CPU, fewer
    than the tiles of all but the smallest products, so the interpreter walks the loop."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_PROGRAMS


def split_k(M: int, N: int, K: int, programs: int) -> int:
    """K ranges a plain product is cut into. ``KERNELS_GEMM_SPLIT_K`` = auto (default) or a
    count. auto: when the output has fewer tiles of the default shape (GPU_TILES[0],
    128×256) than there are programs (the weight gradients dW = dZᵀ·X, whose K is the
    token count, have 72 of them for a 3072×768 layer where an H200 has 132 SMs), enough
    ranges to fill them, at most SPLIT_K_MAX, each at least 8 k-steps of 64."""
    setting = os.environ.get("KERNELS_GEMM_SPLIT_K", "auto").strip().lower()
    if setting != "auto":
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(f"KERNELS_GEMM_SPLIT_K must be auto or a count >= 1, got {setting!r}")
        return int(setting)
    tiles = triton.cdiv(M, GPU_TILES[0][0]) * triton.cdiv(N, GPU_TILES[0][1])
    if tiles >= programs:
        return 1
    return max(1, min(SPLIT_K_MAX, triton.cdiv(programs, tiles), K // 512))


def _use_tma(a, b, out) -> tuple[bool, bool | None, bool | None]:
    """Whether to read through descriptors, and each operand's layout for them."""
    if not tma_wanted("KERNELS_GEMM_TMA", _tma_broken, a):
        return False, None, None
    a_t, b_t = _layout(a), _layout(b)
    ok = a_t is not None and b_t is not None and all(tma_aligned(t) for t in out)
    return ok, a_t, b_t


def _desc(t: torch.Tensor, transposed: bool = False):
    """A 2-D descriptor over t's storage (over tᵀ when ``transposed``); the autotune
    pre-hook sets its block."""
    t = t.t() if transposed else t
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [16, 16])


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    store_z: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """act(a·b + bias) for a (M, K), b (K, N) of any strides; returns (C, Z) with Z the
    pre-activation when ``store_z`` (else None). C and Z are (M, N) contiguous, a's dtype.
    A plain product (no bias, no activation) whose output has too few tiles to fill the
    GPU is split along K (``split_k``), its fp32 partial sums added in a second pass."""
    global _tma_broken
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), dtype=a.dtype, device=a.device)
    z = torch.empty_like(c) if store_z else c
    programs = _programs(a.device)
    plain = bias is None and activation is None and not store_z
    splits = split_k(M, N, K, programs) if plain else 1
    out = torch.empty((splits, M, N), dtype=torch.float32, device=a.device) if splits > 1 else c

    def grid(meta):
        tiles = triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]) * splits
        return (min(programs, tiles),)

    def launch(tma: bool, a_t, b_t):
        if tma:
            operands = (_desc(a, a_t), _desc(b, b_t))
            outputs = (out, z) if splits > 1 else (_desc(c), _desc(z))
        else:
            operands, outputs = (a, b), (out, z)
        _matmul_kernel[grid](
            *operands,
            outputs[0],
            bias if bias is not None else c,
            outputs[1],
            M,
            N,
            K,
            a.stride(0),
            a.stride(1),
            b.stride(0),
            b.stride(1),
            c.stride(0),
            c.stride(1),
            *(triton.next_power_of_2(x) for x in (M, N, K)),
            HAS_BIAS=bias is not None,
            ACTIVATION=ACT_FWD[activation],
            STORE_Z=store_z,
            PRECISION=dot_precision(a.dtype, a.device),
            SPLIT_K=splits,
            TMA=tma,
            A_T=bool(a_t),
            B_T=bool(b_t),
        )

    tma, a_t, b_t = _use_tma(a, b, (c, z))
    if tma:
        try:
            launch(True, a_t, b_t)
        except Exception as e:  # noqa: BLE001 - any build failure: compiler, PTX, driver
            if tma_mode() == "1":
                raise
            _tma_broken = tma_fallback("gemm", "KERNELS_GEMM_TMA", e, stacklevel=2)
            tma = False
    if not tma:
        launch(False, None, None)
    if splits > 1:  # the partial sums, added in fp32 and written in c's dtype
        if a.dtype == torch.float32:
            torch.sum(out, dim=0, out=c)
        else:
            c.copy_(out.sum(0))
    return c, (z if store_z else None)


def activation_bwd(dy: torch.Tensor, z: torch.Tensor, activation: str) -> torch.Tensor:
    """dY ⊙ act′(Z), shaped like z."""
    dy = dy.contiguous()
    dz = torch.empty_like(z)
    n = z.numel()
    BLOCK = 1024
    _activation_bwd_kernel[(triton.cdiv(n, BLOCK),)](
        dy, z, dz, n, ACTIVATION_BWD=ACT_BWD[activation], BLOCK=BLOCK
    )
    return dz


class LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        x2 = x.reshape(-1, x.shape[-1])  # (M, K); a view where strides allow, any strides work
        needs_z = activation is not None and any(ctx.needs_input_grad[:3])
        y, z = matmul(x2, weight.t(), bias, activation, store_z=needs_z)
        ctx.save_for_backward(x2, weight, z)
        ctx.activation, ctx.has_bias, ctx.x_shape = activation, bias is not None, x.shape
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, weight, z = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])
        dz = dy2 if ctx.activation is None else activation_bwd(dy2, z, ctx.activation)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = matmul(dz, weight)[0].view(ctx.x_shape)  # (M, N)·(N, K)
        if ctx.needs_input_grad[1]:
            dw = matmul(dz.t(), x2)[0]  # (N, M)·(M, K), dZᵀ through strides
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dz.sum(0, dtype=torch.float32).to(weight.dtype)
        return dx, dw, db, None


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """activation(x Wᵀ + b) in Triton. x: (..., K); weight: (N, K); bias: (N,) or None."""
    return LinearFunction.apply(x, weight, bias, activation)


# -- for kernels.compile_check: the kernels to build and the launches that build them -----
COMPILE_KERNELS = {"_matmul_kernel": "matmul", "_activation_bwd_kernel": "activation bwd"}


def compile_cases(dtype: torch.dtype, head_dims=None):
    """On both read paths (TMA descriptors, pointers): the linear layer's three products
    (x·Wᵀ with bias and each registered activation, dZ·W, and dZᵀ·X split along K, as
    the weight gradient is on a GPU) and the activation backward, at a GPT-2 small MLP
    shape. Yields (label, read path, call)."""
    M, N, K = 4096, 3072, 768
    for path in ("tma", "pointers"):
        for act in activations.ACTIVATIONS:

            def call(act=act, path=path):
                os.environ["KERNELS_GEMM_TMA"] = "1" if path == "tma" else "0"
                x, w = torch.empty(M, K, dtype=dtype), torch.empty(N, K, dtype=dtype)
                b = torch.empty(N, dtype=dtype)
                _, z = matmul(x, w.t(), b, act, store_z=act is not None)
                dz = torch.empty(M, N, dtype=dtype)
                matmul(dz, w)
                os.environ["KERNELS_GEMM_SPLIT_K"] = "2"
                matmul(dz.t(), x)
                os.environ.pop("KERNELS_GEMM_SPLIT_K")
                if act is not None:
                    activation_bwd(dz, z, act)

            yield f"{M}x{N}x{K} bias {act or 'no act'}", path, call

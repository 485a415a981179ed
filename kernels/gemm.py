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

import torch
import triton
import triton.language as tl

from kernels import activations
from kernels._triton_utils import ACT_BWD, ACT_FWD, autotune_off, dot_precision, interpreting


def _configs() -> list[triton.Config]:
    """Autotuned tiles: Hopper-sized ones on a GPU (128×256 with 8 warps led on the H200
    Triton GEMM probe recorded in kernels/BENCHMARKS.md); one small tile under the interpreter, which runs programs one
    by one on the CPU and would otherwise time every configuration. ``KERNELS_AUTOTUNE=0``
    at import takes the first tile."""
    if interpreting():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4})]
    shapes = [
        (128, 256, 64, 3, 8),
        (256, 128, 64, 3, 8),
        (128, 128, 64, 4, 8),
        (128, 128, 64, 4, 4),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 64, 64, 4, 4),
        (32, 64, 32, 4, 4),  # small M (decode-like shapes)
    ]
    if autotune_off():
        shapes = shapes[:1]
    return [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w
        )
        for m, n, k, s, w in shapes
    ]


# Tuned per power-of-two bucket of M, N and K (arguments the kernel takes only for this
# key): the token count changes M (and K, for dW) with every new length when generating
# token by token, and retuning for each would cost seconds a step.
@triton.autotune(
    configs=_configs(),
    key=["M_BUCKET", "N_BUCKET", "K_BUCKET", "HAS_BIAS", "ACTIVATION", "STORE_Z"],
)
@triton.jit(do_not_specialize=["M_BUCKET", "N_BUCKET", "K_BUCKET"])
def _matmul_kernel(
    A,  # (M, K), strides (stride_am, stride_ak)
    B,  # (K, N), strides (stride_bk, stride_bn)
    C,  # (M, N) out, strides (stride_cm, stride_cn)
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
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    group_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % group_m
    pid_n = (pid % group_size) // group_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = A + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B + offs_k[:, None] * stride_bk + offs_n.to(tl.int64)[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        acc += tl.load(Bias + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    c_offs = offs_m.to(tl.int64)[:, None] * stride_cm + offs_n.to(tl.int64)[None, :] * stride_cn
    mask = mask_m[:, None] & mask_n[None, :]
    if STORE_Z:
        tl.store(Z + c_offs, acc.to(Z.dtype.element_ty), mask=mask)
    acc = ACTIVATION(acc)
    tl.store(C + c_offs, acc.to(C.dtype.element_ty), mask=mask)


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


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    store_z: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """act(a·b + bias) for a (M, K), b (K, N) of any strides; returns (C, Z) with Z the
    pre-activation when ``store_z`` (else None). C and Z are (M, N) contiguous, a's dtype."""
    M, K = a.shape
    N = b.shape[1]
    c = torch.empty((M, N), dtype=a.dtype, device=a.device)
    z = torch.empty_like(c) if store_z else c

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _matmul_kernel[grid](
        a,
        b,
        c,
        bias if bias is not None else c,
        z,
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
    )
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
    """The linear layer's three products (x·Wᵀ with bias and each registered activation,
    dZ·W, dZᵀ·X through strides) and the activation backward, at a GPT-2 small MLP shape.
    Yields (label, read path, call)."""
    M, N, K = 4096, 3072, 768
    for act in activations.ACTIVATIONS:

        def call(act=act):
            x, w = torch.empty(M, K, dtype=dtype), torch.empty(N, K, dtype=dtype)
            _, z = matmul(x, w.t(), torch.empty(N, dtype=dtype), act, store_z=act is not None)
            dz = torch.empty(M, N, dtype=dtype)
            matmul(dz, w)
            matmul(dz.t(), x)
            if act is not None:
                activation_bwd(dz, z, act)

        yield f"{M}x{N}x{K} bias {act or 'no act'}", "pointers", call

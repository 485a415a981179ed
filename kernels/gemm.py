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

from kernels._triton_utils import dot_precision, interpreting

ACTIVATION_IDS = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}


def _configs() -> list[triton.Config]:
    """Autotuned tiles: Hopper-sized ones on a GPU (128×256 with 8 warps led on the H200
    probe in the anchors); one small tile under the interpreter, which runs programs one
    by one on the CPU and would otherwise time every configuration."""
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
    return [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w
        )
        for m, n, k, s, w in shapes
    ]


@triton.jit
def _activation(z, ACTIVATION: tl.constexpr):
    if ACTIVATION == 1:  # relu
        z = tl.maximum(z, 0.0)
    elif ACTIVATION == 2:  # gelu, exact: z·Φ(z)
        z = 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    elif ACTIVATION == 3:  # gelu, tanh approximation: 0.5·(1 + tanh(u)) = sigmoid(2u)
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        z = z * tl.sigmoid(2.0 * u)
    return z


# Tuned per power-of-two bucket of M, N and K (arguments the kernel takes only for this
# key): the token count changes M (and K, for dW) with every new length when generating
# token by token, and retuning for each would cost seconds a step.
@triton.autotune(
    configs=_configs(), key=["M_BUCKET", "N_BUCKET", "K_BUCKET", "HAS_BIAS", "ACTIVATION", "STORE_Z"]
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
    ACTIVATION: tl.constexpr,
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
    acc = _activation(acc, ACTIVATION)
    tl.store(C + c_offs, acc.to(C.dtype.element_ty), mask=mask)


# dZ = dY ⊙ act′(Z):
#   relu′(z) = [z > 0]
#   gelu′(z) = Φ(z) + z·φ(z),  Φ(z) = ½(1 + erf(z/√2)),  φ(z) = e^(−z²/2)/√(2π)
#   gelu_tanh′(z) = s + z·s(1 − s)·2u′,  s = sigmoid(2u),  u = √(2/π)(z + 0.044715 z³)
@triton.jit
def _activation_bwd_kernel(
    DY,  # (n,) contiguous upstream gradient
    Z,  # (n,) contiguous pre-activation
    DZ,  # (n,) out
    n,
    ACTIVATION: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
    if ACTIVATION == 1:
        dz = tl.where(z > 0.0, dy, 0.0)
    elif ACTIVATION == 2:
        cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
        pdf = tl.exp(-0.5 * z * z) * 0.3989422804014327
        dz = dy * (cdf + z * pdf)
    else:
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
        s = tl.sigmoid(2.0 * u)
        dz = dy * (s + z * s * (1.0 - s) * 2.0 * du)
    tl.store(DZ + offs, dz.to(DZ.dtype.element_ty), mask=mask)


def _precision(dtype: torch.dtype, device: torch.device) -> str:
    if dtype != torch.float32 or device.type != "cuda":
        return "ieee"
    tf32 = (
        torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    )
    return "tf32" if tf32 else "ieee"


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
    act = ACTIVATION_IDS[activation]

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _matmul_kernel[grid](
        a, b, c, bias if bias is not None else c, z, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        *(triton.next_power_of_2(x) for x in (M, N, K)),
        HAS_BIAS=bias is not None, ACTIVATION=act, STORE_Z=store_z,
        PRECISION=dot_precision(a.dtype, a.device),
    )  # fmt: skip
    return c, (z if store_z else None)


def activation_bwd(dy: torch.Tensor, z: torch.Tensor, activation: str) -> torch.Tensor:
    """dY ⊙ act′(Z), shaped like z."""
    dy = dy.contiguous()
    dz = torch.empty_like(z)
    n = z.numel()
    BLOCK = 1024
    _activation_bwd_kernel[(triton.cdiv(n, BLOCK),)](
        dy, z, dz, n, ACTIVATION=ACTIVATION_IDS[activation], BLOCK=BLOCK
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

"""Depthwise causal 1-D convolution over time in Triton, forward and backward.

    y[b, t, c] = act(z[b, t, c]),   z = bias[c] + Σ_k w[c, k] · x[b, t − K + 1 + k, c]

with x zero before t = 0: the short convolution of H3 (Fu et al. 2023) and Hyena, and of
the gated convolutional language model of Dauphin et al. (2017). The activation is any
entry of ``kernels.activations``, fused as in the GEMM's epilogue.

Layout: x (B, T, C) contiguous, channels innermost, so a tile of BLOCK_T positions ×
BLOCK_C channels reads whole rows of channels. Each of the K taps is the same tile shifted
back in time and is read again (from cache on a GPU) rather than staged: the op is
memory-bound, K is small (2–8), and every tap reads the same lines. K is a constexpr, so
the loop over taps unrolls (one build per kernel size).

Backward, with dz = dy ⊙ act′(z), z recomputed from x rather than stored:
    dx[b, s, c] = Σ_k w[c, k] · dz[b, s + K − 1 − k, c]      (dz zero past T)
    dw[c, k]    = Σ_{b,t} dz[b, t, c] · x[b, t − K + 1 + k, c]
    dbias[c]    = Σ_{b,t} dz[b, t, c]
One kernel computes dz (kept in fp32 when there is an activation; it is dy otherwise) and
the weight and bias gradients. Like the layer norm's backward, it avoids atomics: a grid
sized to the GPU, each program walking its share of the (batch, time tile) pairs for one
block of channels and writing one partial dw and dbias, summed on the host, so the same
inputs give the same bits. A second kernel computes dx from dz.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._triton_utils import ACT_BWD, ACT_FWD

TILE_ELEMENTS = 4096  # aim for this many outputs per program tile
MAX_BLOCK_C = 128


@triton.jit
def _taps(Xb, W, t, c, c_mask, T, C, K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """Σ_k w[c, k] · x[t − K + 1 + k, c] over a (BLOCK_T, BLOCK_C) tile, in fp32; Xb points
    at this batch element's x."""
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for k in tl.static_range(K):
        src = t - (K - 1) + k
        mask = ((src >= 0) & (src < T))[:, None] & c_mask[None, :]
        x = tl.load(Xb + src[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.load(W + c * K + k, mask=c_mask, other=0.0).to(tl.float32)
        acc += x * w[None, :]
    return acc


@triton.jit
def _conv_fwd_kernel(
    X,  # (B, T, C) input, contiguous
    W,  # (C, K) weight, contiguous
    Bias,  # (C,) (unused when HAS_BIAS is False)
    Y,  # (B, T, C) output
    T,
    C,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,  # a Triton device function z -> act(z)
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    base = tl.program_id(0).to(tl.int64) * T * C
    z = _taps(X + base, W, t, c, c_mask, T, C, K, BLOCK_T, BLOCK_C)
    if HAS_BIAS:
        z += tl.load(Bias + c, mask=c_mask, other=0.0).to(tl.float32)[None, :]
    mask = (t < T)[:, None] & c_mask[None, :]
    y = ACTIVATION(z)
    tl.store(Y + base + t[:, None] * C + c[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _conv_bwd_dz_dw_kernel(
    X,  # (B, T, C) forward input
    W,  # (C, K)
    Bias,  # (C,) (unused when HAS_BIAS is False)
    DY,  # (B, T, C) upstream gradient, contiguous
    DZ,  # (B, T, C) fp32 out: dy ⊙ act′(z) (unused when HAS_ACT is False)
    DW_part,  # (G, K, C) fp32 out: each program's partial dw
    DB_part,  # (G, C) fp32 out: each program's partial dbias (unused without a bias)
    B,
    T,
    C,
    K: tl.constexpr,
    K_POW2: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ACT: tl.constexpr,
    ACTIVATION_BWD: tl.constexpr,  # a Triton device function (z, dy) -> dy · act′(z)
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    taps = tl.arange(0, K_POW2)
    n_t = tl.cdiv(T, BLOCK_T)
    if HAS_BIAS:
        bias = tl.load(Bias + c, mask=c_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([K_POW2, BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    for tile in range(pid, B * n_t, n_programs):
        t = (tile % n_t) * BLOCK_T + tl.arange(0, BLOCK_T)
        base = (tile // n_t).to(tl.int64) * T * C
        mask = (t < T)[:, None] & c_mask[None, :]
        offs = base + t[:, None] * C + c[None, :]
        dz = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_ACT:
            z = _taps(X + base, W, t, c, c_mask, T, C, K, BLOCK_T, BLOCK_C)
            if HAS_BIAS:
                z += bias[None, :]
            dz = tl.where(mask, ACTIVATION_BWD(z, dz), 0.0)
            tl.store(DZ + offs, dz, mask=mask)
        db += tl.sum(dz, axis=0)
        for k in tl.static_range(K):
            src = t - (K - 1) + k
            x_mask = ((src >= 0) & (src < T))[:, None] & c_mask[None, :]
            x = tl.load(X + base + src[:, None] * C + c[None, :], mask=x_mask, other=0.0)
            part = tl.sum(dz * x.to(tl.float32), axis=0)
            dw += tl.where(taps[:, None] == k, part[None, :], 0.0)
    out = pid.to(tl.int64) * K * C + taps[:, None] * C + c[None, :]
    tl.store(DW_part + out, dw, mask=(taps[:, None] < K) & c_mask[None, :])
    if HAS_BIAS:
        tl.store(DB_part + pid.to(tl.int64) * C + c, db, mask=c_mask)


@triton.jit
def _conv_bwd_dx_kernel(
    DZ,  # (B, T, C) dz (fp32) or dy (without an activation), contiguous
    W,  # (C, K)
    DX,  # (B, T, C) out
    T,
    C,
    K: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    s = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    base = tl.program_id(0).to(tl.int64) * T * C
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    for k in tl.static_range(K):
        dst = s + (K - 1) - k  # the output position that tap k carries x[s] to
        mask = (dst < T)[:, None] & c_mask[None, :]
        dz = tl.load(DZ + base + dst[:, None] * C + c[None, :], mask=mask, other=0.0)
        w = tl.load(W + c * K + k, mask=c_mask, other=0.0).to(tl.float32)
        acc += dz.to(tl.float32) * w[None, :]
    mask = (s < T)[:, None] & c_mask[None, :]
    tl.store(DX + base + s[:, None] * C + c[None, :], acc.to(DX.dtype.element_ty), mask=mask)


def _blocks(T: int, C: int, elements: int = TILE_ELEMENTS) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_C): up to MAX_BLOCK_C channels, about ``elements`` per tile."""
    block_c = min(MAX_BLOCK_C, max(16, triton.next_power_of_2(C)))
    block_t = min(max(16, triton.next_power_of_2(T)), max(16, elements // block_c))
    return block_t, block_c


def _num_programs(n_tiles: int, n_channel_blocks: int, device: torch.device) -> int:
    """Programs per channel block in the dz/dw kernel: together a few per SM on a GPU, a
    handful under the CPU interpreter (which runs programs one after another)."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_tiles, 4 * sms // n_channel_blocks))
    return max(1, min(n_tiles, 4))


def conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias, activation: str | None):
    """Launch the forward on contiguous x (B, T, C), weight (C, K). Returns y."""
    B, T, C = x.shape
    K = weight.shape[1]
    y = torch.empty_like(x)
    block_t, block_c = _blocks(T, C)
    grid = (B, triton.cdiv(T, block_t), triton.cdiv(C, block_c))
    _conv_fwd_kernel[grid](
        x,
        weight,
        bias if bias is not None else weight,
        y,
        T,
        C,
        K=K,
        HAS_BIAS=bias is not None,
        ACTIVATION=ACT_FWD[activation],
        BLOCK_T=block_t,
        BLOCK_C=block_c,
        num_warps=8,
    )
    return y


def conv_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias, activation):
    """Launch the backward on contiguous dy and x. Returns dx, dw and dbias (None without
    a bias)."""
    B, T, C = x.shape
    K = weight.shape[1]
    # the dz/dw kernel holds a tile of dz, z and the K partial sums at once: half-size tiles
    # on 4 warps build for sm_90 without spills up to K = 8 (kernels/BENCHMARKS.md)
    block_t, block_c = _blocks(T, C, TILE_ELEMENTS // 2)
    n_c = triton.cdiv(C, block_c)
    G = _num_programs(B * triton.cdiv(T, block_t), n_c, x.device)
    has_act = activation is not None
    dz = torch.empty((B, T, C), dtype=torch.float32, device=x.device) if has_act else dy
    dw_part = torch.empty((G, K, C), dtype=torch.float32, device=x.device)
    db_part = (
        torch.empty((G, C), dtype=torch.float32, device=x.device) if bias is not None else dw_part
    )
    _conv_bwd_dz_dw_kernel[(G, n_c)](
        x,
        weight,
        bias if bias is not None else weight,
        dy,
        dz,
        dw_part,
        db_part,
        B,
        T,
        C,
        K=K,
        K_POW2=triton.next_power_of_2(K),
        HAS_BIAS=bias is not None,
        HAS_ACT=has_act,
        ACTIVATION_BWD=ACT_BWD[activation],
        BLOCK_T=block_t,
        BLOCK_C=block_c,
        num_warps=4,
    )
    dx = torch.empty_like(x)
    block_t, block_c = _blocks(T, C)
    grid = (B, triton.cdiv(T, block_t), triton.cdiv(C, block_c))
    _conv_bwd_dx_kernel[grid](
        dz, weight, dx, T, C, K=K, BLOCK_T=block_t, BLOCK_C=block_c, num_warps=8
    )
    dw = dw_part.sum(0).t().to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dw, db


class CausalConv1dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        x, weight = x.contiguous(), weight.contiguous()
        y = conv_fwd(x, weight, bias, activation)
        ctx.save_for_backward(x, weight, bias)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        dx, dw, db = conv_bwd(dy.contiguous(), x, weight, bias, ctx.activation)
        return dx, dw, db, None


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """act(depthwise causal convolution of x (B, T, C) with weight (C, K) + bias), in Triton."""
    return CausalConv1dFunction.apply(x, weight, bias, activation)


# -- for kernels.compile_check: the kernels to build and the launches that build them -----
COMPILE_KERNELS = {
    "_conv_fwd_kernel": "forward",
    "_conv_bwd_dz_dw_kernel": "backward dz, dw",
    "_conv_bwd_dx_kernel": "backward dx",
}


def compile_cases(dtype: torch.dtype, head_dims=None):
    """Forward and backward at kernel sizes 4 and 8, with and without the fused silu, for a
    Mamba-like width (C = 2048) and a narrow one. Yields (label, read path, call)."""
    for C, K, activation in ((2048, 4, "silu"), (2048, 4, None), (768, 8, "silu")):

        def call(C=C, K=K, activation=activation):
            x, w = torch.empty(8, 2048, C, dtype=dtype), torch.empty(C, K, dtype=dtype)
            b = torch.empty(C, dtype=dtype)
            conv_fwd(x, w, b, activation)
            conv_bwd(x, x, w, b, activation)

        yield f"C={C} K={K} {activation or 'linear'}", "pointers", call

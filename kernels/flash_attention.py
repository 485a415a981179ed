"""Fused scaled-dot-product attention in Triton (FlashAttention-2 style), forward and
backward, never materialising the T×T matrix.

Forward (Dao 2023, algorithm 1): each program keeps one block of queries in registers and
streams K and V blocks past it with an online softmax in base 2 (exp2, the scale folded
into log2(e)·sm_scale). Causal masking is applied only on the blocks that straddle the
diagonal; blocks wholly below it run unmasked and blocks above it are never visited. The
log-sum-exp of each row (base 2) is saved for the backward.

Backward, deterministic, no atomics: a pre-pass computes delta = rowsum(dO ⊙ O); one
kernel holds a K/V block resident and loops over query blocks to accumulate dK and dV (and,
with grouped-query attention, over every query head sharing that K/V head); a second
kernel holds a query block and loops over K/V blocks for dQ.

Attention dropout is fused: Philox draws (one 32-bit word per head, query and key) from a
seed taken from PyTorch's generator, so ``torch.manual_seed`` makes it reproducible; the
backward redraws the same mask instead of storing it. Dropped probabilities still count
in the softmax's denominator (dropout acts on P, as in ``F.scaled_dot_product_attention``).

Inputs are (B, H, T, D) of any strides (the views a fused QKV projection gives after split
and transpose need no copy); k and v may have fewer heads than q (grouped-query attention,
Hkv dividing H). Head dims up to 128 that are multiples of 8; blocks are padded to a power
of two ≥ 16. fp32 (TF32 on a GPU when PyTorch allows it), fp16, bf16 (bf16 ``tl.dot`` is
wrong under the CPU interpreter, triton-lang/triton#11584: GPU only).

Two ways to read tiles, one kernel source: masked pointer loads (every GPU and the
interpreter), or TMA through host-side tensor descriptors on Hopper and later (sm_90+), one
4-D descriptor per (B, H, T, D) input so ragged T and padded D come back zero-filled by the
copy engine. ``KERNELS_ATTENTION_TMA`` = auto (default: TMA where the GPU and the strides
allow it, pointers otherwise, and pointers with a warning should a TMA build fail) | 1
(TMA wherever the strides allow, on any device, the interpreter included; errors raise) |
0 (never). On a GPU each kernel autotunes its tile shape over a short list (FWD_TUNING,
DKDV_TUNING, DQ_TUNING below; ``KERNELS_AUTOTUNE=0`` at import takes the first of each);
the interpreter runs one 64×64 tile, and a test runs every listed tile shape there too.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from kernels._triton_utils import (
    TensorDescriptor,
    autotune_off,
    dot_precision,
    interpreting,
    limit_tuning,
    tma_aligned,
    tma_capable,
    tma_fallback,
    tma_wanted,
)
from kernels._triton_utils import tma_mode as _tma_mode

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128
DQ_MODES = ("separate", "atomic")


@triton.jit
def _tile(
    X,
    b,
    h,
    row0,
    s_b,
    s_h,
    s_t,
    s_d,
    n_rows,
    D,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TMA: tl.constexpr,
):
    """Rows [row0, row0 + BLOCK_R) of head (b, h) of a (B, H, T, D) tensor as a
    (BLOCK_R, BLOCK_D) tile, zero past T and past D. X is a pointer, or with TMA a tensor
    descriptor with block [1, 1, BLOCK_R, BLOCK_D] (the strides are then unused)."""
    if TMA:
        tile = X.load([b, h, row0, 0]).reshape(BLOCK_R, BLOCK_D)
    else:
        offs_r = row0 + tl.arange(0, BLOCK_R)
        offs_d = tl.arange(0, BLOCK_D)
        base = X + b.to(tl.int64) * s_b + h.to(tl.int64) * s_h
        tile = tl.load(
            base + offs_r[:, None] * s_t + offs_d[None, :] * s_d,
            mask=(offs_r[:, None] < n_rows) & (offs_d[None, :] < D),
            other=0.0,
        )
    return tile


@triton.jit
def _keep(seed, bh, offs_m, start_n, p_drop, BLOCK_N: tl.constexpr):
    """Dropout's keep mask for queries offs_m × keys [start_n, start_n + BLOCK_N) of query
    head bh (= b·H + h). One Philox call per query and 4 consecutive keys, with counter
    (key // 4, query, head, 0): its four 32-bit words serve the four keys, so every kernel
    redraws the same mask, no counter wraps whatever B·H·T², and a fourth of the Philox
    work is done. Each word's top 24 bits give a uniform in [0, 1)."""
    tl.static_assert(BLOCK_N % 4 == 0)
    quads = start_n // 4 + tl.arange(0, BLOCK_N // 4)
    zero = (offs_m[:, None] * 0 + quads[None, :] * 0).to(tl.uint32)
    c0 = zero + quads[None, :].to(tl.uint32)
    c1 = zero + offs_m[:, None].to(tl.uint32)
    c2 = zero + bh.to(tl.uint32)
    r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, zero)
    # (M, N/4, 2, 2) → (M, N): key 4c + 2i + j takes word 2i + j of quad c
    r = tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (offs_m.shape[0], BLOCK_N))
    u = (r >> 8).to(tl.float32) * (1.0 / 16777216.0)
    return u >= p_drop


@triton.jit
def _fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    K,
    V,
    b,
    hk,
    bh,
    skb,
    skh,
    skt,
    skd,
    svb,
    svh,
    svt,
    svd,
    offs_m,
    lo,
    hi,
    T_K,
    D,
    qk_scale,
    seed,
    p_drop,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Online softmax over key blocks [lo, hi); MASKED blocks apply the causal and tail masks."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(K, b, hk, start_n, skb, skh, skt, skd, T_K, D, BLOCK_N, BLOCK_D, TMA)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # unscaled
        if MASKED:
            keep = offs_n[None, :] < T_K
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
        # qk_scale > 0, so max(s)·scale is the row max of the scaled scores, and the scale
        # rides in the exponent's multiply-add instead of a pass over the tile of its own
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        p = tl.math.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:  # the denominator keeps every probability; only P·V loses the dropped
            p = tl.where(_keep(seed, bh, offs_m, start_n, p_drop, BLOCK_N), p, 0.0)
        v = _tile(V, b, hk, start_n, svb, svh, svt, svd, T_K, D, BLOCK_N, BLOCK_D, TMA)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _query_block(CAUSAL: tl.constexpr):
    """This program's query block. Causal: the last block first, since it reads the most
    keys, so the longest programs start in the first wave and the short ones fill the tail
    (the launch order FlashAttention-2 and Triton's tutorial use for causal work)."""
    if CAUSAL:
        return tl.num_programs(0) - 1 - tl.program_id(0)
    return tl.program_id(0)


@triton.jit
def _key_blocks(pid_m, T_K, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For query block pid_m, the keys it reads in two loops: [0, lo) unmasked, [lo, hi)
    masked. Causal: the blocks below the diagonal unmasked, those straddling it masked,
    those above it never visited. Otherwise every key, only the ragged last block masked."""
    if CAUSAL:
        lo = (pid_m * BLOCK_M) // BLOCK_N * BLOCK_N
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T_K)
    else:
        lo = (T_K // BLOCK_N) * BLOCK_N
        hi = T_K
    return lo, hi


@triton.jit(do_not_specialize=["seed", "T_BUCKET"])  # fresh seeds, buckets: no recompiles
def _attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,  # q, o: (B, H, T, D); k, v: (B, Hkv, T, D); lse: (B, H, T) fp32, base 2
    sqb,
    sqh,
    sqt,
    sqd,
    skb,
    skh,
    skt,
    skd,
    svb,
    svh,
    svt,
    svd,
    sob,
    soh,
    sot,
    sod,
    H,
    H_KV,
    T_Q,
    T_K,
    T_BUCKET,
    D,
    qk_scale,
    seed,
    p_drop,
    drop_scale,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = _query_block(CAUSAL)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // (H // H_KV)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < T_Q
    q = _tile(Q, b, h, pid_m * BLOCK_M, sqb, sqh, sqt, sqd, T_Q, D, BLOCK_M, BLOCK_D, TMA)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = _key_blocks(pid_m, T_K, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        K,
        V,
        b,
        hk,
        pid_bh,
        skb,
        skh,
        skt,
        skd,
        svb,
        svh,
        svt,
        svd,
        offs_m,
        0,
        lo,
        T_K,
        D,
        qk_scale,
        seed,
        p_drop,
        False,
        CAUSAL,
        DROPOUT,
        TMA,
        BLOCK_N,
        BLOCK_D,
        PRECISION,
    )
    acc, l_i, m_i = _fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        K,
        V,
        b,
        hk,
        pid_bh,
        skb,
        skh,
        skt,
        skd,
        svb,
        svh,
        svt,
        svd,
        offs_m,
        lo,
        hi,
        T_K,
        D,
        qk_scale,
        seed,
        p_drop,
        True,
        CAUSAL,
        DROPOUT,
        TMA,
        BLOCK_N,
        BLOCK_D,
        PRECISION,
    )
    acc = acc / l_i[:, None]
    if DROPOUT:
        acc = acc * drop_scale
    tl.store(LSE + pid_bh.to(tl.int64) * T_Q + offs_m, m_i + tl.math.log2(l_i), mask=m_mask)
    o_base = O + b.to(tl.int64) * sob + h.to(tl.int64) * soh
    tl.store(
        o_base + offs_m[:, None] * sot + offs_d[None, :] * sod,
        acc.to(O.dtype.element_ty),
        mask=m_mask[:, None] & (offs_d[None, :] < D),
    )


@triton.jit
def _attn_bwd_delta_kernel(
    O,
    DO,
    Delta,  # o: (B, H, T, D) contiguous; do: any strides; delta: (B, H, T) fp32
    sdb,
    sdh,
    sdt,
    sdd,
    H,
    T,
    D,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < T) & (offs_d[None, :] < D)
    o = tl.load(
        O + pid_bh.to(tl.int64) * T * D + offs_m[:, None] * D + offs_d[None, :],
        mask=mask,
        other=0.0,
    ).to(tl.float32)
    b = pid_bh // H
    h = pid_bh % H
    do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh
    do = tl.load(do_base + offs_m[:, None] * sdt + offs_d[None, :] * sdd, mask=mask, other=0.0).to(
        tl.float32
    )
    tl.store(Delta + pid_bh.to(tl.int64) * T + offs_m, tl.sum(o * do, axis=1), mask=offs_m < T)


# Backward, with P = softmax(S), S = sm_scale·Q Kᵀ (masked), Z the keep mask, r = 1/(1 − p)
# (Z = 1, r = 1 without dropout), O = (P ⊙ Z·r) V:
#   dV = (P ⊙ Z·r)ᵀ dO,   dP = Z·r ⊙ dO Vᵀ,   dS = P ⊙ (dP − delta),  delta = rowsum(dO ⊙ O)
#   dQ = sm_scale · dS K,   dK = sm_scale · dSᵀ Q
# (delta = rowsum(P ⊙ dP) still equals rowsum(dO ⊙ O) with dropout.) P is rebuilt from the
# saved log-sum-exp: P = exp2(S·log2(e) − lse₂); Z is redrawn from the seed.
@triton.jit
def _dkdv_inner(
    dk,
    dv,
    k,
    v,
    Q,
    DO,
    DQ_ACC,
    b,
    h,
    bh,
    lse_base,
    delta_base,
    sqb,
    sqh,
    sqt,
    sqd,
    sdb,
    sdh,
    sdt,
    sdd,
    offs_n,
    start_n,
    lo,
    hi,
    T_Q,
    D,
    qk_scale,
    sm_scale,
    seed,
    p_drop,
    drop_scale,
    MASKED: tl.constexpr,
    DROPOUT: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Keys are the rows: every product is computed in the (BLOCK_N keys, BLOCK_M queries)
    orientation, Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ directly, so Pᵀ and dSᵀ, the left operands of
    dV += Pᵀ·dO and dK += dSᵀ·Q, come out of the products already transposed: no register
    transpose, no round trip through shared memory (Triton's fused-attention tutorial, its
    backward on Hopper). The transposes left are of the loaded Q and dO tiles, which the
    compiler takes as a different view of the tile in shared memory."""
    offs_d = tl.arange(0, BLOCK_D)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_mask = offs_m < T_Q
        q = _tile(Q, b, h, start_m, sqb, sqh, sqt, sqd, T_Q, D, BLOCK_M, BLOCK_D, TMA)
        do = _tile(DO, b, h, start_m, sdb, sdh, sdt, sdd, T_Q, D, BLOCK_M, BLOCK_D, TMA)
        lse = tl.load(lse_base + offs_m, mask=m_mask, other=0.0)
        delta = tl.load(delta_base + offs_m, mask=m_mask, other=0.0)
        st = tl.dot(k, tl.trans(q), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M)
        pt = tl.math.exp2(st * qk_scale - lse[None, :])  # the scale folded into one FMA
        if MASKED:
            pt = tl.where(offs_m[None, :] >= offs_n[:, None], pt, 0.0)
        pt = tl.where(m_mask[None, :], pt, 0.0)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        if DROPOUT:  # the mask is drawn query-major; its transpose is the one relayout left
            keep = tl.trans(_keep(seed, bh, offs_m, start_n, p_drop, BLOCK_N))
            dv = tl.dot(tl.where(keep, pt, 0.0).to(do.dtype), do, dv, input_precision=PRECISION)
            dpt = tl.where(keep, dpt * drop_scale, 0.0)
        else:
            dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(q.dtype), q, dk, input_precision=PRECISION)
        if ATOMIC_DQ:  # dQ += dS·K here, summed across key blocks in fp32 by atomics
            dq = tl.dot(tl.trans(dst).to(k.dtype), k, input_precision=PRECISION) * sm_scale
            dq_ptrs = DQ_ACC + bh.to(tl.int64) * T_Q * D + offs_m[:, None] * D + offs_d[None, :]
            tl.atomic_add(dq_ptrs, dq, mask=m_mask[:, None] & (offs_d[None, :] < D), sem="relaxed")
    return dk, dv


@triton.jit(do_not_specialize=["seed", "T_BUCKET"])  # fresh seeds, buckets: no recompiles
def _attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    Delta,
    DK,
    DV,  # dk, dv: (B, Hkv, T, D) contiguous
    DQ_ACC,  # with ATOMIC_DQ: (B, H, T, D) fp32, zeroed, dQ summed into it
    sqb,
    sqh,
    sqt,
    sqd,
    skb,
    skh,
    skt,
    skd,
    svb,
    svh,
    svt,
    svd,
    sdb,
    sdh,
    sdt,
    sdd,
    H,
    H_KV,
    T_Q,
    T_K,
    T_BUCKET,
    D,
    qk_scale,
    sm_scale,
    seed,
    p_drop,
    drop_scale,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b = pid_bhk // H_KV
    hk = pid_bhk % H_KV
    group = H // H_KV
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < T_K) & (offs_d[None, :] < D)
    k = _tile(K, b, hk, pid_n * BLOCK_N, skb, skh, skt, skd, T_K, D, BLOCK_N, BLOCK_D, TMA)
    v = _tile(V, b, hk, pid_n * BLOCK_N, svb, svh, svt, svd, T_K, D, BLOCK_N, BLOCK_D, TMA)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if CAUSAL:  # query blocks straddling the diagonal masked, the ones below unmasked
        lo = (pid_n * BLOCK_N) // BLOCK_M * BLOCK_M
        mid = tl.minimum(tl.cdiv((pid_n + 1) * BLOCK_N, BLOCK_M) * BLOCK_M, T_Q)
    else:
        lo = 0
        mid = 0
    for g in range(0, group):  # every query head that reads this K/V head
        h = hk * group + g
        bh = b * H + h
        row0 = bh.to(tl.int64) * T_Q
        dk, dv = _dkdv_inner(
            dk,
            dv,
            k,
            v,
            Q,
            DO,
            DQ_ACC,
            b,
            h,
            bh,
            LSE + row0,
            Delta + row0,
            sqb,
            sqh,
            sqt,
            sqd,
            sdb,
            sdh,
            sdt,
            sdd,
            offs_n,
            pid_n * BLOCK_N,
            lo,
            mid,
            T_Q,
            D,
            qk_scale,
            sm_scale,
            seed,
            p_drop,
            drop_scale,
            True,
            DROPOUT,
            ATOMIC_DQ,
            TMA,
            BLOCK_M,
            BLOCK_N,
            BLOCK_D,
            PRECISION,
        )
        dk, dv = _dkdv_inner(
            dk,
            dv,
            k,
            v,
            Q,
            DO,
            DQ_ACC,
            b,
            h,
            bh,
            LSE + row0,
            Delta + row0,
            sqb,
            sqh,
            sqt,
            sqd,
            sdb,
            sdh,
            sdt,
            sdd,
            offs_n,
            pid_n * BLOCK_N,
            mid,
            T_Q,
            T_Q,
            D,
            qk_scale,
            sm_scale,
            seed,
            p_drop,
            drop_scale,
            False,
            DROPOUT,
            ATOMIC_DQ,
            TMA,
            BLOCK_M,
            BLOCK_N,
            BLOCK_D,
            PRECISION,
        )
    if DROPOUT:
        dv = dv * drop_scale
    out = pid_bhk.to(tl.int64) * T_K * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_inner(
    dq,
    q,
    do,
    lse,
    delta,
    K,
    V,
    b,
    hk,
    bh,
    skb,
    skh,
    skt,
    skd,
    svb,
    svh,
    svt,
    svd,
    offs_m,
    lo,
    hi,
    T_K,
    D,
    qk_scale,
    seed,
    p_drop,
    drop_scale,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _tile(K, b, hk, start_n, skb, skh, skt, skd, T_K, D, BLOCK_N, BLOCK_D, TMA)
        v = _tile(V, b, hk, start_n, svb, svh, svt, svd, T_K, D, BLOCK_N, BLOCK_D, TMA)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.math.exp2(s * qk_scale - lse[:, None])
        if MASKED:
            keep = offs_n[None, :] < T_K
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if DROPOUT:
            dp = tl.where(_keep(seed, bh, offs_m, start_n, p_drop, BLOCK_N), dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit(do_not_specialize=["seed", "T_BUCKET"])  # fresh seeds, buckets: no recompiles
def _attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    LSE,
    Delta,
    DQ,  # dq: (B, H, T, D) contiguous
    sqb,
    sqh,
    sqt,
    sqd,
    skb,
    skh,
    skt,
    skd,
    svb,
    svh,
    svt,
    svd,
    sdb,
    sdh,
    sdt,
    sdd,
    H,
    H_KV,
    T_Q,
    T_K,
    T_BUCKET,
    D,
    qk_scale,
    sm_scale,
    seed,
    p_drop,
    drop_scale,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    TMA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_m = _query_block(CAUSAL)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // (H // H_KV)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < T_Q
    q = _tile(Q, b, h, pid_m * BLOCK_M, sqb, sqh, sqt, sqd, T_Q, D, BLOCK_M, BLOCK_D, TMA)
    do = _tile(DO, b, h, pid_m * BLOCK_M, sdb, sdh, sdt, sdd, T_Q, D, BLOCK_M, BLOCK_D, TMA)
    lse = tl.load(LSE + pid_bh.to(tl.int64) * T_Q + offs_m, mask=m_mask, other=0.0)
    delta = tl.load(Delta + pid_bh.to(tl.int64) * T_Q + offs_m, mask=m_mask, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = _key_blocks(pid_m, T_K, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_inner(
        dq,
        q,
        do,
        lse,
        delta,
        K,
        V,
        b,
        hk,
        pid_bh,
        skb,
        skh,
        skt,
        skd,
        svb,
        svh,
        svt,
        svd,
        offs_m,
        0,
        lo,
        T_K,
        D,
        qk_scale,
        seed,
        p_drop,
        drop_scale,
        False,
        CAUSAL,
        DROPOUT,
        TMA,
        BLOCK_N,
        BLOCK_D,
        PRECISION,
    )
    dq = _dq_inner(
        dq,
        q,
        do,
        lse,
        delta,
        K,
        V,
        b,
        hk,
        pid_bh,
        skb,
        skh,
        skt,
        skd,
        svb,
        svh,
        svt,
        svd,
        offs_m,
        lo,
        hi,
        T_K,
        D,
        qk_scale,
        seed,
        p_drop,
        drop_scale,
        True,
        CAUSAL,
        DROPOUT,
        TMA,
        BLOCK_N,
        BLOCK_D,
        PRECISION,
    )
    out = pid_bh.to(tl.int64) * T_Q * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(
        DQ + out,
        (dq * sm_scale).to(DQ.dtype.element_ty),
        mask=m_mask[:, None] & (offs_d[None, :] < D),
    )


@triton.jit(do_not_specialize=["seed"])  # a fresh seed each call: no recompiles
def _dropout_mask_kernel(
    OUT, seed, p_drop, H, T_Q, T_K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    for start_n in range(0, T_K, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = _keep(seed, pid_bh, offs_m, start_n, p_drop, BLOCK_N)
        tl.store(
            OUT + pid_bh.to(tl.int64) * T_Q * T_K + offs_m[:, None] * T_K + offs_n[None, :],
            keep.to(tl.int8),
            mask=(offs_m[:, None] < T_Q) & (offs_n[None, :] < T_K),
        )


def dropout_mask(seed: int, shape: tuple[int, int, int, int], p: float, device) -> torch.Tensor:
    """The keep mask (B, H, Tq, Tk), bool, that the kernels draw for ``seed`` and dropout
    probability ``p``: for tests and inspection (it materialises Tq×Tk per head)."""
    B, H, T_Q, T_K = shape
    out = torch.empty(shape, dtype=torch.int8, device=device)
    _dropout_mask_kernel[(triton.cdiv(T_Q, 64), B * H)](
        out, seed, p, H, T_Q, T_K, BLOCK_M=64, BLOCK_N=64
    )
    return out.bool()


# Tile shapes the GPU autotuner tries, (BLOCK_M, BLOCK_N, num_stages, num_warps[, widest
# head dim]), the first being the one used when tuning is off (KERNELS_AUTOTUNE=0);
# BLOCK_M counts queries, BLOCK_N keys; a fifth field keeps a tile to head dims up to it.
# Chosen from `python -m kernels.compile_check --ttgir` (sm_90, bf16, triton 3.6; the
# figures are in kernels/BENCHMARKS.md): an MMA layout gives each warp 16 rows of a
# product, so a tile needs at least 16 rows per warp or warps repeat each other's work (the
# dK/dV products have keys as rows, hence 128 keys on 8 warps); and every tile kept builds
# without register spills at the head dims it is kept for, dropout aside. Under the
# interpreter one 64×64 tile.
FWD_TUNING = [
    (128, 64, 3, 8),
    (128, 128, 3, 8),
    (256, 64, 3, 8, 64),
    (128, 64, 3, 4, 64),
    (128, 128, 2, 8),
    (64, 64, 3, 4),
]
DKDV_TUNING = [  # K/V resident (BLOCK_N), queries streamed (BLOCK_M)
    (32, 128, 3, 8),
    (16, 128, 3, 8),
    (64, 128, 2, 8, 64),
    (32, 64, 3, 4, 64),
]
DQ_TUNING = [  # queries resident (BLOCK_M), K/V streamed (BLOCK_N)
    (128, 64, 3, 8),
    (128, 32, 3, 8),
    (64, 64, 3, 4),
    (128, 128, 2, 8),
    (64, 128, 3, 4),
]
INTERPRETER_TILE = (64, 64, 1, 4)  # big tiles: the interpreter pays per op, not per element
DESCRIPTOR_ROWS = {"Q": "BLOCK_M", "DO": "BLOCK_M", "K": "BLOCK_N", "V": "BLOCK_N"}


def _descriptor_blocks(nargs: dict) -> None:
    """Autotune pre-hook: give each TMA descriptor the tile shape of the config about to
    run ([1, 1, rows, BLOCK_D]); pointer arguments are left alone."""
    for name, rows in DESCRIPTOR_ROWS.items():
        x = nargs.get(name)
        if TensorDescriptor is not None and isinstance(x, TensorDescriptor):
            x.block_shape = [1, 1, nargs[rows], nargs["BLOCK_D"]]


def _configs(tuning: list[tuple]) -> list:
    if interpreting():
        tuning = [INTERPRETER_TILE]
    elif autotune_off():
        tuning = tuning[:1]
    return [
        triton.Config(
            {"BLOCK_M": t[0], "BLOCK_N": t[1]},
            num_stages=t[2],
            num_warps=t[3],
            pre_hook=_descriptor_blocks,
        )
        for t in tuning
    ]


def _prune(tuning: list[tuple]):
    """An ``early_config_prune`` for a tuning list: no tile past the widest head dim its
    entry names, then ``limit_tuning`` (KERNELS_AUTOTUNE, KERNELS_AUTOTUNE_MAX)."""
    widest = {tuple(t[:4]): t[4] for t in tuning if len(t) > 4}

    def prune(configs, named_args, **kwargs):
        block_d = kwargs.get("BLOCK_D", 0)

        def fits(c):
            shape = (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, c.num_warps)
            return block_d <= widest.get(shape, block_d)

        return limit_tuning([c for c in configs if fits(c)] or configs[:1])

    return {"early_config_prune": prune}


# Tuned per power-of-two bucket of the sequence length (T_BUCKET, an argument the kernels
# take only for this key, so generating token by token, T growing by one a step, retunes
# log₂ T times, not T times), padded head dim, mask, dropout and read path (dtypes are part
# of every autotune key). Each kernel writes its outputs whole, so reruns are safe.
_TUNING_KEY = ["T_BUCKET", "BLOCK_D", "CAUSAL", "DROPOUT", "TMA"]


def _bucket(*lengths: int) -> int:
    return triton.next_power_of_2(max(lengths))


_attn_fwd = triton.autotune(
    _configs(FWD_TUNING), key=_TUNING_KEY, prune_configs_by=_prune(FWD_TUNING)
)(_attn_fwd_kernel)
_attn_bwd_dkdv = triton.autotune(  # tuning runs it once per tile: DQ_ACC zeroed after each
    _configs(DKDV_TUNING),
    key=_TUNING_KEY + ["ATOMIC_DQ"],
    prune_configs_by=_prune(DKDV_TUNING),
    reset_to_zero=["DQ_ACC"],
)(_attn_bwd_dkdv_kernel)
_attn_bwd_dq = triton.autotune(
    _configs(DQ_TUNING), key=_TUNING_KEY, prune_configs_by=_prune(DQ_TUNING)
)(_attn_bwd_dq_kernel)


# Why the TMA path was turned off for this process ("auto" mode, after a failed build).
_tma_broken: str | None = None


def dq_mode() -> str:
    """``KERNELS_ATTENTION_DQ``: "separate" (default: a kernel of its own computes dQ, with
    no atomics, so the backward is deterministic) or "atomic" (the dK/dV kernel adds each
    key block's share of dQ into an fp32 buffer with atomics: two products fewer per
    step, as FlashAttention-2 does, at the price of run-to-run rounding differences)."""
    mode = os.environ.get("KERNELS_ATTENTION_DQ", "separate").strip().lower()
    if mode not in DQ_MODES:
        raise ValueError(f"KERNELS_ATTENTION_DQ must be one of {DQ_MODES}, got {mode!r}")
    return mode


def tma_mode() -> str:
    return _tma_mode("KERNELS_ATTENTION_TMA")


_tma_capable = tma_capable  # a module attribute, so a test can stand in for a Hopper GPU


def use_tma(*tensors: torch.Tensor) -> bool:
    """Whether a launch on these inputs reads through tensor descriptors."""
    wanted = tma_wanted("KERNELS_ATTENTION_TMA", _tma_broken, tensors[0], _tma_capable)
    return wanted and tma_aligned(*tensors)


def _desc(t: torch.Tensor, block_d: int):
    """A 4-D descriptor over a (B, H, T, D) view; the pre-hook sets its row count."""
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, 16, block_d])


def _launch(kernel, grid, tensors: dict, tma: bool, block_d: int, *args, **kw):
    """Launch ``kernel`` with ``tensors`` (named as the kernel names them) passed as
    themselves or, with ``tma``, as descriptors. In "auto" mode a TMA launch that fails
    falls back to pointers for the rest of the process, with a warning naming the error."""
    global _tma_broken
    if tma:
        try:
            descs = [_desc(t, block_d) for t in tensors.values()]
            return kernel[grid](*descs, *args, BLOCK_D=block_d, TMA=True, **kw)
        except Exception as e:  # noqa: BLE001 - any build failure: compiler, PTX, driver
            if tma_mode() == "1":
                raise
            _tma_broken = tma_fallback("attention", "KERNELS_ATTENTION_TMA", e, stacklevel=3)
    return kernel[grid](*tensors.values(), *args, BLOCK_D=block_d, TMA=False, **kw)


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())


def check_supported(q: torch.Tensor, k: torch.Tensor, causal: bool) -> None:
    """What the Triton kernel supports beyond the common checks; ValueError otherwise."""
    D = q.shape[-1]
    if D % 8 != 0 or not 8 <= D <= MAX_HEAD_DIM:
        raise ValueError(
            f"attention: unsupported head dim D={D} for the triton backend; "
            f"it takes multiples of 8 up to {MAX_HEAD_DIM} (the torch backend takes any)"
        )
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(
            f"attention: causal attention on the triton backend needs as many queries as keys "
            f"(q has T={q.shape[2]}, k has T={k.shape[2]})"
        )


def _dropout_args(dropout_p: float, seed: int) -> tuple:
    if dropout_p == 0.0:
        return 0, 0.0, 1.0
    return seed, dropout_p, 1.0 / (1.0 - dropout_p)


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def attention_fwd(q, k, v, causal: bool, sm_scale: float, dropout_p: float = 0.0, seed: int = 0):
    """Launch the forward; returns o (B, H, T, D) contiguous and lse (B, H, T) fp32, base 2."""
    B, H, T_Q, D = q.shape
    H_KV, T_K = k.shape[1], k.shape[2]
    o = torch.empty((B, H, T_Q, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T_Q), dtype=torch.float32, device=q.device)

    def grid(meta):
        return triton.cdiv(T_Q, meta["BLOCK_M"]), B * H

    _launch(
        _attn_fwd,
        grid,
        {"Q": q, "K": k, "V": v},
        use_tma(q, k, v),
        _block_d(D),
        o,
        lse,
        *_strides(q),
        *_strides(k),
        *_strides(v),
        *_strides(o),
        H,
        H_KV,
        T_Q,
        T_K,
        _bucket(T_Q, T_K),
        D,
        sm_scale * LOG2E,
        *_dropout_args(dropout_p, seed),
        CAUSAL=causal,
        DROPOUT=dropout_p > 0,
        PRECISION=dot_precision(q.dtype, q.device),
    )
    return o, lse


def attention_bwd(do, q, k, v, o, lse, causal: bool, sm_scale: float, dropout_p=0.0, seed=0):
    """Launch the backward; returns dq, dk, dv shaped like q, k, v (contiguous)."""
    B, H, T_Q, D = q.shape
    H_KV, T_K = k.shape[1], k.shape[2]
    block_d = _block_d(D)
    delta = torch.empty((B, H, T_Q), dtype=torch.float32, device=q.device)
    _attn_bwd_delta_kernel[(triton.cdiv(T_Q, 64), B * H)](
        o, do, delta, *_strides(do), H, T_Q, D, BLOCK_M=64, BLOCK_D=block_d
    )
    dq = torch.empty((B, H, T_Q, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H_KV, T_K, D), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, H_KV, T_K, D), dtype=v.dtype, device=v.device)
    common = (
        *_strides(q),
        *_strides(k),
        *_strides(v),
        *_strides(do),
        H,
        H_KV,
        T_Q,
        T_K,
        _bucket(T_Q, T_K),
        D,
        sm_scale * LOG2E,
        sm_scale,
        *_dropout_args(dropout_p, seed),
    )
    flags = {
        "CAUSAL": causal,
        "DROPOUT": dropout_p > 0,
        "PRECISION": dot_precision(q.dtype, q.device),
    }
    tma = use_tma(q, k, v, do)
    qkvdo = {"Q": q, "K": k, "V": v, "DO": do}
    atomic = dq_mode() == "atomic"
    # atomic: dQ summed in fp32 by the dK/dV kernel (5 products a step, not 7; the sum's
    # order, so its last bits, varies from run to run)
    dq_acc = torch.zeros((B, H, T_Q, D), dtype=torch.float32, device=q.device) if atomic else dq

    def dkdv_grid(meta):  # one program per K/V block of each K/V head
        return triton.cdiv(T_K, meta["BLOCK_N"]), B * H_KV

    def dq_grid(meta):  # one program per query block of each query head
        return triton.cdiv(T_Q, meta["BLOCK_M"]), B * H

    _launch(
        _attn_bwd_dkdv,
        dkdv_grid,
        qkvdo,
        tma,
        block_d,
        lse,
        delta,
        dk,
        dv,
        dq_acc,
        *common,
        ATOMIC_DQ=atomic,
        **flags,
    )
    if atomic:
        return dq_acc.to(q.dtype), dk, dv
    _launch(_attn_bwd_dq, dq_grid, qkvdo, tma, block_d, lse, delta, dq, *common, **flags)
    return dq, dk, dv


def _draw_seed() -> int:
    """A Philox seed from PyTorch's default CPU generator (``torch.manual_seed`` fixes it)."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, dropout_p, seed):
        o, lse = attention_fwd(q, k, v, causal, sm_scale, dropout_p, seed)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale, ctx.dropout_p, ctx.seed = causal, sm_scale, dropout_p, seed
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = attention_bwd(
            do, q, k, v, o, lse, ctx.causal, ctx.sm_scale, ctx.dropout_p, ctx.seed
        )
        return dq, dk, dv, None, None, None, None


def attention(
    q,
    k,
    v,
    causal: bool = True,
    sm_scale: float | None = None,
    dropout_p: float = 0.0,
    seed: int | None = None,
) -> torch.Tensor:
    """softmax(q kᵀ · sm_scale, causal) v in Triton. q: (B, H, T, D); k, v: (B, Hkv, T, D).

    ``dropout_p`` drops attention probabilities (kept ones scaled by 1/(1 − p)); the mask
    comes from ``seed``, drawn from PyTorch's generator when None (``dropout_mask`` gives
    it back). Raises ValueError for a head dim this kernel does not take, or causal with
    Tq ≠ Tk; ``kernels.attention`` checks the rest (shapes, dtypes, dropout_p) first."""
    check_supported(q, k, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    if dropout_p > 0 and seed is None:
        seed = _draw_seed()
    return AttentionFunction.apply(q, k, v, causal, scale, float(dropout_p), seed or 0)


# -- for kernels.compile_check: the kernels to build and the launches that build them -----
COMPILE_KERNELS = {
    "_attn_fwd": "forward",
    "_attn_bwd_delta_kernel": "delta",
    "_attn_bwd_dkdv": "dk/dv",
    "_attn_bwd_dq": "dq",
}


def compile_cases(dtype: torch.dtype, head_dims=(64, 128)):
    """Forward and backward at T = 1024 for each head dim, both read paths: causal, full,
    causal with dropout, and causal with the atomic dQ path (its forward is the causal
    one). Yields (label, read path, call)."""
    variants = ((True, 0.0, "separate"), (False, 0.0, "separate"), (True, 0.1, "separate"))
    variants += ((True, 0.0, "atomic"),)
    for D in head_dims:
        for tma in ("1", "0"):
            for causal, dropout_p, dq in variants:

                def call(D=D, causal=causal, dropout_p=dropout_p, tma=tma, dq=dq):
                    os.environ["KERNELS_ATTENTION_TMA"] = tma
                    os.environ["KERNELS_ATTENTION_DQ"] = dq
                    q, k, v, o = (torch.empty(2, 4, 1024, D, dtype=dtype) for _ in range(4))
                    lse = torch.empty(2, 4, 1024)
                    if dq == "separate":
                        attention_fwd(q, k, v, causal, 0.125, dropout_p, seed=7)
                    attention_bwd(o.clone(), q, k, v, o, lse, causal, 0.125, dropout_p, 7)

                label = f"D={D} {'causal' if causal else 'full'}"
                label += " dropout" if dropout_p else ""
                label += " atomic-dq" if dq == "atomic" else ""
                yield label, "tma" if tma == "1" else "pointers", call

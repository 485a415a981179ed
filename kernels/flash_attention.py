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

Inputs are (B, H, T, D) of any strides (the views a fused QKV projection gives after split
and transpose need no copy); k and v may have fewer heads than q (grouped-query attention,
Hkv dividing H). Head dims up to 128 that are multiples of 8; blocks are padded to a power
of two ≥ 16 with masked loads. fp32 (TF32 on a GPU when PyTorch allows it), fp16, bf16
(bf16 ``tl.dot`` is wrong under the CPU interpreter, triton-lang/triton#11584: GPU only).

This is the portable path, which the interpreter runs too. Hopper-only features (TMA
descriptors, warp specialisation) are not used yet.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._triton_utils import dot_precision, interpreting

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 128


@triton.jit
def _fwd_inner(
    acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_kd, stride_vt, stride_vd,
    offs_m, offs_d, lo, hi, T_K, D, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Online softmax over key blocks [lo, hi); MASKED blocks apply the causal and tail masks."""
    d_mask = offs_d < D
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < T_K
        kt = tl.load(
            k_base + offs_n[None, :] * stride_kt + offs_d[:, None] * stride_kd,
            mask=d_mask[:, None] & n_mask[None, :],
            other=0.0,
        )  # (BLOCK_D, BLOCK_N)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        if MASKED:
            keep = n_mask[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(
            v_base + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd,
            mask=n_mask[:, None] & d_mask[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE,  # q, o: (B, H, T, D); k, v: (B, Hkv, T, D); lse: (B, H, T) fp32, base 2
    sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd, sob, soh, sot, sod,
    H, H_KV, T_Q, T_K, D, qk_scale,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // (H // H_KV)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < T_Q
    q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
    q = tl.load(
        q_base + offs_m[:, None] * sqt + offs_d[None, :] * sqd,
        mask=m_mask[:, None] & (offs_d[None, :] < D), other=0.0,
    )  # fmt: skip
    k_base = K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL:  # keys below the diagonal block unmasked, the diagonal blocks masked
        lo = (pid_m * BLOCK_M) // BLOCK_N * BLOCK_N
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T_K)
    else:  # every key; only the ragged last block masked
        lo = (T_K // BLOCK_N) * BLOCK_N
        hi = T_K
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, skt, skd, svt, svd, offs_m, offs_d, 0, lo, T_K, D,
        qk_scale, False, CAUSAL, BLOCK_N, PRECISION,
    )  # fmt: skip
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, skt, skd, svt, svd, offs_m, offs_d, lo, hi, T_K, D,
        qk_scale, True, CAUSAL, BLOCK_N, PRECISION,
    )  # fmt: skip
    acc = acc / l_i[:, None]
    tl.store(LSE + pid_bh.to(tl.int64) * T_Q + offs_m, m_i + tl.math.log2(l_i), mask=m_mask)
    o_base = O + b.to(tl.int64) * sob + h.to(tl.int64) * soh
    tl.store(
        o_base + offs_m[:, None] * sot + offs_d[None, :] * sod, acc.to(O.dtype.element_ty),
        mask=m_mask[:, None] & (offs_d[None, :] < D),
    )  # fmt: skip


@triton.jit
def _attn_bwd_delta_kernel(
    O, DO, Delta,  # o: (B, H, T, D) contiguous; do: any strides; delta: (B, H, T) fp32
    sdb, sdh, sdt, sdd, H, T, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < T) & (offs_d[None, :] < D)
    o = tl.load(O + pid_bh.to(tl.int64) * T * D + offs_m[:, None] * D + offs_d[None, :],
                mask=mask, other=0.0).to(tl.float32)  # fmt: skip
    b = pid_bh // H
    h = pid_bh % H
    do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh
    do = tl.load(do_base + offs_m[:, None] * sdt + offs_d[None, :] * sdd, mask=mask,
                 other=0.0).to(tl.float32)  # fmt: skip
    tl.store(Delta + pid_bh.to(tl.int64) * T + offs_m, tl.sum(o * do, axis=1), mask=offs_m < T)


# Backward, with P = softmax(S), S = sm_scale·Q Kᵀ (masked), O = P V:
#   dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ⊙ (dP − delta),  delta = rowsum(dO ⊙ O)
#   dQ = sm_scale · dS K,   dK = sm_scale · dSᵀ Q
# P is rebuilt from the saved log-sum-exp: P = exp2(S·log2(e) − lse₂).
@triton.jit
def _dkdv_inner(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base,
    sqt, sqd, sdt, sdd, offs_n, offs_d, lo, hi, T_Q, D, qk_scale,
    MASKED: tl.constexpr, BLOCK_M: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    d_mask = offs_d < D
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        m_mask = offs_m < T_Q
        mask = m_mask[:, None] & d_mask[None, :]
        q = tl.load(q_base + offs_m[:, None] * sqt + offs_d[None, :] * sqd, mask=mask, other=0.0)
        do = tl.load(do_base + offs_m[:, None] * sdt + offs_d[None, :] * sdd, mask=mask, other=0.0)
        lse = tl.load(lse_base + offs_m, mask=m_mask, other=0.0)
        delta = tl.load(delta_base + offs_m, mask=m_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # (BLOCK_M, BLOCK_N)
        p = tl.math.exp2(s - lse[:, None])
        if MASKED:
            p = tl.where(offs_n[None, :] <= offs_m[:, None], p, 0.0)
        p = tl.where(m_mask[:, None], p, 0.0)
        dv = tl.dot(tl.trans(p).to(do.dtype), do, dv, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk = tl.dot(tl.trans(ds).to(q.dtype), q, dk, input_precision=PRECISION)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, Delta, DK, DV,  # dk, dv: (B, Hkv, T, D) contiguous
    sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd, sdb, sdh, sdt, sdd,
    H, H_KV, T_Q, T_K, D, qk_scale, sm_scale,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b = pid_bhk // H_KV
    hk = pid_bhk % H_KV
    group = H // H_KV
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < T_K) & (offs_d[None, :] < D)
    k = tl.load(K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh + offs_n[:, None] * skt
                + offs_d[None, :] * skd, mask=kv_mask, other=0.0)  # fmt: skip
    v = tl.load(V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh + offs_n[:, None] * svt
                + offs_d[None, :] * svd, mask=kv_mask, other=0.0)  # fmt: skip
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
        q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
        do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh
        row0 = (b * H + h).to(tl.int64) * T_Q
        dk, dv = _dkdv_inner(
            dk, dv, k, v, q_base, do_base, LSE + row0, Delta + row0, sqt, sqd, sdt, sdd,
            offs_n, offs_d, lo, mid, T_Q, D, qk_scale, True, BLOCK_M, PRECISION,
        )  # fmt: skip
        dk, dv = _dkdv_inner(
            dk, dv, k, v, q_base, do_base, LSE + row0, Delta + row0, sqt, sqd, sdt, sdd,
            offs_n, offs_d, mid, T_Q, T_Q, D, qk_scale, False, BLOCK_M, PRECISION,
        )  # fmt: skip
    out = pid_bhk.to(tl.int64) * T_K * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_inner(
    dq, q, do, lse, delta, k_base, v_base, skt, skd, svt, svd,
    offs_m, offs_d, lo, hi, T_K, D, qk_scale,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    d_mask = offs_d < D
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < T_K
        mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_base + offs_n[:, None] * skt + offs_d[None, :] * skd, mask=mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * svt + offs_d[None, :] * svd, mask=mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.math.exp2(s - lse[:, None])
        if MASKED:
            keep = n_mask[None, :]
            if CAUSAL:
                keep = keep & (offs_n[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, Delta, DQ,  # dq: (B, H, T, D) contiguous
    sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd, sdb, sdh, sdt, sdd,
    H, H_KV, T_Q, T_K, D, qk_scale, sm_scale,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // (H // H_KV)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < T_Q
    mask = m_mask[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + offs_m[:, None] * sqt
                + offs_d[None, :] * sqd, mask=mask, other=0.0)  # fmt: skip
    do = tl.load(DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + offs_m[:, None] * sdt
                 + offs_d[None, :] * sdd, mask=mask, other=0.0)  # fmt: skip
    lse = tl.load(LSE + pid_bh.to(tl.int64) * T_Q + offs_m, mask=m_mask, other=0.0)
    delta = tl.load(Delta + pid_bh.to(tl.int64) * T_Q + offs_m, mask=m_mask, other=0.0)
    k_base = K + b.to(tl.int64) * skb + hk.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + hk.to(tl.int64) * svh
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL:
        lo = (pid_m * BLOCK_M) // BLOCK_N * BLOCK_N
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T_K)
    else:
        lo = (T_K // BLOCK_N) * BLOCK_N
        hi = T_K
    dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, skt, skd, svt, svd, offs_m, offs_d,
                   0, lo, T_K, D, qk_scale, False, CAUSAL, BLOCK_N, PRECISION)  # fmt: skip
    dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, skt, skd, svt, svd, offs_m, offs_d,
                   lo, hi, T_K, D, qk_scale, True, CAUSAL, BLOCK_N, PRECISION)  # fmt: skip
    out = pid_bh.to(tl.int64) * T_Q * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=mask)


def _blocks(head_dim: int) -> dict:
    """Block sizes and warps, in one place. BLOCK_M is a multiple of BLOCK_N so a causal
    query block meets whole key blocks on its diagonal."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    if interpreting():  # big tiles: the interpreter pays per operation, not per element
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": block_d, "num_warps": 4}
    block_n = 64 if block_d <= 64 else 32
    return {
        "BLOCK_M": 128,
        "BLOCK_N": block_n,
        "BLOCK_D": block_d,
        "num_warps": 8 if block_d > 64 else 4,
    }


def _bwd_blocks(head_dim: int) -> dict:
    block_d = max(16, triton.next_power_of_2(head_dim))
    if interpreting():
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": block_d, "num_warps": 4}
    return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": block_d, "num_warps": 4}


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


def attention_fwd(q, k, v, causal: bool, sm_scale: float):
    """Launch the forward; returns o (B, H, T, D) contiguous and lse (B, H, T) fp32, base 2."""
    B, H, T_Q, D = q.shape
    H_KV, T_K = k.shape[1], k.shape[2]
    o = torch.empty((B, H, T_Q, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T_Q), dtype=torch.float32, device=q.device)
    cfg = _blocks(D)
    grid = (triton.cdiv(T_Q, cfg["BLOCK_M"]), B * H)
    _attn_fwd_kernel[grid](
        q, k, v, o, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
        H, H_KV, T_Q, T_K, D, sm_scale * LOG2E,
        CAUSAL=causal, PRECISION=dot_precision(q.dtype, q.device), **cfg,
    )  # fmt: skip
    return o, lse


def attention_bwd(do, q, k, v, o, lse, causal: bool, sm_scale: float):
    """Launch the backward; returns dq, dk, dv shaped like q, k, v (contiguous)."""
    B, H, T_Q, D = q.shape
    H_KV, T_K = k.shape[1], k.shape[2]
    cfg = _bwd_blocks(D)
    precision = dot_precision(q.dtype, q.device)
    delta = torch.empty((B, H, T_Q), dtype=torch.float32, device=q.device)
    _attn_bwd_delta_kernel[(triton.cdiv(T_Q, cfg["BLOCK_M"]), B * H)](
        o, do, delta, *_strides(do), H, T_Q, D, BLOCK_M=cfg["BLOCK_M"], BLOCK_D=cfg["BLOCK_D"]
    )
    dq = torch.empty((B, H, T_Q, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H_KV, T_K, D), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, H_KV, T_K, D), dtype=v.dtype, device=v.device)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(do),
              H, H_KV, T_Q, T_K, D, sm_scale * LOG2E, sm_scale)  # fmt: skip
    _attn_bwd_dkdv_kernel[(triton.cdiv(T_K, cfg["BLOCK_N"]), B * H_KV)](
        q, k, v, do, lse, delta, dk, dv, *common, CAUSAL=causal, PRECISION=precision, **cfg
    )
    _attn_bwd_dq_kernel[(triton.cdiv(T_Q, cfg["BLOCK_M"]), B * H)](
        q, k, v, do, lse, delta, dq, *common, CAUSAL=causal, PRECISION=precision, **cfg
    )
    return dq, dk, dv


class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        o, lse = attention_fwd(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = attention_bwd(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def attention(q, k, v, causal: bool = True, sm_scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · sm_scale, causal) v in Triton. q: (B, H, T, D); k, v: (B, Hkv, T, D).

    Raises ValueError for a head dim this kernel does not take, or causal with Tq ≠ Tk."""
    check_supported(q, k, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    return AttentionFunction.apply(q, k, v, causal, scale)

"""Layer norm and RMSNorm over the last dimension in Triton, forward and backward.

One pair of kernels serves both norms (``IS_RMS`` drops the mean and the bias). Layout, as in
Liger-Kernel's ops and Triton's tutorial 05: ``@triton.jit`` kernels → host launchers that
flatten to (M, N), allocate and pick blocks → a thin ``torch.autograd.Function`` → the
public ``layer_norm`` / ``rms_norm``.

- Statistics in fp32 whatever the input dtype; the forward saves mean and rstd (M,) fp32.
- Rows up to ``MAX_FUSED_N`` wide are read once, held in registers, a tile of BLOCK_M rows
  per program (several narrow rows per program keeps N = 768 busy). Wider rows (to 65536
  and beyond) loop over column chunks: the mean, the variance and the output each take a
  pass, so such rows are read three times in the forward instead of once.
- dW and dB without atomics or spin locks: a grid sized to the GPU (a few programs per SM),
  each program walks its share of the rows, prefetching its next tile, and keeps fp32
  partial sums; it writes one partial row, and a second small kernel sums the rows and
  casts (two launches in all). Same inputs, same bits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_FUSED_N = 16384  # widest row held whole in registers
LOOP_BLOCK_N = 4096  # chunk width when rows are wider than that
TILE_ELEMENTS = 4096  # aim for this many elements per program tile (narrow rows)


@triton.jit
def _norm_fwd_kernel(
    X,  # (M, N) input, row stride stride_x, unit column stride
    Y,  # (M, N) output, row stride stride_y
    W,  # (N,) weight
    B,  # (N,) bias (unused when HAS_BIAS is False)
    Mean,  # (M,) fp32 out (unused when IS_RMS)
    Rstd,  # (M,) fp32 out
    stride_x,
    stride_y,
    M,
    N,
    eps,
    IS_RMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    x_rows = X + rows.to(tl.int64)[:, None] * stride_x
    y_rows = Y + rows.to(tl.int64)[:, None] * stride_y
    if SINGLE_PASS:
        cols = tl.arange(0, BLOCK_N)
        mask = row_mask[:, None] & (cols[None, :] < N)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if IS_RMS:
            xc = x
        else:
            mean = tl.sum(x, axis=1) / N
            xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / N + eps)
        w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
        y = xc * rstd[:, None] * w[None, :]
        if HAS_BIAS:
            y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_rows + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    else:
        if IS_RMS:
            mean = tl.zeros([BLOCK_M], dtype=tl.float32)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                mask = row_mask[:, None] & (cols[None, :] < N)
                acc += tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            mean = tl.sum(acc, axis=1) / N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_mask[:, None] & (cols[None, :] < N)
            x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            xc = tl.where(mask, x - mean[:, None], 0.0)
            acc += xc * xc
        rstd = tl.rsqrt(tl.sum(acc, axis=1) / N + eps)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            mask = row_mask[:, None] & (cols[None, :] < N)
            x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
            y = (x - mean[:, None]) * rstd[:, None] * w[None, :]
            if HAS_BIAS:
                y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
            tl.store(y_rows + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    if not IS_RMS:
        tl.store(Mean + rows, mean, mask=row_mask)
    tl.store(Rstd + rows, rstd, mask=row_mask)


@triton.jit
def _row_chunk(X, DY, W, x_row, dy_row, cols, N, mean, rstd):
    """Columns ``cols`` of one row, for the chunked backward: x̂ (zero past N), dy and
    g = w ⊙ dy, in fp32. Both passes over a wide row call it, so they read it the same way."""
    cmask = cols < N
    x = tl.load(X + x_row + cols, mask=cmask, other=0.0).to(tl.float32)
    dy = tl.load(DY + dy_row + cols, mask=cmask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    return tl.where(cmask, (x - mean) * rstd, 0.0), dy, dy * w


# Backward, with x̂ = (x − mean)·rstd (mean = 0 for RMSNorm) and g = w ⊙ dy:
#   dx = rstd · (g − x̂ · mean(g ⊙ x̂) − mean(g))      (RMSNorm: no mean(g) term)
#   dW = Σ_rows dy ⊙ x̂,   dB = Σ_rows dy
# Each program takes every G-th tile of rows and sums its dW, dB contributions in fp32.
@triton.jit
def _norm_bwd_kernel(
    DY,  # (M, N) upstream gradient, row stride stride_dy
    X,  # (M, N) forward input, row stride stride_x
    W,  # (N,)
    Mean,  # (M,) fp32 (unused when IS_RMS)
    Rstd,  # (M,) fp32
    DX,  # (M, N) out, row stride stride_dx
    DW_part,  # (G, N) fp32 out: row g holds program g's partial dW
    DB_part,  # (G, N) fp32 out (unused when HAS_BIAS is False)
    stride_dy,
    stride_x,
    stride_dx,
    M,
    N,
    IS_RMS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
    PREFETCH: tl.constexpr,  # pipeline stages of the row loop: the next tiles' loads in flight
):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    n_tiles = tl.cdiv(M, BLOCK_M)
    part = pid.to(tl.int64) * N
    if SINGLE_PASS:
        cols = tl.arange(0, BLOCK_N)
        col_mask = cols < N
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_N], dtype=tl.float32)
        db = tl.zeros([BLOCK_N], dtype=tl.float32)
        # the software pipeliner issues the loads of the program's next tile (cp.async into
        # shared memory) while this one is computed: more bytes in flight per SM
        for tile in tl.range(pid, n_tiles, n_programs, num_stages=PREFETCH):
            rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            r64 = rows.to(tl.int64)[:, None]
            mask = row_mask[:, None] & col_mask[None, :]
            x = tl.load(X + r64 * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + r64 * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(Rstd + rows, mask=row_mask, other=0.0)
            if IS_RMS:
                xhat = x * rstd[:, None]
            else:
                mean = tl.load(Mean + rows, mask=row_mask, other=0.0)
                xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            g = dy * w[None, :]
            c1 = tl.sum(xhat * g, axis=1) / N
            if IS_RMS:
                dx = (g - xhat * c1[:, None]) * rstd[:, None]
            else:
                c2 = tl.sum(g, axis=1) / N
                dx = (g - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
            tl.store(DX + r64 * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
            dw += tl.sum(dy * xhat, axis=0)
            if HAS_BIAS:
                db += tl.sum(dy, axis=0)
        tl.store(DW_part + part + cols, dw, mask=col_mask)
        if HAS_BIAS:
            tl.store(DB_part + part + cols, db, mask=col_mask)
    else:
        # wide rows, one at a time: a pass for c1 (and c2), a pass for dx and the partials,
        # which start at zero (each thread reads back only the columns it wrote)
        for start in range(0, N, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            zero = tl.zeros([BLOCK_N], dtype=tl.float32)
            tl.store(DW_part + part + cols, zero, mask=cols < N)
            if HAS_BIAS:
                tl.store(DB_part + part + cols, zero, mask=cols < N)
        for row in range(pid, M, n_programs):
            r64 = tl.cast(row, tl.int64)
            rstd = tl.load(Rstd + row)
            if IS_RMS:
                mean = 0.0
            else:
                mean = tl.load(Mean + row)
            acc1 = tl.zeros([BLOCK_N], dtype=tl.float32)
            acc2 = tl.zeros([BLOCK_N], dtype=tl.float32)
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                xhat, dy, g = _row_chunk(
                    X, DY, W, r64 * stride_x, r64 * stride_dy, cols, N, mean, rstd
                )
                acc1 += xhat * g
                acc2 += g
            c1 = tl.sum(acc1, axis=0) / N
            c2 = tl.sum(acc2, axis=0) / N
            for start in range(0, N, BLOCK_N):
                cols = start + tl.arange(0, BLOCK_N)
                cmask = cols < N
                xhat, dy, g = _row_chunk(
                    X, DY, W, r64 * stride_x, r64 * stride_dy, cols, N, mean, rstd
                )
                if IS_RMS:
                    dx = (g - xhat * c1) * rstd
                else:
                    dx = (g - xhat * c1 - c2) * rstd
                tl.store(DX + r64 * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=cmask)
                dw_old = tl.load(DW_part + part + cols, mask=cmask, other=0.0)
                tl.store(DW_part + part + cols, dw_old + dy * xhat, mask=cmask)
                if HAS_BIAS:
                    db_old = tl.load(DB_part + part + cols, mask=cmask, other=0.0)
                    tl.store(DB_part + part + cols, db_old + dy, mask=cmask)


@triton.jit
def _sum_parts_kernel(
    DW_part,  # (G, N) fp32
    DB_part,  # (G, N) fp32 (unused when HAS_BIAS is False)
    DW,  # (N,) out, the weight's dtype
    DB,  # (N,) out (unused when HAS_BIAS is False)
    G,
    N,
    HAS_BIAS: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dW and dB: the programs' partial rows summed in fp32 and cast, in one launch."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_N], dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        offs = g.to(tl.int64)[:, None] * N + cols[None, :]
        mask = (g[:, None] < G) & (cols[None, :] < N)
        dw += tl.sum(tl.load(DW_part + offs, mask=mask, other=0.0), axis=0)
        if HAS_BIAS:
            db += tl.sum(tl.load(DB_part + offs, mask=mask, other=0.0), axis=0)
    tl.store(DW + cols, dw.to(DW.dtype.element_ty), mask=cols < N)
    if HAS_BIAS:
        tl.store(DB + cols, db.to(DB.dtype.element_ty), mask=cols < N)


def _blocks(N: int) -> tuple[int, int, bool, int]:
    """(BLOCK_M, BLOCK_N, single_pass, num_warps) for rows of width N."""
    block_n = triton.next_power_of_2(N)
    if block_n > MAX_FUSED_N:
        return 1, LOOP_BLOCK_N, False, 8
    block_m = max(1, min(64, TILE_ELEMENTS // block_n))
    num_warps = min(16, max(1, block_m * block_n // 512))
    return block_m, block_n, True, num_warps


def _bwd_warps(block_m: int, block_n: int) -> int:
    """Warps of the backward: 32 elements of a tile per thread (the forward takes 16).
    The backward keeps about six fp32 vectors of the tile live (x, dy, x̂, g, dx and the
    dW partials); at 16 elements a thread a wide row took 8–16 warps, one row per program,
    and at most one or two programs fit an SM by registers. Half the warps and twice the
    work per thread, with the next tile prefetched, keeps more bytes in flight."""
    return min(16, max(1, block_m * block_n // 1024))


def _num_programs(n_tiles: int, device: torch.device) -> int:
    """Backward grid: a few programs per SM on a GPU (each keeps partial dW/dB sums);
    a handful under the CPU interpreter, which runs programs one after another."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_tiles, 4 * sms))
    return max(1, min(n_tiles, 4))


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., N) → (M, N) with unit column stride (a view where the strides allow)."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def norm_fwd(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float, is_rms: bool
):
    """Launch the forward. Returns y (shaped like x), and for the backward: x as (M, N)
    rows, mean and rstd."""
    x2 = _as_rows(x)
    M, N = x2.shape
    y = torch.empty((M, N), dtype=x.dtype, device=x.device)
    mean = torch.empty(M, dtype=torch.float32, device=x.device)
    rstd = torch.empty(M, dtype=torch.float32, device=x.device)
    block_m, block_n, single, warps = _blocks(N)
    grid = (triton.cdiv(M, block_m),)
    _norm_fwd_kernel[grid](
        x2,
        y,
        weight,
        bias if bias is not None else weight,
        mean,
        rstd,
        x2.stride(0),
        y.stride(0),
        M,
        N,
        eps,
        IS_RMS=is_rms,
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        SINGLE_PASS=single,
        num_warps=warps,
    )
    return y.view(x.shape), x2, mean, rstd


def norm_bwd(dy, x2, weight, mean, rstd, has_bias: bool, is_rms: bool):
    """Launch the backward. Returns dx as (M, N) rows, dW and dB (None without a bias)."""
    dy2 = _as_rows(dy)
    M, N = x2.shape
    dx = torch.empty((M, N), dtype=x2.dtype, device=x2.device)
    block_m, block_n, single, warps = _blocks(N)
    if single:
        warps = _bwd_warps(block_m, block_n)
    G = _num_programs(triton.cdiv(M, block_m), x2.device)
    # every program writes its whole partial row (G never exceeds the tiles): no zeroing
    dw_part = torch.empty((G, N), dtype=torch.float32, device=x2.device)
    db_part = torch.empty((G, N), dtype=torch.float32, device=x2.device) if has_bias else dw_part
    _norm_bwd_kernel[(G,)](
        dy2,
        x2,
        weight,
        mean,
        rstd,
        dx,
        dw_part,
        db_part,
        dy2.stride(0),
        x2.stride(0),
        dx.stride(0),
        M,
        N,
        IS_RMS=is_rms,
        HAS_BIAS=has_bias,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        SINGLE_PASS=single,
        PREFETCH=2,
        num_warps=warps,
    )
    dw = torch.empty(N, dtype=weight.dtype, device=x2.device)
    db = torch.empty(N, dtype=weight.dtype, device=x2.device) if has_bias else None
    _sum_parts_kernel[(triton.cdiv(N, 256),)](
        dw_part,
        db_part,
        dw,
        db if has_bias else dw,
        G,
        N,
        HAS_BIAS=has_bias,
        BLOCK_G=32,
        BLOCK_N=256,
        num_warps=4,
    )
    return dx, dw, db


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, is_rms):
        y, x2, mean, rstd = norm_fwd(x, weight, bias, eps, is_rms)
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.has_bias, ctx.is_rms = bias is not None, is_rms
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = norm_bwd(dy, x2, weight, mean, rstd, ctx.has_bias, ctx.is_rms)
        return dx.view(dy.shape), dw, db, None, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-5):
    """Layer norm of x (..., N) with weight (N,) and bias (N,) or None, in Triton."""
    return LayerNormFunction.apply(x, weight, bias, eps, False)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5):
    """RMSNorm of x (..., N) with weight (N,), in Triton."""
    return LayerNormFunction.apply(x, weight, None, eps, True)


# -- for kernels.compile_check: the kernels to build and the launches that build them -----
COMPILE_KERNELS = {
    "_norm_fwd_kernel": "forward",
    "_norm_bwd_kernel": "backward",
    "_sum_parts_kernel": "dW/dB sum",
}


def compile_cases(dtype: torch.dtype, head_dims=None):
    """Forward and backward, LayerNorm and RMSNorm, at four widths (20000: past the
    one-read limit, chunked). Yields (label, read path, call)."""
    for N in (768, 4096, 8192, 20000):
        for is_rms in (False, True):

            def call(N=N, is_rms=is_rms):
                x, w = torch.empty(4096, N, dtype=dtype), torch.empty(N, dtype=dtype)
                b = None if is_rms else torch.empty(N, dtype=dtype)
                _, x2, mean, rstd = norm_fwd(x, w, b, 1e-5, is_rms)
                norm_bwd(x, x2, w, mean, rstd, b is not None, is_rms)

            yield f"N={N} {'rms' if is_rms else 'layer'}", "pointers", call

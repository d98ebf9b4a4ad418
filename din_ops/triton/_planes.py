"""The pieces of the plane kernels (instance_norm, spatially_adaptive_instance_norm): one program per
(n, block of BLOCK_C channels), see ``instance_norm.plane_grid``, walking the planes BLOCK_P pixels
at a time.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import plane_stats, split_mean, to_acc


@triton.jit
def channel_block(X, C, s_xn, s_xc, BLOCK_C: tl.constexpr):
    """This program's sample n, its channels c ([BLOCK_C]) with their mask, and the pointers to the
    first element of each of their planes in X."""
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    x_rows = X + n * s_xn + c.to(tl.int64) * s_xc
    return n, c, c_mask, x_rows


@triton.jit
def block_stats(X, MEAN, RSTD, C, P, s_xn, s_xc, s_xp, eps_hi, eps_lo,
                ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """channel_block, then the float64 mean and rstd of its planes (plane_stats), stored into the
    (N, C) MEAN and RSTD. Returns (n, c, c_mask, x_rows, hi, lo, r) for normalized_tile: the mean as
    hi + lo (split_mean) and rstd, in the accumulation type."""
    n, c, c_mask, x_rows = channel_block(X, C, s_xn, s_xc, BLOCK_C)
    mean, rstd = plane_stats(x_rows, c_mask, P, s_xp, eps_hi, eps_lo, ACC_F64, BLOCK_C, BLOCK_P)
    tl.store(MEAN + n * C + c, mean, mask=c_mask)
    tl.store(RSTD + n * C + c, rstd, mask=c_mask)
    hi, lo = split_mean(mean, ACC_F64)
    return n, c, c_mask, x_rows, hi, lo, to_acc(rstd, ACC_F64)


@triton.jit
def normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64: tl.constexpr, BLOCK_P: tl.constexpr):
    """Pixels p0 .. p0 + BLOCK_P of the planes at x_rows: (p, m, xh), p the int64 pixel indices, m
    the [BLOCK_C, BLOCK_P] mask, xh = ((x - hi) - lo) * r in the accumulation type (mean = hi + lo
    from split_mean, r = rstd). Outside m, x reads as 0, so xh there is not 0."""
    p = (p0 + tl.arange(0, BLOCK_P)).to(tl.int64)
    m = c_mask[:, None] & (p < P)[None, :]
    v = to_acc(tl.load(x_rows[:, None] + p[None, :] * s_xp, mask=m, other=0.0), ACC_F64)
    xh = ((v - hi[:, None]) - lo[:, None]) * r[:, None]
    return p, m, xh

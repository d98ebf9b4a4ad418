"""Triton 1x1 dynamic instance norm: ``din_ops::triton_dynamic_instance_norm_1x1`` and its backward.

docs/math.md, with W: (N, Co, C), x viewed as (N, C, P):

forward   stats_kernel: mean, rstd per (n, c); then one GEMM per sample
              y[n] = W[n] @ xh[n] + b[n]
          whose B tiles are normalized on load, ((x - mean_hi) - mean_lo) * rstd in registers (rstd
          folded into the operand, the float64 mean subtracted as a float pair, so a mean of 1e6 costs
          no precision), and whose epilogue adds the bias. xh is never written.
backward  _grad_weight_kernel: gW[n] = gy[n] @ xh[n]^T (B normalized on load as above) and
              gb[n] = sum_p gy[n], split over P into partial sums that are added in a fixed order
              (deterministic; enough programs when N * Co * C is small).
          _grad_x_kernel: gx[n] = rstd * (W[n]^T @ gy[n] - m1 - xh * m2), a GEMM whose epilogue needs
              m1 = (W^T gb) / P and m2 = sum_o W * gW / P per channel; the kernel accumulates both
              along its K loop over Co, so no other pass touches P-sized data.

All dot blocks are >= 16 (smaller ones compile only in the interpreter); rows and columns past the
ends are masked on every load and store.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (INTERPRET, acc_is_f64, addressable, configs, define_op, dot_acc, dot_precision,
                      dot_upcast, launch, out_format, register_no_double_backward, sm_count,
                      split_mean, strides, to_acc, to_dot)
from .instance_norm import compute_stats

# Hopper/Ampere GEMM tiles (M = output rows, N = pixels or channels, K = reduction). The first one is
# also the interpreter's.
GEMM_CONFIGS = configs([
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4, num_stages=4),
])
GEMM_KEY = ["C", "CO", "P", "s_xc"]

# The weight-gradient kernel's split of P: chunks are multiples of this (a multiple of every
# BLOCK_K above), small under the interpreter so that the tests' shapes take several chunks.
_P_CHUNK_ALIGN = 32 if INTERPRET else 256


@triton.autotune(configs=GEMM_CONFIGS, key=GEMM_KEY)
@triton.jit
def _forward_kernel(X, W, B, MEAN, RSTD, Y, C, CO, P,
                    s_xn, s_xc, s_xp, s_wn, s_wo, s_wc, s_bn, s_bo, s_yn, s_yc, s_yp,
                    HAS_BIAS: tl.constexpr, ACC_F64: tl.constexpr, UPCAST: tl.constexpr,
                    PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(2).to(tl.int64)
    o = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    p = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    o_mask = o < CO
    p_mask = p < P
    w_rows = W + n * s_wn + o.to(tl.int64) * s_wo
    x_base = X + n * s_xn
    acc = to_acc(tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), ACC_F64)
    for k0 in range(0, C, BLOCK_K):
        c = k0 + tl.arange(0, BLOCK_K)
        c_mask = c < C
        w = tl.load(w_rows[:, None] + c[None, :].to(tl.int64) * s_wc,
                    mask=o_mask[:, None] & c_mask[None, :], other=0.0)
        hi, lo = split_mean(tl.load(MEAN + n * C + c, mask=c_mask, other=0.0), ACC_F64)
        r = to_acc(tl.load(RSTD + n * C + c, mask=c_mask, other=0.0), ACC_F64)
        xm = c_mask[:, None] & p_mask[None, :]
        v = to_acc(tl.load(x_base + c[:, None].to(tl.int64) * s_xc + p[None, :] * s_xp, mask=xm, other=0.0),
                   ACC_F64)
        xh = tl.where(xm, ((v - hi[:, None]) - lo[:, None]) * r[:, None], 0.0)
        acc = dot_acc(to_dot(w, W, UPCAST), to_dot(xh, W, UPCAST), acc, PRECISION)
    if HAS_BIAS:
        bias = to_acc(tl.load(B + n * s_bn + o.to(tl.int64) * s_bo, mask=o_mask, other=0.0), ACC_F64)
        acc += bias[:, None]
    y_ptrs = Y + n * s_yn + o[:, None].to(tl.int64) * s_yc + p[None, :] * s_yp
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=o_mask[:, None] & p_mask[None, :])


@triton.autotune(configs=GEMM_CONFIGS, key=GEMM_KEY)
@triton.jit
def _grad_weight_kernel(GY, X, MEAN, RSTD, GW_PART, GB_PART, C, CO, P, CHUNK,
                        s_gn, s_gc, s_gp, s_xn, s_xc, s_xp,
                        ACC_F64: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Partial sums over the chunk [split * CHUNK, (split + 1) * CHUNK) of P:
    GW_PART[split, n] (Co, C) = gy @ xh^T and GB_PART[split, n] (Co,) = sum_p gy."""
    c_blocks = tl.cdiv(C, BLOCK_N)
    pid_o = tl.program_id(0) // c_blocks
    pid_c = tl.program_id(0) % c_blocks
    split = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    o = pid_o * BLOCK_M + tl.arange(0, BLOCK_M)
    c = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    o_mask = o < CO
    c_mask = c < C
    hi, lo = split_mean(tl.load(MEAN + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    r = to_acc(tl.load(RSTD + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    g_rows = GY + n * s_gn + o.to(tl.int64) * s_gc
    x_cols = X + n * s_xn + c.to(tl.int64) * s_xc
    acc = to_acc(tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), ACC_F64)
    gb = to_acc(tl.zeros([BLOCK_M], dtype=tl.float32), ACC_F64)
    start = split * CHUNK
    for k0 in range(start, start + CHUNK, BLOCK_K):
        p = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        p_mask = p < P
        g = tl.load(g_rows[:, None] + p[None, :] * s_gp, mask=o_mask[:, None] & p_mask[None, :], other=0.0)
        xm = p_mask[:, None] & c_mask[None, :]
        v = to_acc(tl.load(x_cols[None, :] + p[:, None] * s_xp, mask=xm, other=0.0), ACC_F64)
        xh_t = tl.where(xm, ((v - hi[None, :]) - lo[None, :]) * r[None, :], 0.0)
        acc = dot_acc(to_dot(g, GY, UPCAST), to_dot(xh_t, GY, UPCAST), acc, PRECISION)
        gb += tl.sum(to_acc(g, ACC_F64), axis=1)
    part = (split * tl.num_programs(2) + n) * CO
    tl.store(GW_PART + (part + o[:, None]) * C + c[None, :], acc, mask=o_mask[:, None] & c_mask[None, :])
    tl.store(GB_PART + part + o, gb, mask=o_mask & (pid_c == 0))


@triton.autotune(configs=GEMM_CONFIGS, key=GEMM_KEY)
@triton.jit
def _grad_x_kernel(GY, X, W, GW, GB, MEAN, RSTD, GX, C, CO, P,
                   s_gn, s_gc, s_gp, s_xn, s_xc, s_xp, s_wn, s_wo, s_wc, s_on, s_oc, s_op,
                   ACC_F64: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """gx = rstd * (W^T @ gy - m1 - xh * m2); GW (N, Co, C) and GB (N, Co) are the complete
    gradients in the accumulation type."""
    n = tl.program_id(2).to(tl.int64)
    c = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    p = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    c_mask = c < C
    p_mask = p < P
    w_cols = W + n * s_wn + c.to(tl.int64) * s_wc
    g_base = GY + n * s_gn
    acc = to_acc(tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), ACC_F64)
    m1 = to_acc(tl.zeros([BLOCK_M], dtype=tl.float32), ACC_F64)
    m2 = to_acc(tl.zeros([BLOCK_M], dtype=tl.float32), ACC_F64)
    for k0 in range(0, CO, BLOCK_K):
        o = k0 + tl.arange(0, BLOCK_K)
        o_mask = o < CO
        wm = c_mask[:, None] & o_mask[None, :]
        w_t = tl.load(w_cols[:, None] + o[None, :].to(tl.int64) * s_wo, mask=wm, other=0.0)  # W^T tile
        g = tl.load(g_base + o[:, None].to(tl.int64) * s_gc + p[None, :] * s_gp,
                    mask=o_mask[:, None] & p_mask[None, :], other=0.0)
        acc = dot_acc(to_dot(w_t, W, UPCAST), to_dot(g, W, UPCAST), acc, PRECISION)
        w_acc = to_acc(w_t, ACC_F64)
        gb = tl.load(GB + n * CO + o, mask=o_mask, other=0.0)
        gw_t = tl.load(GW + (n * CO + o[None, :]) * C + c[:, None], mask=wm, other=0.0)
        m1 += tl.sum(w_acc * gb[None, :], axis=1)
        m2 += tl.sum(w_acc * gw_t, axis=1)
    m1 = m1 / P
    m2 = m2 / P
    hi, lo = split_mean(tl.load(MEAN + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    r = to_acc(tl.load(RSTD + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    xm = c_mask[:, None] & p_mask[None, :]
    v = to_acc(tl.load(X + n * s_xn + c[:, None].to(tl.int64) * s_xc + p[None, :] * s_xp, mask=xm, other=0.0),
               ACC_F64)
    xh = ((v - hi[:, None]) - lo[:, None]) * r[:, None]
    gx = r[:, None] * (acc - m1[:, None] - xh * m2[:, None])
    tl.store(GX + n * s_on + c[:, None].to(tl.int64) * s_oc + p[None, :] * s_op, gx.to(GX.dtype.element_ty),
             mask=xm)


def _din_1x1(x: Tensor, weight: Tensor, bias: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    n, c, h, w = x.shape
    co = weight.shape[1]
    y = x.new_empty((n, co, h, w)).contiguous(memory_format=out_format(x))
    x = addressable(x)
    mean, rstd = compute_stats(x, eps)
    if y.numel() == 0:
        return y, mean, rstd
    b = weight if bias is None else bias
    grid = lambda meta: (triton.cdiv(h * w, meta["BLOCK_N"]), triton.cdiv(co, meta["BLOCK_M"]), n)  # noqa: E731
    launch(_forward_kernel)[grid](
        x, weight, b, mean, rstd, y, c, co, h * w,
        *strides(x), *weight.stride(), b.stride(0), b.stride(1), *strides(y),
        HAS_BIAS=bias is not None, ACC_F64=acc_is_f64(x), UPCAST=dot_upcast(x), PRECISION=dot_precision(x),
    )
    return y, mean, rstd


def _din_1x1_fake(x: Tensor, weight: Tensor, bias: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    n, _, h, w = x.shape
    y = x.new_empty((n, weight.shape[1], h, w)).contiguous(memory_format=out_format(x))
    shape = (n, x.shape[1])
    return y, x.new_empty(shape, dtype=torch.float64), x.new_empty(shape, dtype=torch.float64)


def _p_chunk(x: Tensor, n: int, co: int, c: int, p: int) -> int:
    """Chunk of P per weight-gradient program: enough (n, split, tile) programs for the device
    (about two per SM with 64 x 64 tiles), chunks of at least _P_CHUNK_ALIGN pixels."""
    tiles = max(1, n * triton.cdiv(co, 64) * triton.cdiv(c, 64))
    splits = max(1, triton.cdiv(2 * sm_count(x.device), tiles))
    chunk = triton.cdiv(triton.cdiv(p, splits), _P_CHUNK_ALIGN) * _P_CHUNK_ALIGN
    return max(chunk, _P_CHUNK_ALIGN)


def _din_1x1_backward(grad_y: Tensor, x: Tensor, weight: Tensor, mean: Tensor,
                      rstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, c, h, w = x.shape
    co = weight.shape[1]
    p = h * w
    gx = torch.empty_like(x, memory_format=out_format(x))
    x, gy = addressable(x), addressable(grad_y)
    mean, rstd = mean.contiguous(), rstd.contiguous()
    acc_dtype = torch.float64 if acc_is_f64(x) else torch.float32
    if x.numel() == 0 or gy.numel() == 0:
        gw = weight.new_zeros(weight.shape)
        return gx.zero_(), gw, weight.new_zeros((n, co))
    chunk = _p_chunk(x, n, co, c, p)
    splits = triton.cdiv(p, chunk)
    gw_part = x.new_empty((splits, n, co, c), dtype=acc_dtype)
    gb_part = x.new_empty((splits, n, co), dtype=acc_dtype)
    flags = dict(ACC_F64=acc_is_f64(x), UPCAST=dot_upcast(x), PRECISION=dot_precision(x))
    grid_w = lambda meta: (triton.cdiv(co, meta["BLOCK_M"]) * triton.cdiv(c, meta["BLOCK_N"]), splits, n)  # noqa: E731
    launch(_grad_weight_kernel)[grid_w](
        gy, x, mean, rstd, gw_part, gb_part, c, co, p, chunk, *strides(gy), *strides(x), **flags
    )
    # The partial sums, added in a fixed order (bitwise repeatable).
    gw32, gb32 = (gw_part[0], gb_part[0]) if splits == 1 else (gw_part.sum(0), gb_part.sum(0))
    grid_x = lambda meta: (triton.cdiv(p, meta["BLOCK_N"]), triton.cdiv(c, meta["BLOCK_M"]), n)  # noqa: E731
    launch(_grad_x_kernel)[grid_x](
        gy, x, weight, gw32, gb32, mean, rstd, gx, c, co, p,
        *strides(gy), *strides(x), *weight.stride(), *strides(gx), **flags
    )
    return gx, gw32.to(weight.dtype), gb32.to(weight.dtype)


def _din_1x1_backward_fake(grad_y: Tensor, x: Tensor, weight: Tensor, mean: Tensor,
                           rstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n, co = weight.shape[0], weight.shape[1]
    return (
        torch.empty_like(x, memory_format=out_format(x)),
        weight.new_empty(weight.shape),
        weight.new_empty((n, co)),
    )


din_1x1_op = define_op("triton_dynamic_instance_norm_1x1", _din_1x1, _din_1x1_fake)
din_1x1_backward_op = define_op(
    "triton_dynamic_instance_norm_1x1_backward", _din_1x1_backward, _din_1x1_backward_fake
)


def _setup(ctx, inputs, output):
    x, weight, bias, _eps = inputs
    _y, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.has_bias = bias is not None
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, grad_y, _grad_mean, _grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    gx, gw, gb = torch.ops.din_ops.triton_dynamic_instance_norm_1x1_backward(grad_y, x, weight, mean, rstd)
    return gx, gw, gb if ctx.has_bias else None, None


din_1x1_op.register_autograd(_backward, setup_context=_setup)
register_no_double_backward(din_1x1_backward_op, "triton_dynamic_instance_norm_1x1_backward")

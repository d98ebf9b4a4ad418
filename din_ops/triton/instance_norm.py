"""Triton instance norm: ``din_ops::triton_instance_norm`` and its backward.

Forward: one program per (n, block of channels). It accumulates the shifted sums of its planes
(plane_stats), writes the float64 mean and rstd, then normalizes the planes it has just read (the
second read mostly hits L2). Backward (docs/math.md, with W = I):

    gx = rstd * (gy - mean_p(gy) - xh * mean_p(gy * xh)),   xh = (x - mean) * rstd

one program per (n, block of channels): a pass for the two means, a pass writing gx. xh is recomputed
from x and the statistics, never stored.

The plane kernels' block shapes: a few channels by many pixels when x is NCHW (pixels contiguous),
many channels by few pixels when x is channels_last (channels contiguous); autotune picks per
(C, H*W, layout).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (acc_is_f64, addressable, configs, define_op, empty_stats, launch,
                      out_format, register_no_double_backward, split_eps, split_mean, strides,
                      to_acc)
from ._planes import block_stats, channel_block, normalized_tile

# First config: also the interpreter's (small, so the tests' shapes run the loops and the masks).
PLANE_CONFIGS = configs([
    triton.Config({"BLOCK_C": 16, "BLOCK_P": 64}, num_warps=4),
    # NCHW: whole warps along the plane.
    triton.Config({"BLOCK_C": 1, "BLOCK_P": 1024}, num_warps=4),
    triton.Config({"BLOCK_C": 1, "BLOCK_P": 2048}, num_warps=8),
    triton.Config({"BLOCK_C": 2, "BLOCK_P": 1024}, num_warps=4),
    triton.Config({"BLOCK_C": 4, "BLOCK_P": 512}, num_warps=4),
    triton.Config({"BLOCK_C": 8, "BLOCK_P": 256}, num_warps=4),
    # channels_last: whole warps along the channels.
    triton.Config({"BLOCK_C": 32, "BLOCK_P": 64}, num_warps=4),
    triton.Config({"BLOCK_C": 64, "BLOCK_P": 32}, num_warps=4),
    triton.Config({"BLOCK_C": 64, "BLOCK_P": 64}, num_warps=8),
    triton.Config({"BLOCK_C": 128, "BLOCK_P": 32}, num_warps=8),
])
PLANE_KEY = ["C", "P", "s_xc"]


def plane_grid(n: int, c: int):
    return lambda meta: (n, triton.cdiv(c, meta["BLOCK_C"]))


@triton.autotune(configs=PLANE_CONFIGS, key=PLANE_KEY)
@triton.jit
def stats_kernel(X, MEAN, RSTD, C, P, s_xn, s_xc, s_xp, eps_hi, eps_lo,
                 ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """mean and rstd (N, C) float64 of every plane of X: the first kernel of the 1x1 DIN."""
    block_stats(X, MEAN, RSTD, C, P, s_xn, s_xc, s_xp, eps_hi, eps_lo, ACC_F64, BLOCK_C, BLOCK_P)


@triton.autotune(configs=PLANE_CONFIGS, key=PLANE_KEY)
@triton.jit
def _forward_kernel(X, Y, MEAN, RSTD, C, P, s_xn, s_xc, s_xp, s_yn, s_yc, s_yp, eps_hi, eps_lo,
                    ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, c_mask, x_rows, hi, lo, r = block_stats(X, MEAN, RSTD, C, P, s_xn, s_xc, s_xp, eps_hi, eps_lo,
                                                  ACC_F64, BLOCK_C, BLOCK_P)
    y_rows = Y + n * s_yn + c.to(tl.int64) * s_yc
    for p0 in range(0, P, BLOCK_P):
        p, m, y = normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64, BLOCK_P)
        tl.store(y_rows[:, None] + p[None, :] * s_yp, y.to(Y.dtype.element_ty), mask=m)


@triton.autotune(configs=PLANE_CONFIGS, key=PLANE_KEY)
@triton.jit
def _backward_kernel(GY, X, MEAN, RSTD, GX, C, P, s_gn, s_gc, s_gp, s_xn, s_xc, s_xp, s_on, s_oc, s_op,
                     ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, c_mask, x_rows = channel_block(X, C, s_xn, s_xc, BLOCK_C)
    mean = tl.load(MEAN + n * C + c, mask=c_mask, other=0.0)
    hi, lo = split_mean(mean, ACC_F64)
    r = to_acc(tl.load(RSTD + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    g_rows = GY + n * s_gn + c.to(tl.int64) * s_gc
    sg = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)
    sgx = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)
    for p0 in range(0, P, BLOCK_P):
        p, m, xh = normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64, BLOCK_P)
        g = to_acc(tl.load(g_rows[:, None] + p[None, :] * s_gp, mask=m, other=0.0), ACC_F64)
        sg += g
        sgx += g * xh  # g is 0 outside the planes
    m1 = tl.sum(sg, axis=1) / P
    m2 = tl.sum(sgx, axis=1) / P
    o_rows = GX + n * s_on + c.to(tl.int64) * s_oc
    for p0 in range(0, P, BLOCK_P):
        p, m, xh = normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64, BLOCK_P)
        g = to_acc(tl.load(g_rows[:, None] + p[None, :] * s_gp, mask=m, other=0.0), ACC_F64)
        gx = r[:, None] * (g - m1[:, None] - xh * m2[:, None])
        tl.store(o_rows[:, None] + p[None, :] * s_op, gx.to(GX.dtype.element_ty), mask=m)


def compute_stats(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(N, C) float64 mean and rstd of an addressable x (the statistics kernel alone)."""
    mean, rstd = empty_stats(x)
    n, c, h, w = x.shape
    if x.numel() == 0:
        return mean, rstd
    launch(stats_kernel)[plane_grid(n, c)](
        x, mean, rstd, c, h * w, *strides(x), *split_eps(eps), ACC_F64=acc_is_f64(x)
    )
    return mean, rstd


def _instance_norm(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    y = torch.empty_like(x, memory_format=out_format(x))
    mean, rstd = empty_stats(x)
    x = addressable(x)
    n, c, h, w = x.shape
    if x.numel() == 0:
        return y, mean, rstd
    launch(_forward_kernel)[plane_grid(n, c)](
        x, y, mean, rstd, c, h * w, *strides(x), *strides(y), *split_eps(eps), ACC_F64=acc_is_f64(x)
    )
    return y, mean, rstd


def _instance_norm_fake(x: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.empty_like(x, memory_format=out_format(x)), *empty_stats(x))


def _instance_norm_backward(grad_y: Tensor, x: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
    gx = torch.empty_like(x, memory_format=out_format(x))
    x, gy = addressable(x), addressable(grad_y)
    mean, rstd = mean.contiguous(), rstd.contiguous()
    n, c, h, w = x.shape
    if x.numel() == 0:
        return gx
    launch(_backward_kernel)[plane_grid(n, c)](
        gy, x, mean, rstd, gx, c, h * w, *strides(gy), *strides(x), *strides(gx), ACC_F64=acc_is_f64(x)
    )
    return gx


def _instance_norm_backward_fake(grad_y: Tensor, x: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=out_format(x))


instance_norm_op = define_op("triton_instance_norm", _instance_norm, _instance_norm_fake)
instance_norm_backward_op = define_op(
    "triton_instance_norm_backward", _instance_norm_backward, _instance_norm_backward_fake
)


def _setup(ctx, inputs, output):
    x, _eps = inputs
    _y, mean, rstd = output
    ctx.save_for_backward(x, mean, rstd)
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, grad_y, _grad_mean, _grad_rstd):
    x, mean, rstd = ctx.saved_tensors
    return torch.ops.din_ops.triton_instance_norm_backward(grad_y, x, mean, rstd), None


instance_norm_op.register_autograd(_backward, setup_context=_setup)
register_no_double_backward(instance_norm_backward_op, "triton_instance_norm_backward")

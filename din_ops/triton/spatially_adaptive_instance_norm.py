"""Triton spatially-adaptive instance norm: ``din_ops::triton_spatially_adaptive_instance_norm`` and
its backward, with the C++ operators' conventions (csrc/din_ops.cpp): gamma and beta are each
(N, C, H, W) or (N, C, 1, 1), beta may be None; backward returns grad_gamma of gamma's shape and
grad_beta as the per-plane sum (N, C, 1, 1) when beta_defined, else an empty (0,) tensor.

    y  = gamma * xh + beta,   xh = (x - mean) * rstd
    g  = gy * gamma
    gx = rstd * (g - mean_p(g) - xh * mean_p(g * xh))       (IN backward of g: docs/math.md)
    grad_gamma = gy * xh (full) or sum_p gy * xh (per plane);  grad_beta = sum_p gy

Same program shape as the instance norm kernels (one program per (n, block of channels), a
statistics pass and a writing pass); a full-size gamma/beta is read with its own strides (any
layout whose (h, w) are linear in p), a per-plane one once per program.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (acc_is_f64, addressable, define_op, empty_stats, launch, out_format,
                      register_no_double_backward, split_eps, split_mean, strides, to_acc)
from ._planes import block_stats, channel_block, normalized_tile
from .instance_norm import PLANE_CONFIGS, PLANE_KEY, plane_grid


@triton.jit
def _modulation(T, n, c, c_mask, p, m, s_n, s_c, s_p, FULL: tl.constexpr, ACC_F64: tl.constexpr):
    """gamma or beta at (n, c, p) as [BLOCK_C, BLOCK_P] (full) or [BLOCK_C, 1] (per plane)."""
    rows = T + n * s_n + c.to(tl.int64) * s_c
    if FULL:
        out = to_acc(tl.load(rows[:, None] + p[None, :] * s_p, mask=m, other=0.0), ACC_F64)
    else:
        out = to_acc(tl.load(rows, mask=c_mask, other=0.0), ACC_F64)[:, None]
    return out


@triton.autotune(configs=PLANE_CONFIGS, key=PLANE_KEY)
@triton.jit
def _forward_kernel(X, G, B, Y, MEAN, RSTD, C, P,
                    s_xn, s_xc, s_xp, s_gn, s_gc, s_gp, s_bn, s_bc, s_bp, s_yn, s_yc, s_yp, eps_hi, eps_lo,
                    GAMMA_FULL: tl.constexpr, HAS_BETA: tl.constexpr, BETA_FULL: tl.constexpr,
                    ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, c_mask, x_rows, hi, lo, r = block_stats(X, MEAN, RSTD, C, P, s_xn, s_xc, s_xp, eps_hi, eps_lo,
                                                  ACC_F64, BLOCK_C, BLOCK_P)
    y_rows = Y + n * s_yn + c.to(tl.int64) * s_yc
    for p0 in range(0, P, BLOCK_P):
        p, m, y = normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64, BLOCK_P)
        y = y * _modulation(G, n, c, c_mask, p, m, s_gn, s_gc, s_gp, GAMMA_FULL, ACC_F64)
        if HAS_BETA:
            y += _modulation(B, n, c, c_mask, p, m, s_bn, s_bc, s_bp, BETA_FULL, ACC_F64)
        tl.store(y_rows[:, None] + p[None, :] * s_yp, y.to(Y.dtype.element_ty), mask=m)


@triton.autotune(configs=PLANE_CONFIGS, key=PLANE_KEY)
@triton.jit
def _backward_kernel(GY, X, G, MEAN, RSTD, GX, GG, GB, C, P,
                     s_yn, s_yc, s_yp, s_xn, s_xc, s_xp, s_gn, s_gc, s_gp, s_on, s_oc, s_op,
                     s_ggn, s_ggc, s_ggp,
                     GAMMA_FULL: tl.constexpr, BETA_DEFINED: tl.constexpr,
                     ACC_F64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, c_mask, x_rows = channel_block(X, C, s_xn, s_xc, BLOCK_C)
    hi, lo = split_mean(tl.load(MEAN + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    r = to_acc(tl.load(RSTD + n * C + c, mask=c_mask, other=0.0), ACC_F64)
    gy_rows = GY + n * s_yn + c.to(tl.int64) * s_yc
    s_g = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)    # sum g
    s_gxh = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)  # sum g * xh
    s_dxh = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)  # sum gy * xh
    s_dy = to_acc(tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32), ACC_F64)   # sum gy
    for p0 in range(0, P, BLOCK_P):
        p, m, xh = normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64, BLOCK_P)
        dy = to_acc(tl.load(gy_rows[:, None] + p[None, :] * s_yp, mask=m, other=0.0), ACC_F64)
        g = dy * _modulation(G, n, c, c_mask, p, m, s_gn, s_gc, s_gp, GAMMA_FULL, ACC_F64)
        s_g += g  # dy is 0 outside the planes, and so is g
        s_gxh += g * xh
        if not GAMMA_FULL:
            s_dxh += dy * xh
        if BETA_DEFINED:
            s_dy += dy
    m1 = tl.sum(s_g, axis=1) / P
    m2 = tl.sum(s_gxh, axis=1) / P
    if not GAMMA_FULL:
        tl.store(GG + n * C + c, tl.sum(s_dxh, axis=1).to(GG.dtype.element_ty), mask=c_mask)
    if BETA_DEFINED:
        tl.store(GB + n * C + c, tl.sum(s_dy, axis=1).to(GB.dtype.element_ty), mask=c_mask)
    o_rows = GX + n * s_on + c.to(tl.int64) * s_oc
    gg_rows = GG + n * s_ggn + c.to(tl.int64) * s_ggc
    for p0 in range(0, P, BLOCK_P):
        p, m, xh = normalized_tile(x_rows, c_mask, p0, P, s_xp, hi, lo, r, ACC_F64, BLOCK_P)
        dy = to_acc(tl.load(gy_rows[:, None] + p[None, :] * s_yp, mask=m, other=0.0), ACC_F64)
        g = dy * _modulation(G, n, c, c_mask, p, m, s_gn, s_gc, s_gp, GAMMA_FULL, ACC_F64)
        gx = r[:, None] * (g - m1[:, None] - xh * m2[:, None])
        tl.store(o_rows[:, None] + p[None, :] * s_op, gx.to(GX.dtype.element_ty), mask=m)
        if GAMMA_FULL:
            tl.store(gg_rows[:, None] + p[None, :] * s_ggp, (dy * xh).to(GG.dtype.element_ty), mask=m)


def _is_full(t: Tensor, x: Tensor) -> bool:
    """Whether gamma/beta `t` is full size (N, C, H, W) rather than per plane (N, C, 1, 1)."""
    return t.shape[2] == x.shape[2] and t.shape[3] == x.shape[3]


def _mod_strides(t: Tensor) -> tuple[int, int, int]:
    return strides(t) if t.shape[2] * t.shape[3] > 1 else (t.stride(0), t.stride(1), 0)


def _sain(x: Tensor, gamma: Tensor, beta: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    y = torch.empty_like(x, memory_format=out_format(x))
    mean, rstd = empty_stats(x)
    x, gamma = addressable(x), addressable(gamma)
    n, c, h, w = x.shape
    if x.numel() == 0:
        return y, mean, rstd
    b = gamma if beta is None else addressable(beta)
    launch(_forward_kernel)[plane_grid(n, c)](
        x, gamma, b, y, mean, rstd, c, h * w,
        *strides(x), *_mod_strides(gamma), *_mod_strides(b), *strides(y), *split_eps(eps),
        GAMMA_FULL=_is_full(gamma, x), HAS_BETA=beta is not None,
        BETA_FULL=beta is not None and _is_full(beta, x), ACC_F64=acc_is_f64(x),
    )
    return y, mean, rstd


def _sain_fake(x: Tensor, gamma: Tensor, beta: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.empty_like(x, memory_format=out_format(x)), *empty_stats(x))


def _backward_outputs(x: Tensor, gamma: Tensor, beta_defined: bool) -> tuple[Tensor, Tensor, Tensor]:
    n, c = x.shape[0], x.shape[1]
    gx = torch.empty_like(x, memory_format=out_format(x))
    if _is_full(gamma, x):
        grad_gamma = torch.empty_like(x, memory_format=out_format(x))
    else:
        grad_gamma = x.new_empty((n, c, 1, 1))
    grad_beta = x.new_empty((n, c, 1, 1)) if beta_defined else x.new_empty((0,))
    return gx, grad_gamma, grad_beta


def _sain_backward(grad_y: Tensor, x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor,
                   beta_defined: bool) -> tuple[Tensor, Tensor, Tensor]:
    gx, grad_gamma, grad_beta = _backward_outputs(x, gamma, beta_defined)
    x, gamma, gy = addressable(x), addressable(gamma), addressable(grad_y)
    mean, rstd = mean.contiguous(), rstd.contiguous()
    n, c, h, w = x.shape
    if x.numel() == 0:
        return gx, grad_gamma.zero_(), grad_beta.zero_()
    full = _is_full(gamma, x)
    launch(_backward_kernel)[plane_grid(n, c)](
        gy, x, gamma, mean, rstd, gx, grad_gamma, grad_beta if beta_defined else grad_gamma, c, h * w,
        *strides(gy), *strides(x), *_mod_strides(gamma), *strides(gx), *_mod_strides(grad_gamma),
        GAMMA_FULL=full, BETA_DEFINED=beta_defined, ACC_F64=acc_is_f64(x),
    )
    return gx, grad_gamma, grad_beta


def _sain_backward_fake(grad_y: Tensor, x: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor,
                        beta_defined: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _backward_outputs(x, gamma, beta_defined)


sain_op = define_op("triton_spatially_adaptive_instance_norm", _sain, _sain_fake)
sain_backward_op = define_op(
    "triton_spatially_adaptive_instance_norm_backward", _sain_backward, _sain_backward_fake
)


def _setup(ctx, inputs, output):
    x, gamma, beta, _eps = inputs
    _y, mean, rstd = output
    ctx.save_for_backward(x, gamma, mean, rstd)
    ctx.beta_form = None if beta is None else ("full" if _is_full(beta, x) else "plane")
    ctx.mark_non_differentiable(mean, rstd)


def _backward(ctx, grad_y, _grad_mean, _grad_rstd):
    x, gamma, mean, rstd = ctx.saved_tensors
    gx, ggamma, gbeta = torch.ops.din_ops.triton_spatially_adaptive_instance_norm_backward(
        grad_y, x, gamma, mean, rstd, ctx.beta_form is not None
    )
    if ctx.beta_form == "full":
        gbeta = grad_y  # dy/dbeta is the identity
    elif ctx.beta_form is None:
        gbeta = None
    return gx, ggamma, gbeta, None


sain_op.register_autograd(_backward, setup_context=_setup)
register_no_double_backward(sain_backward_op, "triton_spatially_adaptive_instance_norm_backward")

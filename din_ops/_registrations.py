"""Fake (meta) kernels and autograd for the operators declared in csrc/din_ops.cpp.

The fake kernels let torch.compile and torch.export trace the ops without running them; they must
give outputs of exactly the shapes, dtypes and strides that the real kernels return.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import backends

_ops = torch.ops.din_ops


def _out_format(x: Tensor) -> torch.memory_format:
    """The memory format of the kernels' outputs: channels_last for a channels_last x that is not
    also plain contiguous, contiguous otherwise (the rule csrc/cpu/common.h follows)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _stats_like(x: Tensor) -> tuple[Tensor, Tensor]:
    shape = (x.shape[0], x.shape[1])
    return x.new_empty(shape, dtype=torch.float64), x.new_empty(shape, dtype=torch.float64)


def _no_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"din_ops: double backward through {name} is not supported "
            "(use backend='reference' for higher-order gradients)"
        )

    return backward


if backends.extension_loaded():

    @torch.library.register_fake("din_ops::instance_norm")
    def _instance_norm_fake(x: Tensor, eps: float):
        return (torch.empty_like(x, memory_format=_out_format(x)), *_stats_like(x))

    @torch.library.register_fake("din_ops::instance_norm_backward")
    def _instance_norm_backward_fake(grad_y: Tensor, x: Tensor, mean: Tensor, rstd: Tensor):
        return torch.empty_like(x, memory_format=_out_format(x))

    @torch.library.register_fake("din_ops::dynamic_instance_norm_1x1")
    def _din_1x1_fake(x: Tensor, weight: Tensor, bias, eps: float):
        n, _, h, w = x.shape
        y = x.new_empty((n, weight.shape[1], h, w)).contiguous(memory_format=_out_format(x))
        return (y, *_stats_like(x))

    @torch.library.register_fake("din_ops::dynamic_instance_norm_1x1_backward")
    def _din_1x1_backward_fake(grad_y, x, weight, mean, rstd):
        n, co = weight.shape[0], weight.shape[1]
        return (
            torch.empty_like(x, memory_format=_out_format(x)),
            weight.new_empty(weight.shape),
            weight.new_empty((n, co)),
        )

    def _instance_norm_setup(ctx, inputs, output):
        x, _eps = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, mean, rstd)
        ctx.mark_non_differentiable(mean, rstd)

    def _instance_norm_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, mean, rstd = ctx.saved_tensors
        return _ops.instance_norm_backward(grad_y, x, mean, rstd), None

    torch.library.register_autograd(
        "din_ops::instance_norm", _instance_norm_backward, setup_context=_instance_norm_setup
    )

    def _din_1x1_setup(ctx, inputs, output):
        x, weight, bias, _eps = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, rstd)

    def _din_1x1_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _ops.dynamic_instance_norm_1x1_backward(grad_y, x, weight, mean, rstd)
        return gx, gw, gb if ctx.has_bias else None, None

    torch.library.register_autograd(
        "din_ops::dynamic_instance_norm_1x1", _din_1x1_backward, setup_context=_din_1x1_setup
    )

    for _name in ("instance_norm_backward", "dynamic_instance_norm_1x1_backward"):
        torch.library.register_autograd(
            f"din_ops::{_name}", _no_double_backward(_name), setup_context=lambda ctx, inputs, output: None
        )

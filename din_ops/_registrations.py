"""Fake (meta) kernels and autograd for the operators declared in csrc/din_ops.cpp.

The fake kernels let torch.compile and torch.export trace the ops without running them; they must
give outputs of exactly the shapes, dtypes and strides that the real kernels return.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from . import backends, reference

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


def _sum_to_batch(grad: Tensor, like: Tensor) -> Tensor:
    """The backward ops return per-sample gradients (batch N); an operand of batch 1 that was
    applied to every sample gets their sum over the batch."""
    if like.shape[0] == 1 and grad.shape[0] != 1:
        return grad.sum(0, keepdim=True)
    return grad


def _no_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(
            f"din_ops: double backward through {name} is not supported "
            "(use backend='reference' for higher-order gradients)"
        )

    return backward


def _register_fake(qualname: str):
    """torch.library.register_fake for ``qualname``, the kernel first checking that every tensor
    argument is on the device of the first one, as the compiled kernels do. (A meta tensor passed
    with CPU ones dispatches every din_ops operator to its fake kernel, which would otherwise
    return uninitialized memory as the result.)"""

    def register(fn):
        names = list(inspect.signature(fn).parameters)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            tensors = [(n, a) for n, a in zip(names, args) if isinstance(a, Tensor)]
            tensors += [(n, a) for n, a in kwargs.items() if isinstance(a, Tensor)]
            first, device = tensors[0][0], tensors[0][1].device
            for name, t in tensors[1:]:
                if t.device != device:
                    raise ValueError(
                        f"din_ops: expected {name} on the device of {first} ({device}), got {t.device}"
                    )
            return fn(*args, **kwargs)

        return torch.library.register_fake(qualname)(checked)

    return register


if backends.extension_loaded():

    @_register_fake("din_ops::instance_norm")
    def _instance_norm_fake(x: Tensor, eps: float, unbiased: bool = False):
        return (torch.empty_like(x, memory_format=_out_format(x)), *_stats_like(x))

    @_register_fake("din_ops::instance_norm_backward")
    def _instance_norm_backward_fake(grad_y: Tensor, x: Tensor, mean: Tensor, rstd: Tensor):
        return torch.empty_like(x, memory_format=_out_format(x))

    @_register_fake("din_ops::dynamic_instance_norm_1x1")
    def _din_1x1_fake(x: Tensor, weight: Tensor, bias, eps: float, unbiased: bool = False):
        n, _, h, w = x.shape
        y = x.new_empty((n, weight.shape[1], h, w)).contiguous(memory_format=_out_format(x))
        return (y, *_stats_like(x))

    @_register_fake("din_ops::dynamic_instance_norm_1x1_backward")
    def _din_1x1_backward_fake(grad_y, x, weight, mean, rstd):
        # Per-sample gradients (batch N of x, also for a batch-1 weight).
        n, co = x.shape[0], weight.shape[1]
        return (
            torch.empty_like(x, memory_format=_out_format(x)),
            weight.new_empty((n, co, weight.shape[2])),
            weight.new_empty((n, co)),
        )

    @_register_fake("din_ops::instance_stats")
    def _instance_stats_fake(x: Tensor):
        return _stats_like(x)

    def _instance_stats_setup(ctx, inputs, output):
        (x,) = inputs
        mean, _var = output
        ctx.save_for_backward(x, mean)

    @_register_fake("din_ops::instance_stats_backward")
    def _instance_stats_backward_fake(grad_mean, grad_var, x: Tensor, mean):
        return torch.empty_like(x, memory_format=_out_format(x))

    def _instance_stats_backward(ctx, grad_mean, grad_var):
        # mean = sum(x) / M, var = sum((x - mean)^2) / M:
        # dL/dx = (grad_mean + 2 * grad_var * (x - mean)) / M   (the mean's own term sums to 0).
        x, mean = ctx.saved_tensors
        grad_mean = torch.zeros_like(mean) if grad_mean is None else grad_mean
        grad_var = torch.zeros_like(mean) if grad_var is None else grad_var
        return _ops.instance_stats_backward(grad_mean, grad_var, x, mean)

    torch.library.register_autograd(
        "din_ops::instance_stats", _instance_stats_backward, setup_context=_instance_stats_setup
    )

    def _instance_norm_setup(ctx, inputs, output):
        x, _eps, _unbiased = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, mean, rstd)
        ctx.mark_non_differentiable(mean, rstd)

    def _instance_norm_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, mean, rstd = ctx.saved_tensors
        return _ops.instance_norm_backward(grad_y, x, mean, rstd), None, None

    torch.library.register_autograd(
        "din_ops::instance_norm", _instance_norm_backward, setup_context=_instance_norm_setup
    )

    def _din_1x1_setup(ctx, inputs, output):
        x, weight, bias, _eps, _unbiased = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.bias_batch = None if bias is None else bias.shape[0]
        ctx.mark_non_differentiable(mean, rstd)

    def _din_1x1_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _ops.dynamic_instance_norm_1x1_backward(grad_y, x, weight, mean, rstd)
        gb = None if ctx.bias_batch is None else _sum_to_batch(gb, gb[: ctx.bias_batch])
        return gx, _sum_to_batch(gw, weight), gb, None, None

    torch.library.register_autograd(
        "din_ops::dynamic_instance_norm_1x1", _din_1x1_backward, setup_context=_din_1x1_setup
    )

    @_register_fake("din_ops::dynamic_conv")
    def _dynamic_conv_fake(x, weight, bias, stride, padding, dilation, groups, normalize, eps, unbiased=False):
        n, _, h, w = x.shape
        kh, kw = weight.shape[3], weight.shape[4]
        ho = (h + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (w + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        y = x.new_empty((n, weight.shape[1], ho, wo)).contiguous(memory_format=_out_format(x))
        return (y, *_stats_like(x))

    @_register_fake("din_ops::dynamic_conv_backward")
    def _dynamic_conv_backward_fake(
        grad_y, x, weight, mean, rstd, stride, padding, dilation, groups, normalize
    ):
        return (
            torch.empty_like(x, memory_format=_out_format(x)),
            weight.new_empty((x.shape[0], *weight.shape[1:])),
            weight.new_empty((x.shape[0], weight.shape[1])),
        )

    def _dynamic_conv_setup(ctx, inputs, output):
        x, weight, bias, stride, padding, dilation, groups, normalize, _eps, _unbiased = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.conv = (stride, padding, dilation, groups, normalize)
        ctx.bias_batch = None if bias is None else bias.shape[0]
        ctx.mark_non_differentiable(mean, rstd)

    def _dynamic_conv_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _ops.dynamic_conv_backward(grad_y, x, weight, mean, rstd, *ctx.conv)
        gb = None if ctx.bias_batch is None else _sum_to_batch(gb, gb[: ctx.bias_batch])
        return gx, _sum_to_batch(gw, weight), gb, None, None, None, None, None, None, None

    torch.library.register_autograd(
        "din_ops::dynamic_conv", _dynamic_conv_backward, setup_context=_dynamic_conv_setup
    )

    def _sain_full(t: Tensor, x: Tensor) -> bool:
        """Whether gamma/beta `t` is full size (N, C, H, W) rather than per plane (N, C, 1, 1)."""
        return t.shape[2] == x.shape[2] and t.shape[3] == x.shape[3]

    @_register_fake("din_ops::spatially_adaptive_instance_norm")
    def _sain_fake(x: Tensor, gamma: Tensor, beta, eps: float, unbiased: bool = False):
        return (torch.empty_like(x, memory_format=_out_format(x)), *_stats_like(x))

    @_register_fake("din_ops::spatially_adaptive_instance_norm_backward")
    def _sain_backward_fake(grad_y, x, gamma, mean, rstd, beta_defined: bool):
        # grad_gamma has gamma's shape (a full-size one in x's output layout); grad_beta is the
        # per-plane sum (N, C, 1, 1) when beta_defined, else an empty (0,) tensor.
        n, c = x.shape[0], x.shape[1]
        if _sain_full(gamma, x):
            grad_gamma = torch.empty_like(x, memory_format=_out_format(x))
        else:
            grad_gamma = x.new_empty((n, c, 1, 1))
        grad_beta = x.new_empty((n, c, 1, 1)) if beta_defined else x.new_empty((0,))
        return torch.empty_like(x, memory_format=_out_format(x)), grad_gamma, grad_beta

    def _sain_setup(ctx, inputs, output):
        x, gamma, beta, _eps, _unbiased = inputs
        _y, mean, rstd = output
        ctx.save_for_backward(x, gamma, mean, rstd)
        ctx.beta_form = None if beta is None else ("full" if _sain_full(beta, x) else "plane")
        ctx.beta_batch = None if beta is None else beta.shape[0]
        ctx.mark_non_differentiable(mean, rstd)

    def _sain_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, gamma, mean, rstd = ctx.saved_tensors
        gx, ggamma, gbeta = _ops.spatially_adaptive_instance_norm_backward(
            grad_y, x, gamma, mean, rstd, ctx.beta_form is not None
        )
        if ctx.beta_form == "full":
            gbeta = grad_y  # dy/dbeta is the identity: pass grad_y on, no copy
        elif ctx.beta_form is None:
            gbeta = None
        if gbeta is not None:
            gbeta = _sum_to_batch(gbeta, gbeta[: ctx.beta_batch])
        return gx, _sum_to_batch(ggamma, gamma), gbeta, None, None

    torch.library.register_autograd(
        "din_ops::spatially_adaptive_instance_norm", _sain_backward, setup_context=_sain_setup
    )

    @_register_fake("din_ops::adain")
    def _adain_fake(content: Tensor, style: Tensor, eps: float, unbiased: bool):
        y = torch.empty_like(content, memory_format=_out_format(content))
        return (y, *_stats_like(content), *_stats_like(style))

    def _adain_setup(ctx, inputs, output):
        content, style, _eps, unbiased = inputs
        _y, mean, rstd, style_mean, style_std = output
        ctx.save_for_backward(content, style, mean, rstd, style_mean, style_std)
        ctx.unbiased = unbiased
        ctx.mark_non_differentiable(mean, rstd, style_mean, style_std)

    def _adain_backward(ctx, grad_y, *_grad_stats):
        # y = gamma * IN(content) + beta with gamma = std_s * scale (ops._unbiased_scale: sqrt(k),
        # k = (M - 1) / M, for the unbiased content variance) and beta = mean_s:
        # spatially_adaptive_instance_norm's backward gives grad_content and the per-plane sums for
        # gamma and beta. Then std_s = sqrt(v * var_s + eps) (v = Ms / (Ms - 1) unbiased, else 1),
        # so dL/dvar_s = v * dL/dstd_s / (2 std_s), and instance_stats' backward gives grad_style.
        from .ops import _unbiased_scale

        content, style, mean, rstd, style_mean, style_std = ctx.saved_tensors
        c = content.shape[1]
        scale, _ = _unbiased_scale(content, 0.0, ctx.unbiased)
        gamma = (style_std * scale).to(content.dtype).reshape(-1, c, 1, 1)
        gx, ggamma, gbeta = _ops.spatially_adaptive_instance_norm_backward(
            grad_y, content, gamma, mean, rstd, True
        )
        grad_style = None
        if ctx.needs_input_grad[1]:
            g_std = _sum_to_batch(ggamma, style).reshape(-1, c).double() * scale
            g_mean = _sum_to_batch(gbeta, style).reshape(-1, c).double()
            g_var = g_std / (2 * style_std)
            if ctx.unbiased:  # v times, as the unbiased variance is v times the biased one
                g_var = reference.unbiased_variance(g_var, style.shape[2] * style.shape[3])
            grad_style = _ops.instance_stats_backward(g_mean, g_var, style, style_mean)
        return gx if ctx.needs_input_grad[0] else None, grad_style, None, None

    torch.library.register_autograd("din_ops::adain", _adain_backward, setup_context=_adain_setup)

    @_register_fake("din_ops::deformable_conv")
    def _deformable_conv_fake(
        x, weight, bias, offset, mask, stride, padding, dilation, groups, offset_groups, normalize, eps,
        unbiased=False,
    ):
        n = x.shape[0]
        y = x.new_empty((n, weight.shape[1], offset.shape[2], offset.shape[3]))
        return (y.contiguous(memory_format=_out_format(x)), *_stats_like(x))

    @_register_fake("din_ops::deformable_conv_backward")
    def _deformable_conv_backward_fake(
        grad_y, x, weight, offset, mask, mean, rstd, stride, padding, dilation, groups, offset_groups,
        normalize,
    ):
        return (
            torch.empty_like(x, memory_format=_out_format(x)),
            weight.new_empty((x.shape[0], *weight.shape[1:])),
            weight.new_empty((x.shape[0], weight.shape[1])),
            offset.new_empty(offset.shape),
            mask.new_empty(mask.shape) if mask is not None else x.new_empty((0,)),
        )

    def _deformable_conv_setup(ctx, inputs, output):
        x, weight, bias, offset, mask, stride, padding, dilation, groups, offset_groups, normalize, _eps, _unbiased = (
            inputs
        )
        _y, mean, rstd = output
        ctx.save_for_backward(x, weight, offset, mask, mean, rstd)
        ctx.conv = (stride, padding, dilation, groups, offset_groups, normalize)
        ctx.bias_batch = None if bias is None else bias.shape[0]
        ctx.mark_non_differentiable(mean, rstd)

    def _deformable_conv_backward(ctx, grad_y, _grad_mean, _grad_rstd):
        x, weight, offset, mask, mean, rstd = ctx.saved_tensors
        gx, gw, gb, goffset, gmask = _ops.deformable_conv_backward(
            grad_y, x, weight, offset, mask, mean, rstd, *ctx.conv
        )
        gb = None if ctx.bias_batch is None else _sum_to_batch(gb, gb[: ctx.bias_batch])
        return (
            gx, _sum_to_batch(gw, weight), gb, goffset, gmask if mask is not None else None,
            None, None, None, None, None, None, None, None,
        )

    torch.library.register_autograd(
        "din_ops::deformable_conv", _deformable_conv_backward, setup_context=_deformable_conv_setup
    )
    torch.library.register_autograd(
        "din_ops::deformable_conv_backward",
        _no_double_backward("deformable_conv_backward"),
        setup_context=lambda ctx, inputs, output: None,
    )

    for _name in (
        "instance_stats_backward",
        "instance_norm_backward",
        "dynamic_instance_norm_1x1_backward",
        "dynamic_conv_backward",
        "spatially_adaptive_instance_norm_backward",
    ):
        torch.library.register_autograd(
            f"din_ops::{_name}", _no_double_backward(_name), setup_context=lambda ctx, inputs, output: None
        )

"""Multiply-accumulate formulas of the din_ops operators for ``torch.utils.flop_counter``.

``FlopCounterMode`` counts an operator only when a formula is registered for it; without these the
dynamic convolutions of a DIN network would count as 0. The formulas follow PyTorch's own
convention for ``aten.convolution``: FLOPs = 2 x multiply-accumulates, and normalization and
elementwise work (mean, variance, scale, shift) count as 0, as for ``aten.native_instance_norm`` and
``aten.mul``. So a model counts the same whether it runs on the din_ops kernels or on
:mod:`din_ops.reference` (whose dynamic convolution is an ``F.conv2d``).

Backward formulas count the input gradient and the weight gradient, each as large as the forward.
Imported by ``din_ops``; :func:`register` is idempotent.
"""
from __future__ import annotations

from math import prod

import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula

Shape = tuple[int, ...]


def din_1x1_flops(x: Shape, weight: Shape, *args, out_shape=None, **kwargs) -> int:
    """dynamic_instance_norm_1x1: x (N, C, H, W), weight (N, Co, C): 2 * N * Co * C * H * W."""
    n, c, h, w = x
    return 2 * n * weight[1] * c * h * w


def dynamic_conv_flops(x: Shape, weight: Shape, *args, out_shape=None, **kwargs) -> int:
    """dynamic_conv: weight (N, Co, C // groups, kh, kw), output (N, Co, Ho, Wo):
    2 * N * Co * Ho * Wo * (C // groups) * kh * kw."""
    y = out_shape[0]
    return 2 * prod(y) * prod(weight[2:])


def _zero(*args, out_shape=None, **kwargs) -> int:
    return 0


def _backward(forward):
    def backward(grad_y: Shape, x: Shape, weight: Shape, *args, out_shape=None, **kwargs) -> int:
        # Input gradient and weight gradient, each the size of the forward product.
        return 2 * forward(x, weight, out_shape=(grad_y,))

    return backward


def register() -> None:
    """Registers the formulas (once) for every din_ops operator that is loaded."""
    ops = torch.ops.din_ops
    table = {
        "dynamic_instance_norm_1x1": din_1x1_flops,
        "dynamic_conv": dynamic_conv_flops,
        "dynamic_instance_norm_1x1_backward": _backward(din_1x1_flops),
        "dynamic_conv_backward": _backward(dynamic_conv_flops),
        "instance_norm": _zero,
        "instance_norm_backward": _zero,
        "spatially_adaptive_instance_norm": _zero,
        "spatially_adaptive_instance_norm_backward": _zero,
    }
    for name, formula in table.items():
        if not hasattr(ops, name):
            continue
        packet = getattr(ops, name)
        if packet not in flop_registry:
            register_flop_formula(packet)(formula)

"""Pure-PyTorch reference implementations of every din_ops operator.

These are the literal formulas (normalize, then convolve), written for clarity rather than speed.
Every backend is tested against them, the benchmarks use them as the baseline, and
``backend="reference"`` selects them. Autograd comes from PyTorch itself. Computing in float64 gives
the ground truth the tests compare with.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def instance_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Instance normalization of ``x`` (N, C, H, W) without affine parameters.

    ``(x - mean) / sqrt(var + eps)`` with the mean and the biased variance of each (n, c) plane, as
    ``torch.nn.functional.instance_norm``.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = (x - mean).square().mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def dynamic_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """A different 1x1 convolution for every sample: ``y[n] = weight[n] @ x[n] + bias[n]``.

    ``weight`` is (N, Co, C) or (N, Co, C, 1, 1), ``bias`` (N, Co) or None. Written as one grouped
    ``conv2d`` with the batch folded into the groups, the way PyTorch users write it today.
    """
    n, c, h, w = x.shape
    weight = weight.reshape(n, -1, c)
    co = weight.shape[1]
    y = F.conv2d(
        x.reshape(1, n * c, h, w),
        weight.reshape(n * co, c, 1, 1),
        None if bias is None else bias.reshape(n * co),
        groups=n,
    )
    return y.reshape(n, co, h, w)


def dynamic_instance_norm(
    x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *, eps: float = 1e-5
) -> Tensor:
    """Dynamic instance normalization (Jing et al., AAAI 2020): instance norm, then a per-sample
    dynamic convolution whose weight and bias were predicted from a style image."""
    return dynamic_conv2d(instance_norm(x, eps), weight, bias)

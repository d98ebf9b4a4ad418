"""Pure-PyTorch reference implementations of every din_ops operator.

These are the literal formulas (normalize, then convolve), written for clarity rather than speed.
Every backend is tested against them, the benchmarks use them as the baseline, and
``backend="reference"`` selects them. Autograd comes from PyTorch itself. Computing in float64 gives
the ground truth the tests compare with.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

_Size = Union[int, tuple[int, int]]


def unbiased_variance(var: Tensor, count: int) -> Tensor:
    """The unbiased variance ``var * M / (M - 1)`` from the biased one of ``count = M`` values.

    One value (M = 1) has no unbiased variance (``torch.var`` returns NaN there); din_ops defines it
    as 0, the variance of the one value about itself, so such a plane normalizes to 0 (as with the
    biased variance) and its standard deviation is ``sqrt(eps)``. NaN in ``var`` stays NaN.
    """
    return var * (count / (count - 1) if count > 1 else 0.0)


def _centered(x: Tensor) -> tuple[Tensor, Tensor]:
    """The mean of each (n, c) plane of x and ``x - mean``, which is exactly 0 on a plane whose values
    are all equal (its float mean may be off by a rounding, which would leave ``x - mean`` and the
    variance slightly non-zero). There ``x - mean`` less its own value (detached) is 0 with the
    gradient of ``x - mean``, so autograd differentiates the plain formula everywhere."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    centered = x - mean
    constant = (x == x[:, :, :1, :1]).all(dim=(2, 3), keepdim=True)
    return mean, centered - torch.where(constant, centered.detach(), torch.zeros_like(centered))


def instance_norm(x: Tensor, eps: float = 1e-5, unbiased: bool = False) -> Tensor:
    """Instance normalization of ``x`` (N, C, H, W) without affine parameters.

    ``(x - mean) / sqrt(var + eps)`` with the mean and the biased variance of each (n, c) plane, as
    ``torch.nn.functional.instance_norm`` (``unbiased=True``: the unbiased variance
    ``var * M / (M - 1)`` of the M = H * W values, as ``torch.var`` computes by default, 0 for
    M = 1; eps is added to whichever variance is used, inside the square root), with one defined
    edge case: a plane whose ``var + eps`` is 0 (constant, or a single pixel, with ``eps = 0``)
    normalizes to 0 with a zero gradient, where the plain formula gives 0 / 0 = NaN. An inf or NaN
    in a plane makes that whole plane NaN. A constant plane normalizes to exactly 0 for any eps.
    """
    _, centered = _centered(x)  # exactly 0 on a constant plane, whose variance is then 0 too
    var = centered.square().mean(dim=(2, 3), keepdim=True)
    if unbiased:
        var = unbiased_variance(var, x.shape[2] * x.shape[3])
    v = var + eps
    # Divide only by positive values, so that neither branch nor its gradient is inf or NaN (a NaN
    # v, from inf/NaN in x, is not 0 and stays in the result).
    zero = v == 0
    y = centered / torch.sqrt(torch.where(zero, torch.ones_like(v), v))
    return torch.where(zero, torch.zeros_like(y), y)


def dynamic_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stride: _Size = 1,
    padding: Union[_Size, str] = 0,
    dilation: _Size = 1,
    groups: int = 1,
) -> Tensor:
    """A different convolution for every sample: ``y[n] = conv2d(x[n], weight[n], bias[n], ...)``.

    ``weight`` is (N, Co, C // groups, kh, kw) (or (N, Co, C) for 1x1), ``bias`` (N, Co) or None;
    stride, padding (ints, pairs, "same" or "valid"), dilation and groups as in ``F.conv2d``. Written
    as one ``conv2d`` with the batch folded into the groups, the way PyTorch users write it today.
    """
    if weight.dim() == 3:
        weight = weight[..., None, None]
    if padding == "same" and stride in (1, (1, 1), [1, 1]):
        # The same zero padding, written out: F.conv2d(padding="same") in bfloat16 on the CPU
        # crashes (segmentation fault, torch 2.13) for some even kernels with dilation, e.g.
        # x (1, 6, 1, 6), weight (2, 3, 4, 3), dilation (3, 1), groups 2. As in F.conv2d, the odd
        # pixel of an even kernel's padding goes to the bottom/right.
        dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
        th, tw = dh * (weight.shape[-2] - 1), dw * (weight.shape[-1] - 1)
        x = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
        padding = 0
    n, c, h, w = x.shape
    co = weight.shape[1]
    if co == 0 and n > 0:
        # No output channel, which F.conv2d refuses: the empty output (N, 0, Ho, Wo) is the first
        # 0 channels of a one-channel convolution of x's first channel (so x's gradient is 0), and
        # weight and bias join the graph with their (empty) zero gradients.
        y = F.conv2d(x[:, :1], weight.new_zeros(1, 1, *weight.shape[3:]), None, stride=stride,
                     padding=padding, dilation=dilation)[:, :0]
        return y + 0 * (weight.sum() + (0 if bias is None else bias.sum()))
    if n == 0:
        # An empty batch folds into 0 groups, which F.conv2d refuses: one plain conv2d of the empty
        # batch instead, with the (zero) sums over the empty batch of weight and bias, so that the
        # output (0, Co, Ho, Wo) and the (empty) gradients still come from autograd.
        return F.conv2d(
            x, weight.sum(0), None if bias is None else bias.reshape(n, co).sum(0),
            stride=stride, padding=padding, dilation=dilation, groups=groups,
        )
    y = F.conv2d(
        x.reshape(1, n * c, h, w),
        weight.reshape(n * co, *weight.shape[2:]),
        None if bias is None else bias.reshape(n * co),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=n * groups,
    )
    return y.reshape(n, co, *y.shape[2:])


def dynamic_instance_norm(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stride: _Size = 1,
    padding: Union[_Size, str] = 0,
    dilation: _Size = 1,
    groups: int = 1,
    eps: float = 1e-5,
    unbiased: bool = False,
) -> Tensor:
    """Dynamic instance normalization (Jing et al., AAAI 2020): instance norm, then a per-sample
    dynamic convolution whose weight and bias were predicted from a style image."""
    return dynamic_conv2d(
        instance_norm(x, eps, unbiased), weight, bias, stride=stride, padding=padding,
        dilation=dilation, groups=groups,
    )


def spatially_adaptive_instance_norm(
    x: Tensor, gamma: Tensor, beta: Optional[Tensor] = None, eps: float = 1e-5,
    unbiased: bool = False,
) -> Tensor:
    """Spatially adaptive instance normalization: ``gamma * instance_norm(x) + beta``.

    ``gamma`` and ``beta`` are (N, C, H, W) or (N, C, 1, 1) (broadcast over the plane, and over the
    batch when their batch is 1); ``beta=None`` means zero.
    """
    y = gamma * instance_norm(x, eps, unbiased)
    return y if beta is None else y + beta


def style_stats(style: Tensor, eps: float = 1e-5, unbiased: bool = False) -> tuple[Tensor, Tensor]:
    """Per-(n, c) mean and standard deviation ``sqrt(var + eps)`` of ``style`` (N, C, H, W), each
    (N, C, 1, 1): AdaIN's style statistics (``unbiased`` as in :func:`instance_norm`; a constant
    plane has variance exactly 0, so its std is ``sqrt(eps)``)."""
    mean, centered = _centered(style)
    var = centered.square().mean(dim=(2, 3), keepdim=True)
    if unbiased:
        var = unbiased_variance(var, style.shape[2] * style.shape[3])
    return mean, torch.sqrt(var + eps)


def adain(
    content: Tensor, style_mean: Tensor, style_std: Tensor, alpha: float = 1.0,
    eps: float = 1e-5, unbiased: bool = False,
) -> Tensor:
    """Adaptive instance normalization (Huang & Belongie, 2017) from the style's statistics:
    ``t = style_std * instance_norm(content) + style_mean``, then ``alpha * t + (1 - alpha) *
    content``. ``style_mean`` and ``style_std`` are (N, C, 1, 1) or (1, C, 1, 1)."""
    t = spatially_adaptive_instance_norm(content, style_std, style_mean, eps, unbiased)
    return t if alpha == 1.0 else alpha * t + (1.0 - alpha) * content


def _pair_of(value: _Size) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def deformable_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    offset: Tensor,
    mask: Optional[Tensor] = None,
    *,
    stride: _Size = 1,
    padding: Union[_Size, str] = 0,
    dilation: _Size = 1,
    groups: int = 1,
) -> Tensor:
    """Deformable per-sample convolution (DCNv1; DCNv2 with ``mask``), from the definition.

    Offsets and mask have the layout of ``torchvision.ops.deform_conv2d``: ``offset`` is
    (N, 2 * G * kh * kw, Ho, Wo) with the (dy, dx) pair of tap t = i * kw + j of offset group g at
    channels 2 * (g * kh * kw + t) and 2 * (g * kh * kw + t) + 1, ``mask`` is (N, G * kh * kw, Ho, Wo)
    or None (ones); channel c of x belongs to offset group c // (C // G). Tap (i, j) of output pixel
    (oh, ow) samples x at the fractional position

        (oh * stride_h - pad_top + i * dilation_h + dy,  ow * stride_w - pad_left + j * dilation_w + dx)

    by bilinear interpolation of the four surrounding pixels, each pixel outside the input counting
    as zero; the sample is multiplied by the mask, and ``y[n] = weight[n] @ samples + bias[n]``
    (per convolution group). With zero offsets and no mask this is :func:`dynamic_conv2d`.
    Vectorized over the whole batch: it materializes the (N, C * kh * kw, Ho * Wo) samples.
    """
    n, c, h, w = x.shape
    if weight.dim() == 3:
        weight = weight[..., None, None]
    co, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
    kk = kh * kw
    (sh, sw), (dh, dw) = _pair_of(stride), _pair_of(dilation)
    if isinstance(padding, str):  # as F.conv2d: "valid" is 0, "same" puts the odd pixel at the end
        pt, pl = (0, 0) if padding == "valid" else ((dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2)
    else:
        pt, pl = _pair_of(padding)
    ho, wo = offset.shape[2], offset.shape[3]
    g = offset.shape[1] // (2 * kk)

    # Sampling positions, (N, G, kk, Ho, Wo): the regular grid plus the offsets.
    dev, acc = x.device, offset.dtype
    taps_y = (torch.arange(kh, device=dev) * dh).repeat_interleave(kw)  # tap t = i * kw + j
    taps_x = (torch.arange(kw, device=dev) * dw).repeat(kh)
    grid_y = (torch.arange(ho, device=dev) * sh - pt)[None, :, None] + taps_y[:, None, None]
    grid_x = (torch.arange(wo, device=dev) * sw - pl)[None, None, :] + taps_x[:, None, None]
    off = offset.reshape(n, g, kk, 2, ho, wo)
    py = grid_y.to(acc) + off[:, :, :, 0]
    px = grid_x.to(acc) + off[:, :, :, 1]
    # A position outside (-1, H) x (-1, W), or NaN or infinite, samples zero with a zero gradient,
    # as in the kernels (din_ops/bilinear.h) and torchvision: it is moved to -2, where all four
    # corners are outside the input. (On the line y = -1 or x = -1 itself the one-sided formula
    # would weight an inside corner by zero; the point counts as outside.)
    valid = (py > -1) & (py < h) & (px > -1) & (px < w)  # False for NaN
    py = torch.where(valid, py, torch.full_like(py, -2.0))
    px = torch.where(valid, px, torch.full_like(px, -2.0))

    # Bilinear interpolation: the four corners, each weighted and dropped when outside the input
    # (its value is zero, not the clamped pixel times a zero weight, which is NaN next to an inf).
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    # The pixels of each plane and one zero past them (index h * w), where outside corners point.
    xs = F.pad(x.reshape(n, g, (c // g), h * w), (0, 1))
    samples = torch.zeros(n, g, c // g, kk * ho * wo, dtype=x.dtype, device=dev)
    for cy, cx, corner_weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                                  (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y0 + cy, x0 + cx
        inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        # In int64: a float32 product would round pixel indices above 2^24. (yy, xx are in [-2, h]
        # x [-2, w]: positions outside were moved to -2 above.)
        index = torch.where(inside, yy.long() * w + xx.long(), h * w).reshape(n, g, 1, kk * ho * wo)
        values = torch.gather(xs, 3, index.expand(n, g, c // g, kk * ho * wo))
        samples.addcmul_(values, (corner_weight * inside).reshape(n, g, 1, kk * ho * wo))
    if mask is not None:  # (sizes written out, not -1, so that an empty batch N = 0 runs too)
        samples = samples * mask.reshape(n, g, 1, kk * ho * wo)

    # The convolution is now a batched matrix product per convolution group.
    cols = samples.reshape(n, groups, (c // groups) * kk, ho * wo)
    y = weight.reshape(n, groups, co // groups, (c // groups) * kk) @ cols
    y = y.reshape(n, co, ho, wo)
    return y if bias is None else y + bias[:, :, None, None]


def deformable_instance_norm(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    offset: Tensor,
    mask: Optional[Tensor] = None,
    *,
    stride: _Size = 1,
    padding: Union[_Size, str] = 0,
    dilation: _Size = 1,
    groups: int = 1,
    eps: float = 1e-5,
) -> Tensor:
    """Deformable dynamic instance normalization: :func:`deformable_conv2d` of the instance-normalized
    x (samples outside the input are zero in the normalized domain)."""
    return deformable_conv2d(
        instance_norm(x, eps), weight, bias, offset, mask,
        stride=stride, padding=padding, dilation=dilation, groups=groups,
    )

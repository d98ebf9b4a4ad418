"""The public din_ops functions: argument checks, backend choice, and the call into the operators.

Behaviour shared by every function (see docs/numerics.md):

- eps = 0 and a plane of zero variance (constant, or a single pixel): the plane normalizes to 0 and
  its gradient is 0 (rstd is defined as 0), where ``F.instance_norm`` returns NaN. inf or NaN in a
  plane makes that plane NaN, and every output it is mixed into, as in :mod:`din_ops.reference`.
- torch.autocast: the compiled ops compute in float32 and return the autocast dtype; float16,
  bfloat16 and float32 arguments may then be mixed; float64 calls are unchanged.
- The CPU kernels are deterministic (bitwise, for a fixed thread count) and thread-safe.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from . import backends, reference

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"din_ops: expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"din_ops: expected x to be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"din_ops: expected x of shape (N, C, H, W), got {_shape(x)}")
    if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(
            f"din_ops: expected x with C, H and W > 0 (an empty batch N = 0 is fine), got {_shape(x)}"
        )


def _check_eps(eps: float) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"din_ops: expected eps to be a float, got {type(eps).__name__}")
    if not eps >= 0:
        raise ValueError(f"din_ops: expected eps >= 0, got {eps}")


_AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _autocast_mix(t: Tensor, x: Tensor) -> bool:
    """Under torch.autocast on x's device the compiled ops cast float16/bfloat16/float32 arguments
    to float32 (csrc/cpu/autocast.cpp), so these may differ from x's dtype there."""
    return (
        t.dtype in _AUTOCAST_DTYPES
        and x.dtype in _AUTOCAST_DTYPES
        and torch.is_autocast_enabled(x.device.type)
    )


def _check_like_x(t: Tensor, name: str, x: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"din_ops: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != x.dtype and not _autocast_mix(t, x):
        raise TypeError(f"din_ops: expected {name} to have the dtype of x ({x.dtype}), got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"din_ops: expected {name} on the device of x ({x.device}), got {t.device}")


def instance_norm(x: Tensor, eps: float = 1e-5, *, backend: Optional[str] = None) -> Tensor:
    """Instance normalization without affine parameters.

    ``y[n, c] = (x[n, c] - mean) / sqrt(var + eps)`` over each (n, c) plane (biased variance),
    matching ``torch.nn.functional.instance_norm(x, eps=eps)``.

    Args:
        x: (N, C, H, W) float32/float64/float16/bfloat16 tensor, contiguous or channels_last (other
            strides are copied once). Statistics are accumulated in float32 (float64 for float64)
            with a shifted sum, so a large mean does not cost precision.
        eps: added to the variance, >= 0. With eps = 0 a plane of zero variance (constant, or one
            pixel) normalizes to 0 with a zero gradient, not NaN.
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".

    Returns:
        A tensor like x (channels_last when x is).
    """
    _check_x(x)
    _check_eps(eps)
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.instance_norm(x, eps)
    if chosen == "triton":
        return torch.ops.din_ops.triton_instance_norm(x, float(eps))[0]
    return torch.ops.din_ops.instance_norm(x, float(eps))[0]


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"din_ops: expected {name} to be a positive int or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def _padding(
    padding, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """padding as (top, bottom, left, right), with "same" and "valid" as in F.conv2d."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(f"din_ops: expected padding to be 'same', 'valid' or ints, got {padding!r}")
        if stride != (1, 1):
            raise ValueError(f"din_ops: padding='same' needs stride 1 (as in F.conv2d), got stride {stride}")
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        # F.conv2d puts the odd extra pixel of an even kernel at the bottom/right.
        return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
    pair = (
        (padding, padding) if isinstance(padding, int) and not isinstance(padding, bool) else tuple(padding)
    )
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair):
        raise ValueError(
            f"din_ops: expected padding to be an int >= 0, a pair of them, 'same' or 'valid', got {padding!r}"
        )
    return (pair[0], pair[0], pair[1], pair[1])


def _check_weight_bias(x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int) -> Tensor:
    """Validates weight and bias; returns weight as (N, Co, C // groups, kh, kw)."""
    _check_like_x(weight, "weight", x)
    n, c = x.shape[0], x.shape[1]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups <= 0 or c % groups:
        raise ValueError(f"din_ops: expected groups to be a positive int dividing C = {c}, got {groups!r}")
    w = weight[..., None, None] if weight.dim() == 3 else weight
    if w.dim() != 5 or w.shape[0] != n or w.shape[2] != c // groups or w.shape[1] % groups:
        raise ValueError(
            f"din_ops: expected weight of shape (N, Co, C // groups, kh, kw) or (N, Co, C // groups) "
            f"with N = {n} and C // groups = {c // groups} (from x and groups = {groups}) and Co "
            f"divisible by groups, got {_shape(weight)}"
        )
    if bias is not None:
        _check_like_x(bias, "bias", x)
        if _shape(bias) != (n, w.shape[1]):
            raise ValueError(
                f"din_ops: expected bias of shape (N, Co) = ({n}, {w.shape[1]}), got {_shape(bias)}"
            )
    return w


def _conv_args(x: Tensor, w: Tensor, stride, padding, dilation):
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    kernel = (w.shape[3], w.shape[4])
    pad = _padding(padding, kernel, stride, dilation)
    for dim, (size, p0, p1, k, d) in enumerate(
        [
            (x.shape[2], pad[0], pad[1], kernel[0], dilation[0]),
            (x.shape[3], pad[2], pad[3], kernel[1], dilation[1]),
        ]
    ):
        if size + p0 + p1 < d * (k - 1) + 1:
            raise ValueError(
                f"din_ops: the kernel {kernel} with dilation {dilation} is larger than the padded input "
                f"({x.shape[2] + pad[0] + pad[1]}, {x.shape[3] + pad[2] + pad[3]})"
            )
    return list(stride), list(pad), list(dilation)


def _prepare_conv(x, weight, bias, stride, padding, dilation, groups, backend):
    """Checks of the conv-style entry points; returns the 5-D weight, the operator's stride,
    padding (top, bottom, left, right) and dilation lists, and the chosen backend."""
    _check_x(x)
    w = _check_weight_bias(x, weight, bias, groups)
    stride_, pad, dilation_ = _conv_args(x, w, stride, padding, dilation)
    return w, stride_, pad, dilation_, backends.resolve(backend, x.device)


def dynamic_instance_norm(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stride: Union[int, tuple[int, int]] = 1,
    padding: Union[int, tuple[int, int], str] = 0,
    dilation: Union[int, tuple[int, int]] = 1,
    groups: int = 1,
    eps: float = 1e-5,
    backend: Optional[str] = None,
    offset: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Dynamic Instance Normalization (Jing et al., AAAI 2020).

    Instance-normalizes the content features ``x`` and applies a per-sample convolution whose weight
    and bias were predicted from a style image::

        y[n] = conv2d(IN(x)[n], weight[n], bias[n], stride, padding, dilation, groups)

    with exactly the semantics of ``torch.nn.functional.conv2d`` applied sample by sample (zero
    padding of the *normalized* input). The paper's default is a 1x1 kernel (weight (N, Co, C)):
    the kernels then fold the normalization into one GEMM per sample, and backward saves only x and
    the (N, C) statistics. k x k, grouped and depthwise (groups == C == Co) kernels normalize x on
    load and never write the normalized tensor.

    Args:
        x: content features (N, C, H, W), float32/float64/float16/bfloat16, contiguous or
            channels_last (other strides are copied once; the k x k kernels compute in NCHW, so a
            channels_last x costs a conversion there).
        weight: (N, Co, C // groups, kh, kw), or (N, Co, C) for a 1x1 kernel; dtype and device of x.
        bias: (N, Co) or None.
        stride, padding, dilation, groups: as in ``F.conv2d`` (padding may be "same" or "valid").
        eps: added to the variance of each (n, c) plane, >= 0. With eps = 0 a plane of zero
            variance normalizes to 0 (not NaN).
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".
        offset: None, or the sampling offsets of a deformable convolution (DCNv1), in the layout of
            ``torchvision.ops.deform_conv2d``: (N, 2 * G * kh * kw, Ho, Wo), the (dy, dx) pair of
            each tap, G offset groups dividing C. Each tap then samples the normalized input
            bilinearly at its shifted position (zero outside the input); see
            :func:`din_ops.reference.deformable_conv2d` for the exact definition.
        mask: None, or the modulation of each sample (DCNv2), (N, G * kh * kw, Ho, Wo); needs
            ``offset``.

    Returns:
        (N, Co, Ho, Wo), channels_last when x is.

    Example::

        content = encoder(content_image)                  # (N, C, H, W)
        w, b = weight_net(style), bias_net(style)         # (N, C, C), (N, C)
        features = din_ops.dynamic_instance_norm(content, w, b)
    """
    _check_eps(eps)
    w, stride_, pad, dilation_, chosen = _prepare_conv(
        x, weight, bias, stride, padding, dilation, groups, backend
    )
    if offset is not None or mask is not None:
        return _deformable(x, w, bias, offset, mask, stride_, pad, dilation_, groups, True, eps, chosen)
    if chosen == "reference":
        return reference.dynamic_instance_norm(
            x, w, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, eps=eps
        )
    if chosen == "triton":
        if not (w.shape[3:] == (1, 1) and stride_ == [1, 1] and pad == [0, 0, 0, 0] and groups == 1):
            raise ValueError(
                "din_ops: backend 'triton' covers only the 1x1 dynamic instance norm (weight (N, Co, C) "
                f"or (N, Co, C, 1, 1), stride 1, padding 0, groups 1), got weight {_shape(weight)}, stride "
                f"{stride_}, padding {pad}, groups {groups}; use backend='cuda', 'cpu' or 'reference'"
            )
        return torch.ops.din_ops.triton_dynamic_instance_norm_1x1(x, w.flatten(2), bias, float(eps))[0]
    if w.shape[3:] == (1, 1) and stride_ == [1, 1] and pad == [0, 0, 0, 0] and groups == 1:
        return torch.ops.din_ops.dynamic_instance_norm_1x1(x, w.flatten(2), bias, float(eps))[0]
    return torch.ops.din_ops.dynamic_conv(x, w, bias, stride_, pad, dilation_, groups, True, float(eps))[0]


def dynamic_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    stride: Union[int, tuple[int, int]] = 1,
    padding: Union[int, tuple[int, int], str] = 0,
    dilation: Union[int, tuple[int, int]] = 1,
    groups: int = 1,
    backend: Optional[str] = None,
    offset: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """A different convolution for every sample, without normalization:
    ``y[n] = conv2d(x[n], weight[n], bias[n], stride, padding, dilation, groups)``.

    Same arguments, layouts and dtypes as :func:`dynamic_instance_norm` (without ``eps``); with
    ``offset`` (and ``mask``) it is ``torchvision.ops.deform_conv2d`` with a per-sample weight.
    """
    w, stride_, pad, dilation_, chosen = _prepare_conv(
        x, weight, bias, stride, padding, dilation, groups, backend
    )
    if chosen == "triton":
        raise ValueError(
            "din_ops: backend 'triton' has no dynamic_conv2d kernels (it covers instance_norm, the 1x1 "
            "dynamic_instance_norm and spatially_adaptive_instance_norm); use backend='cuda', 'cpu' or "
            "'reference'"
        )
    if offset is not None or mask is not None:
        return _deformable(x, w, bias, offset, mask, stride_, pad, dilation_, groups, False, 0.0, chosen)
    if chosen == "reference":
        return reference.dynamic_conv2d(
            x, w, bias, stride=stride, padding=padding, dilation=dilation, groups=groups
        )
    return torch.ops.din_ops.dynamic_conv(x, w, bias, stride_, pad, dilation_, groups, False, 0.0)[0]


def _check_modulation(t: Tensor, name: str, x: Tensor) -> None:
    """gamma/beta of spatially_adaptive_instance_norm: (N, C, H, W) like x, or (N, C, 1, 1)."""
    _check_like_x(t, name, x)
    n, c, h, w = x.shape
    if _shape(t) not in ((n, c, h, w), (n, c, 1, 1)):
        raise ValueError(
            f"din_ops: expected {name} of shape (N, C, H, W) = ({n}, {c}, {h}, {w}) or "
            f"(N, C, 1, 1) = ({n}, {c}, 1, 1), got {_shape(t)}"
        )


def spatially_adaptive_instance_norm(
    x: Tensor,
    gamma: Tensor,
    beta: Optional[Tensor] = None,
    *,
    eps: float = 1e-5,
    backend: Optional[str] = None,
) -> Tensor:
    """Spatially adaptive instance normalization (SPADE-style; AdaIN for per-channel gamma/beta)::

        y = gamma * IN(x) + beta,    IN(x) = (x - mean) / sqrt(var + eps) per (n, c) plane

    One fused pass: per plane the statistics, then the modulation while the plane is in cache, so
    x, gamma and beta are read from memory once and y written once. Backward saves x, gamma and the
    (N, C) statistics, never IN(x).

    Args:
        x: (N, C, H, W) float32/float64/float16/bfloat16, contiguous or channels_last (other strides
            are copied once). Statistics are accumulated in float32 (float64 for float64) with a
            shifted sum, so a large mean does not cost precision.
        gamma: (N, C, H, W), or (N, C, 1, 1) for one scale per plane; same dtype and device as x.
            A full-size gamma in another layout than x is copied once into x's layout.
        beta: like gamma (either form, independently of gamma), or None for zero.
        eps: added to the variance of each (n, c) plane, >= 0. With eps = 0 a plane of zero
            variance normalizes to 0 (not NaN).
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".

    Returns:
        A tensor like x (channels_last when x is).

    Example::

        gamma, beta = spade_head(segmentation_map)        # (N, C, H, W) each
        features = din_ops.spatially_adaptive_instance_norm(features, gamma, beta)
    """
    _check_x(x)
    _check_eps(eps)
    _check_modulation(gamma, "gamma", x)
    if beta is not None:
        _check_modulation(beta, "beta", x)
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.spatially_adaptive_instance_norm(x, gamma, beta, eps)
    if chosen == "triton":
        return torch.ops.din_ops.triton_spatially_adaptive_instance_norm(x, gamma, beta, float(eps))[0]
    return torch.ops.din_ops.spatially_adaptive_instance_norm(x, gamma, beta, float(eps))[0]


def _check_offset_mask(x: Tensor, w: Tensor, offset: Optional[Tensor], mask: Optional[Tensor],
                       stride: list[int], pad: list[int], dilation: list[int]) -> int:
    """Validates the offset and mask of a deformable convolution; returns the offset group count."""
    if offset is None:
        raise ValueError("din_ops: mask needs offset (a modulation mask without offsets is not a "
                         "deformable convolution); pass offset=torch.zeros(...) for fixed taps")
    _check_like_x(offset, "offset", x)
    n, c, h, wd = x.shape
    kk = w.shape[3] * w.shape[4]
    ho = (h + pad[0] + pad[1] - dilation[0] * (w.shape[3] - 1) - 1) // stride[0] + 1
    wo = (wd + pad[2] + pad[3] - dilation[1] * (w.shape[4] - 1) - 1) // stride[1] + 1
    channels = offset.shape[1] if offset.dim() == 4 else 0
    g = channels // (2 * kk)
    if (offset.dim() != 4 or offset.shape[0] != n or channels == 0 or channels % (2 * kk)
            or c % g):
        raise ValueError(
            f"din_ops: expected offset of shape (N, 2 * G * kh * kw, Ho, Wo) with N = {n}, "
            f"kh * kw = {kk} and G offset groups dividing C = {c}, got {_shape(offset)}"
        )
    if offset.shape[2:] != (ho, wo):
        raise ValueError(
            f"din_ops: expected offset of spatial size (Ho, Wo) = ({ho}, {wo}) (the output size), "
            f"got {_shape(offset)}"
        )
    if mask is not None:
        _check_like_x(mask, "mask", x)
        if _shape(mask) != (n, g * kk, ho, wo):
            raise ValueError(
                f"din_ops: expected mask of shape (N, G * kh * kw, Ho, Wo) = ({n}, {g * kk}, {ho}, "
                f"{wo}) (G = {g} offset groups from offset), got {_shape(mask)}"
            )
    return g


def _deformable(x, w, bias, offset, mask, stride, pad, dilation, groups, normalize, eps, chosen):
    """The deformable path of dynamic_instance_norm / dynamic_conv2d (arguments already checked,
    except offset and mask)."""
    g = _check_offset_mask(x, w, offset, mask, stride, pad, dilation)
    if chosen == "triton":
        raise ValueError(
            "din_ops: backend 'triton' has no deformable kernels; use backend='cpu' or 'reference'"
        )
    if chosen == "reference":
        kw = dict(stride=tuple(stride), padding=(pad[0], pad[2]), dilation=tuple(dilation), groups=groups)
        if normalize:
            return reference.deformable_instance_norm(x, w, bias, offset, mask, eps=eps, **kw)
        return reference.deformable_conv2d(x, w, bias, offset, mask, **kw)
    return torch.ops.din_ops.deformable_conv(
        x, w, bias, offset, mask, stride, pad, dilation, groups, g, normalize, float(eps)
    )[0]

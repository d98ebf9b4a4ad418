"""The public din_ops functions: argument checks, backend choice, and the call into the operators.

Behaviour shared by every function (see docs/numerics.md):

- eps = 0 and a plane of zero variance (constant, or a single pixel): the plane normalizes to 0 and
  its gradient is 0 (rstd is defined as 0), where ``F.instance_norm`` returns NaN. inf or NaN in a
  plane makes that plane NaN, and every output it is mixed into, as in :mod:`din_ops.reference`.
- torch.autocast: the compiled ops compute in float32 and return the autocast dtype; float16,
  bfloat16 and float32 arguments may then be mixed; float64 calls are unchanged.
- The CPU kernels are deterministic (bitwise, for a fixed thread count) and thread-safe.
- Variance: every normalizing function uses the biased variance of each (n, c) plane (as
  ``F.instance_norm``) unless ``unbiased=True``: then ``var * M / (M - 1)`` over the M = H * W
  values (as ``torch.var``, and AdaIN code built on it), defined as 0 for M = 1. eps is added to the
  variance used, inside the square root: ``(x - mean) / sqrt(var + eps)``.
- Batch 1: per-sample operands (weight, bias, gamma, beta, the style of :func:`adain`) with a
  leading dimension of 1 apply to every sample of x; the CPU kernels read them in place (nothing is
  repeated N times), and their gradient is the sum over the batch.
"""

from __future__ import annotations

import math
import numbers
import operator

from typing import Optional, Union

import torch
from torch import Tensor

from . import backends, reference

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_x(x: Tensor, name: str = "x") -> None:
    """x (named ``name`` in the messages: "content", "style") is a float (N, C, H, W) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"din_ops: expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"din_ops: expected {name} to be float32, float64, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"din_ops: expected {name} of shape (N, C, H, W), got {_shape(x)}")
    if x.shape[1] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(
            f"din_ops: expected {name} with C, H and W > 0 (an empty batch N = 0 is fine), got {_shape(x)}"
        )


def _real(value) -> Optional[float]:
    """value as a float when it is a real number (Python or numpy), None otherwise (bool, tensors,
    strings, None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _check_eps(eps: float) -> float:
    """eps (a Python or numpy real >= 0, not bool) as a float."""
    value = _real(eps)
    if value is None:
        raise TypeError(f"din_ops: expected eps to be a float, got {type(eps).__name__}")
    if not value >= 0:
        raise ValueError(f"din_ops: expected eps >= 0, got {eps}")
    return value


def _check_unbiased(unbiased: bool) -> None:
    if not isinstance(unbiased, bool):
        raise TypeError(f"din_ops: expected unbiased to be a bool, got {type(unbiased).__name__}")


def _unbiased_scale(x: Tensor, eps: float, unbiased: bool) -> tuple[float, float]:
    """(scale, eps') such that the unbiased normalization of x equals ``scale`` times the biased one
    with eps'. With k = (M - 1) / M, M = H * W:

        (x - mu) / sqrt(var * M / (M - 1) + eps) = sqrt(k) * (x - mu) / sqrt(var + eps * k)

    so the kernels (biased variance) run with eps' = eps * k and the scale goes into the affine
    weight (gamma, weight). M = 1: x - mu = 0, both normalize to 0; scale 1, eps unchanged.
    """
    m = x.shape[2] * x.shape[3]
    if not unbiased or m == 1:
        return 1.0, float(eps)
    k = (m - 1) / m
    return torch.sym_sqrt(k) if isinstance(k, torch.SymFloat) else math.sqrt(k), float(eps) * k


def _unbiased_factor(x: Tensor, unbiased: bool):
    """sqrt((M - 1) / M), M = H * W, for the unbiased variance (None for the biased one or M = 1):
    the factor that goes into the affine weight, while the compiled operators take ``unbiased`` and
    use eps * (M - 1) / M themselves (docs/math.md). A symbolic M (torch.compile, torch.export)
    stays symbolic: no graph is specialized to the image size."""
    if not unbiased or x.shape[2] * x.shape[3] == 1:
        return None
    return _unbiased_scale(x, 0.0, True)[0]


def _batch_hint(name: str, n: int) -> str:
    return (
        f"a batch of N = {n} (one {name} per sample) or of 1 (one {name} for every sample); "
        f"expand {name} to N or pass batch 1"
    )


def _expand_batch(t: Optional[Tensor], n: int) -> Optional[Tensor]:
    """t with its batch of 1 repeated to n: for the backends whose kernels read batch N only (CUDA,
    Triton, and the reference formulas, whose folded-batch conv needs it)."""
    if t is None or t.shape[0] == n:
        return t
    return t.expand(n, *t.shape[1:]).contiguous()

_AUTOCAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _autocast_mix(t: Tensor, x: Tensor) -> bool:
    """Under torch.autocast on x's device the compiled ops cast float16/bfloat16/float32 arguments
    to float32 (csrc/cpu/autocast.cpp), so these may differ from x's dtype there."""
    return (
        t.dtype in _AUTOCAST_DTYPES
        and x.dtype in _AUTOCAST_DTYPES
        and torch.is_autocast_enabled(x.device.type)
    )


def _check_like_x(t: Tensor, name: str, x: Tensor, x_name: str = "x") -> None:
    """t is a tensor of x's dtype and device (x named ``x_name`` in the messages)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"din_ops: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != x.dtype and not _autocast_mix(t, x):
        raise TypeError(f"din_ops: expected {name} to have the dtype of {x_name} ({x.dtype}), got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"din_ops: expected {name} on the device of {x_name} ({x.device}), got {t.device}")


def instance_norm(
    x: Tensor, eps: float = 1e-5, *, unbiased: bool = False, backend: Optional[str] = None
) -> Tensor:
    """Instance normalization without affine parameters.

    ``y[n, c] = (x[n, c] - mean) / sqrt(var + eps)`` over each (n, c) plane, with the biased
    variance by default, matching ``torch.nn.functional.instance_norm(x, eps=eps)``.

    Args:
        x: (N, C, H, W) float32/float64/float16/bfloat16 tensor, contiguous or channels_last (other
            strides are copied once). Statistics are accumulated in float32 (float64 for float64)
            with a shifted sum, so a large mean does not cost precision.
        eps: added to the variance (inside the square root), >= 0. With eps = 0 a plane of zero
            variance (constant, or one pixel) normalizes to 0 with a zero gradient, not NaN.
        unbiased: False (default): the biased variance (divide by M = H * W), as
            ``F.instance_norm``. True: the unbiased ``var * M / (M - 1)`` of ``torch.var`` (what
            AdaIN code computes); for M = 1 it is defined as 0 (the plane normalizes to 0).
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".

    Returns:
        A tensor like x (channels_last when x is).
    """
    _check_x(x)
    eps = _check_eps(eps)
    _check_unbiased(unbiased)
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.instance_norm(x, eps, unbiased)
    scale = _unbiased_factor(x, unbiased)
    if scale is not None:
        # The scale rides on a per-channel gamma of batch 1: still one fused pass over x.
        gamma = torch.ones((1, x.shape[1], 1, 1), dtype=x.dtype, device=x.device) * scale
        return _sain_call(x, gamma, None, eps, unbiased, chosen)
    if chosen == "triton":
        return torch.ops.din_ops.triton_instance_norm(x, eps)[0]
    return torch.ops.din_ops.instance_norm(x, eps)[0]


def _index(value) -> Optional[int]:
    """value as a Python int when it is an integer of any type (int, numpy integers: anything with
    ``__index__``, as F.conv2d accepts), None otherwise (bool, tensors, floats, strings, None)."""
    if isinstance(value, (bool, Tensor)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _int_pair(value, name: str, minimum: int, expected: str) -> tuple[int, int]:
    """value, an integer or a pair (tuple or list) of them, as a pair of ints >= minimum. Anything
    but integers (floats, None, bool, tensors) raises TypeError, integers out of range or a
    sequence not of length 2 ValueError; both say ``expected {name} to be {expected}``."""
    single = _index(value)
    if single is not None:
        pair: tuple = (single, single)
    elif isinstance(value, (tuple, list)):
        pair = tuple(_index(v) for v in value)
    else:
        pair = (None,)
    if any(v is None for v in pair):
        raise TypeError(f"din_ops: expected {name} to be {expected}, got {value!r}")
    if len(pair) != 2 or not all(v >= minimum for v in pair):
        raise ValueError(f"din_ops: expected {name} to be {expected}, got {value!r}")
    return pair


def _pair(value, name: str) -> tuple[int, int]:
    return _int_pair(value, name, 1, "a positive int or a pair of them")


def _check_groups(groups, channels: int) -> int:
    """groups (any integer type, not bool) as an int > 0 dividing channels."""
    g = _index(groups)
    if g is None or g <= 0 or channels % g:
        raise (TypeError if g is None else ValueError)(
            f"din_ops: expected groups to be a positive int dividing C = {channels}, got {groups!r}"
        )
    return g


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
    pair = _int_pair(padding, "padding", 0, "an int >= 0, a pair of them, 'same' or 'valid'")
    return (pair[0], pair[0], pair[1], pair[1])


def _per_channel(t: Tensor, name: str, x: Tensor, channels: int, x_name: str = "x") -> Tensor:
    """A per-channel, per-sample vector given as (N, C) or (N, C, 1, 1) (the shape statistics come
    in), batch N or 1, returned as (N or 1, C)."""
    _check_like_x(t, name, x, x_name)
    n = x.shape[0]
    shape = _shape(t)
    fits = (len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1))) and shape[1] == channels
    if not fits or shape[0] not in (n, 1):
        raise ValueError(
            f"din_ops: expected {name} of shape (N, {channels}) or (N, {channels}, 1, 1) with "
            f"{_batch_hint(name, n)}, got {shape}"
        )
    return t.reshape(shape[0], channels)


def _check_weight_bias(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int
) -> tuple[Tensor, Optional[Tensor], int]:
    """Validates weight, bias and groups; returns weight as (N or 1, Co, C // groups, kh, kw), bias
    as (N or 1, Co) or None, and groups as an int."""
    _check_like_x(weight, "weight", x)
    n, c = x.shape[0], x.shape[1]
    groups = _check_groups(groups, c)
    w = weight[..., None, None] if weight.dim() == 3 else weight
    if w.dim() != 5 or w.shape[0] not in (n, 1) or w.shape[2] != c // groups or w.shape[1] % groups:
        raise ValueError(
            f"din_ops: expected weight of shape (N, Co, C // groups, kh, kw) or (N, Co, C // groups) "
            f"with N = {n} and C // groups = {c // groups} (from x and groups = {groups}) and Co "
            f"divisible by groups, or N = 1 for one weight applied to every sample (expand weight "
            f"to N or pass batch 1), got {_shape(weight)}"
        )
    if bias is not None:
        bias = _per_channel(bias, "bias", x, w.shape[1])
    return w, bias, groups


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
    """Checks of the conv-style entry points; returns the 5-D weight, the (N or 1, Co) bias, the
    operator's stride, padding (top, bottom, left, right) and dilation lists, groups as an int, and
    the chosen backend. Batch-1 weight and bias stay batch 1 for the CPU kernels and are expanded
    for the others."""
    _check_x(x)
    w, b, groups = _check_weight_bias(x, weight, bias, groups)
    stride_, pad, dilation_ = _conv_args(x, w, stride, padding, dilation)
    chosen = backends.resolve(backend, x.device)
    if chosen != "cpu":
        w, b = _expand_batch(w, x.shape[0]), _expand_batch(b, x.shape[0])
    return w, b, stride_, pad, dilation_, groups, chosen


def _reference_geometry(padding, stride: list[int], pad: list[int], dilation: list[int],
                        groups: int) -> dict:
    """The checked convolution arguments as din_ops.reference takes them: pairs of Python ints (a
    string padding is kept: "same" may pad a pixel more at the bottom/right)."""
    return dict(stride=tuple(stride), padding=padding if isinstance(padding, str) else (pad[0], pad[2]),
                dilation=tuple(dilation), groups=groups)


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
    unbiased: bool = False,
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
            A batch of 1 applies the same weight to every sample (the CPU kernels read it in
            place; its gradient is the sum over the batch). (N, C) or (1, C): a diagonal 1x1
            weight, ``y[n, c] = weight[n, c] * IN(x)[n, c] + bias[n, c]`` (AdaIN with
            ``weight = sigma_style``, ``bias = mu_style``), computed by the fused per-channel
            kernel of :func:`spatially_adaptive_instance_norm` rather than a C x C GEMM; it needs
            stride 1, no padding, groups 1 and no offset.
        bias: (N, Co), (N, Co, 1, 1) (the shape of instance statistics), batch 1 for all samples, or
            None.
        stride, padding, dilation, groups: as in ``F.conv2d`` (padding may be "same" or "valid").
        eps: added to the variance of each (n, c) plane (inside the square root), >= 0. With
            eps = 0 a plane of zero variance normalizes to 0 (not NaN).
        unbiased: the variance of the normalization: biased (default, as ``F.instance_norm``) or
            unbiased (``torch.var``'s default; see :func:`instance_norm`).
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
    eps = _check_eps(eps)
    _check_unbiased(unbiased)
    if isinstance(weight, Tensor) and weight.dim() == 2:
        return _diagonal_1x1(x, weight, bias, stride, padding, dilation, groups, eps, unbiased,
                             backend, offset, mask)
    w, bias, stride_, pad, dilation_, groups, chosen = _prepare_conv(
        x, weight, bias, stride, padding, dilation, groups, backend
    )
    if chosen == "reference":
        if offset is not None or mask is not None:
            _check_offset_mask(x, w, offset, mask, stride_, pad, dilation_)
            kw = dict(stride=tuple(stride_), padding=(pad[0], pad[2]), dilation=tuple(dilation_),
                      groups=groups)
            return reference.deformable_conv2d(
                reference.instance_norm(x, eps, unbiased), w, bias, offset, mask, **kw
            )
        return reference.dynamic_instance_norm(
            x, w, bias, eps=eps, unbiased=unbiased,
            **_reference_geometry(padding, stride_, pad, dilation_, groups),
        )
    # Unbiased variance: the biased kernels with eps * k and the weight scaled by sqrt(k) (the
    # convolution is linear in IN(x), and its zero padding is unchanged by the scale).
    scale = _unbiased_factor(x, unbiased)
    if scale is not None:
        w = w * scale
    if offset is not None or mask is not None:
        return _deformable(
            x, w, bias, offset, mask, stride_, pad, dilation_, groups, True, eps, chosen, unbiased
        )
    if chosen == "triton":
        if not (w.shape[3:] == (1, 1) and stride_ == [1, 1] and pad == [0, 0, 0, 0] and groups == 1):
            raise ValueError(
                "din_ops: backend 'triton' covers only the 1x1 dynamic instance norm (weight (N, Co, C) "
                f"or (N, Co, C, 1, 1), stride 1, padding 0, groups 1), got weight {_shape(weight)}, stride "
                f"{stride_}, padding {pad}, groups {groups}; use backend='cuda', 'cpu' or 'reference'"
            )
        eps_ = _unbiased_scale(x, eps, unbiased)[1]  # the biased variance's eps, as _sain_call
        return torch.ops.din_ops.triton_dynamic_instance_norm_1x1(x, w.flatten(2), bias, float(eps_))[0]
    if w.shape[3:] == (1, 1) and stride_ == [1, 1] and pad == [0, 0, 0, 0] and groups == 1:
        return torch.ops.din_ops.dynamic_instance_norm_1x1(x, w.flatten(2), bias, float(eps), unbiased)[0]
    return torch.ops.din_ops.dynamic_conv(
        x, w, bias, stride_, pad, dilation_, groups, True, float(eps), unbiased
    )[0]


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
    w, bias, stride_, pad, dilation_, groups, chosen = _prepare_conv(
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
            x, w, bias, **_reference_geometry(padding, stride_, pad, dilation_, groups)
        )
    return torch.ops.din_ops.dynamic_conv(x, w, bias, stride_, pad, dilation_, groups, False, 0.0)[0]


def _check_modulation(t: Tensor, name: str, x: Tensor) -> Tensor:
    """gamma/beta of spatially_adaptive_instance_norm: (N, C, H, W) like x, (N, C, 1, 1) or (N, C),
    each with batch N or 1; returned 4-D."""
    _check_like_x(t, name, x)
    n, c, h, w = x.shape
    shape = _shape(t)
    fits = len(shape) in (2, 4) and shape[1] == c and (len(shape) == 2 or shape[2:] in ((h, w), (1, 1)))
    if not fits or shape[0] not in (n, 1):
        raise ValueError(
            f"din_ops: expected {name} of shape (N, C, H, W) = ({n}, {c}, {h}, {w}), "
            f"(N, C, 1, 1) = ({n}, {c}, 1, 1) or (N, C) = ({n}, {c}), with "
            f"{_batch_hint(name, n)}, got {shape}"
        )
    return t.reshape(shape[0], c, 1, 1) if len(shape) == 2 else t


def _sain_call(
    x: Tensor, gamma: Tensor, beta: Optional[Tensor], eps: float, unbiased: bool, chosen: str
) -> Tensor:
    """The fused gamma * IN(x) + beta operator of the chosen compiled backend (checked arguments;
    gamma and beta 4-D, batch N or 1, gamma already scaled for ``unbiased``)."""
    if chosen == "cpu":
        return torch.ops.din_ops.spatially_adaptive_instance_norm(x, gamma, beta, eps, unbiased)[0]
    n = x.shape[0]
    gamma, beta = _expand_batch(gamma, n), _expand_batch(beta, n)
    if chosen == "triton":
        # The Triton operators take the eps of the biased variance (specialized to H * W when traced).
        eps_ = _unbiased_scale(x, eps, unbiased)[1]
        return torch.ops.din_ops.triton_spatially_adaptive_instance_norm(x, gamma, beta, eps_)[0]
    return torch.ops.din_ops.spatially_adaptive_instance_norm(x, gamma, beta, eps, unbiased)[0]


def _diagonal_1x1(x, weight, bias, stride, padding, dilation, groups, eps, unbiased, backend,
                  offset, mask):
    """dynamic_instance_norm with a diagonal 1x1 weight given as its diagonal (N or 1, C)."""
    _check_x(x)
    n, c = x.shape[0], x.shape[1]
    _check_like_x(weight, "weight", x)
    if weight.shape[1] != c or weight.shape[0] not in (n, 1):
        raise ValueError(
            f"din_ops: expected a diagonal 1x1 weight of shape (N, C) = ({n}, {c}) (or (1, C) for "
            f"every sample), got {_shape(weight)}; for a full channel mixing pass (N, Co, C)"
        )
    # The arguments are checked as for any kernel (a 1x1 kernel ignores dilation, but a bad one is
    # still refused); then only stride 1, no padding and groups 1 fit a diagonal weight.
    groups = _check_groups(groups, c)
    stride_, dilation_ = _pair(stride, "stride"), _pair(dilation, "dilation")
    pad = _padding(padding, (1, 1), stride_, dilation_)
    geometry_ok = (
        offset is None and mask is None and groups == 1 and stride_ == (1, 1) and pad == (0, 0, 0, 0)
    )
    if not geometry_ok:
        raise ValueError(
            "din_ops: a diagonal weight (N, C) is a 1x1 kernel without padding, stride, groups or "
            "offset; for those pass it as a depthwise kernel, weight.reshape(N, C, 1, 1, 1) with "
            "groups=C"
        )
    return spatially_adaptive_instance_norm(
        x, weight.reshape(weight.shape[0], c, 1, 1),
        None if bias is None else _per_channel(bias, "bias", x, c),
        eps=eps, unbiased=unbiased, backend=backend,
    )


def spatially_adaptive_instance_norm(
    x: Tensor,
    gamma: Tensor,
    beta: Optional[Tensor] = None,
    *,
    eps: float = 1e-5,
    unbiased: bool = False,
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
        gamma: (N, C, H, W), or (N, C, 1, 1) or (N, C) for one scale per plane; same dtype and
            device as x. A batch of 1 applies to every sample (read in place by the CPU kernels;
            its gradient is the sum over the batch). A full-size gamma in another layout than x is
            copied once into x's layout.
        beta: like gamma (either form, independently of gamma), or None for zero.
        eps: added to the variance of each (n, c) plane (inside the square root), >= 0. With
            eps = 0 a plane of zero variance normalizes to 0 (not NaN).
        unbiased: the variance of the normalization: biased (default, as ``F.instance_norm``) or
            unbiased (``torch.var``'s default; see :func:`instance_norm`). Implemented as gamma
            times sqrt((M - 1) / M) with eps * (M - 1) / M, which costs a scaled copy of a
            full-size gamma.
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".

    Returns:
        A tensor like x (channels_last when x is).

    Example::

        gamma, beta = spade_head(segmentation_map)        # (N, C, H, W) each
        features = din_ops.spatially_adaptive_instance_norm(features, gamma, beta)
    """
    _check_x(x)
    eps = _check_eps(eps)
    _check_unbiased(unbiased)
    gamma = _check_modulation(gamma, "gamma", x)
    if beta is not None:
        beta = _check_modulation(beta, "beta", x)
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.spatially_adaptive_instance_norm(x, gamma, beta, eps, unbiased)
    scale = _unbiased_factor(x, unbiased)
    if scale is not None:
        gamma = gamma * scale
    return _sain_call(x, gamma, beta, eps, unbiased, chosen)


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


def _deformable(x, w, bias, offset, mask, stride, pad, dilation, groups, normalize, eps, chosen,
                unbiased=False):
    """The deformable path of dynamic_instance_norm / dynamic_conv2d (arguments already checked,
    except offset and mask; w already scaled for ``unbiased``)."""
    g = _check_offset_mask(x, w, offset, mask, stride, pad, dilation)
    if chosen == "triton":
        raise ValueError(
            "din_ops: backend 'triton' has no deformable kernels; use backend='cuda' (CUDA tensors), "
            "'cpu' (CPU tensors) or 'reference'"
        )
    if chosen == "reference":
        kw = dict(stride=tuple(stride), padding=(pad[0], pad[2]), dilation=tuple(dilation), groups=groups)
        if normalize:
            return reference.deformable_instance_norm(x, w, bias, offset, mask, eps=eps, **kw)
        return reference.deformable_conv2d(x, w, bias, offset, mask, **kw)
    return torch.ops.din_ops.deformable_conv(
        x, w, bias, offset, mask, stride, pad, dilation, groups, g, normalize, float(eps), unbiased
    )[0]


def _check_unit_interval(alpha: float) -> float:
    """alpha (a Python or numpy real in [0, 1], not bool) as a float."""
    value = _real(alpha)
    if value is None:
        raise TypeError(f"din_ops: expected alpha to be a float, got {type(alpha).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"din_ops: expected alpha in [0, 1], got {alpha}")
    return value


def _instance_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, biased variance) of each (n, c) plane, (N, C) float64, with autograd: one pass over x
    that writes nothing of x's size (din_ops::instance_stats)."""
    return torch.ops.din_ops.instance_stats(x)


def style_stats(
    style: Tensor,
    *,
    eps: float = 1e-5,
    unbiased: bool = False,
    backend: Optional[str] = None,
) -> tuple[Tensor, Tensor]:
    """AdaIN's style statistics: the mean and the standard deviation ``sqrt(var + eps)`` of each
    (n, c) plane of ``style``, each of shape (N, C, 1, 1) and style's dtype (the shapes of
    ``calc_mean_std`` in AdaIN code).

    Computed once here, they can be passed to :func:`adain` as ``style=(mean, std)`` for many
    contents (or mixed first, for style interpolation). Differentiable with respect to ``style``.

    Args:
        style: (N, C, H, W) style features, float32/float64/float16/bfloat16, contiguous or
            channels_last. Statistics come from din_ops' statistics kernel in one pass (shifted
            sums, float64 results), without writing a normalized copy of ``style``.
        eps: added to the variance inside the square root, >= 0.
        unbiased: False (default): the biased variance (divide by M = H * W, as
            ``F.instance_norm``); True: ``torch.var``'s unbiased variance (divide by M - 1), which
            pytorch-AdaIN's ``calc_mean_std`` uses. For M = 1 the unbiased variance is defined as 0
            (``torch.var`` gives NaN), so the std is ``sqrt(eps)``.
        backend: None (the compiled kernels for style's device), "cpu", "cuda" or "reference".

    Returns:
        (mean, std), each (N, C, 1, 1).
    """
    _check_x(style, "style")
    eps = _check_eps(eps)
    _check_unbiased(unbiased)
    chosen = backends.resolve(backend, style.device)
    if chosen == "reference":
        return reference.style_stats(style, eps, unbiased)
    n, c, h, w = style.shape
    mean, var = _instance_stats(style)
    if unbiased:
        var = reference.unbiased_variance(var, h * w)
    std = torch.sqrt(var + eps)
    return mean.to(style.dtype).reshape(n, c, 1, 1), std.to(style.dtype).reshape(n, c, 1, 1)


def _check_style_features(style: Tensor, content: Tensor) -> None:
    _check_like_x(style, "style", content, "content")
    n, c = content.shape[0], content.shape[1]
    if style.dim() != 4 or style.shape[1] != c or style.shape[0] not in (n, 1):
        raise ValueError(
            f"din_ops: expected style features of shape (N, C, Hs, Ws) with C = {c} and "
            f"{_batch_hint('style', n)}, got {_shape(style)}"
        )
    if style.shape[2] == 0 or style.shape[3] == 0:
        raise ValueError(f"din_ops: expected style features with Hs, Ws > 0, got {_shape(style)}")


def _style_operands(content: Tensor, style, eps, unbiased, backend) -> tuple[Tensor, Tensor]:
    """The (mean, std) of adain's style argument, each (N or 1, C, 1, 1)."""
    n, c = content.shape[0], content.shape[1]
    if isinstance(style, Tensor):
        _check_style_features(style, content)
        return style_stats(style, eps=eps, unbiased=unbiased, backend=backend)
    if isinstance(style, (tuple, list)) and len(style) == 2:
        mean = _per_channel(style[0], "style mean", content, c, "content")
        std = _per_channel(style[1], "style std", content, c, "content")
        return mean.reshape(-1, c, 1, 1), std.reshape(-1, c, 1, 1)
    raise TypeError(
        "din_ops: expected style to be the style features (a tensor (N, C, Hs, Ws)) or their "
        f"statistics (mean, std) from din_ops.style_stats, got {type(style).__name__}"
    )


def _blend(content: Tensor, t: Tensor, alpha: float) -> Tensor:
    """alpha * t + (1 - alpha) * content, in t's layout (the output of alpha = 1: contiguous or
    channels_last as content, other strides made contiguous), where torch.lerp alone would follow
    content's strides; under autocast t comes in the autocast dtype, and the blend is computed in
    content's dtype and returned in t's."""
    if alpha == 1.0:
        return t
    if content.stride() != t.stride():
        content = torch.empty_like(t, dtype=content.dtype).copy_(content)
    if t.dtype != content.dtype:
        return torch.lerp(content, t.to(content.dtype), float(alpha)).to(t.dtype)
    return torch.lerp(content, t, float(alpha))


def adain(
    content: Tensor,
    style: Union[Tensor, tuple[Tensor, Tensor]],
    *,
    alpha: float = 1.0,
    eps: float = 1e-5,
    unbiased: bool = False,
    backend: Optional[str] = None,
) -> Tensor:
    """Adaptive instance normalization (AdaIN, Huang & Belongie, ICCV 2017) in one call::

        t   = std_s * (content - mean_c) / sqrt(var_c + eps) + mean_s,   std_s = sqrt(var_s + eps)
        out = alpha * t + (1 - alpha) * content

    per (n, c) plane: DIN with ``W = diag(std_s)``, ``b = mean_s``. One operator
    (``din_ops::adain``); on the CPU one pass: per plane the style plane's statistics (shifted
    sums), the content plane's, then the output, so content and style are each read once and only
    the output is written (a batch-1 style gets its statistics first). With precomputed statistics
    the kernel of :func:`spatially_adaptive_instance_norm` runs. Differentiable with respect to
    content, style and precomputed statistics.

    Args:
        content: (N, C, H, W) content features, float32/float64/float16/bfloat16, contiguous or
            channels_last (the output follows).
        style: the style features (N, C, Hs, Ws) (any spatial size), or their statistics
            ``(mean, std)`` as returned by :func:`style_stats`, each (N, C, 1, 1) or (N, C). A batch
            of 1 applies one style to every content sample (read in place, not repeated).
        alpha: style strength in [0, 1]; 1 is the plain AdaIN output, 0 returns the content.
        eps: added to each variance inside the square root (content and style alike), >= 0.
        unbiased: the variance of content and style: biased (default, as ``F.instance_norm``), or
            unbiased as ``torch.var`` and pytorch-AdaIN's ``calc_mean_std`` (pass ``unbiased=True``
            to match such code exactly). For H * W = 1 the unbiased variance is defined as 0.
            Ignored for the style when its statistics are passed.
        backend: None (the compiled kernels for content's device), "cpu", "cuda" or "reference".

    Returns:
        A tensor like content.

    Example::

        # pytorch-AdaIN: t = adaptive_instance_normalization(content_f, style_f)
        t = din_ops.adain(content_f, style_f, unbiased=True)
    """
    _check_x(content, "content")
    eps = _check_eps(eps)
    _check_unbiased(unbiased)
    alpha = _check_unit_interval(alpha)
    if isinstance(style, Tensor) and backends.resolve(backend, content.device) in ("cpu", "cuda", "meta"):
        _check_style_features(style, content)
        t = torch.ops.din_ops.adain(content, style, float(eps), unbiased)[0]
        return _blend(content, t, alpha)
    mean_s, std_s = _style_operands(content, style, eps, unbiased, backend)
    t = spatially_adaptive_instance_norm(
        content, std_s, mean_s, eps=eps, unbiased=unbiased, backend=backend
    )
    return _blend(content, t, alpha)

"""The public din_ops functions: argument checks, backend choice, and the call into the operators."""
from __future__ import annotations

from typing import Optional

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
        raise TypeError(
            f"din_ops: expected x to be float32, float64, float16 or bfloat16, got {x.dtype}"
        )
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


def _check_like_x(t: Tensor, name: str, x: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"din_ops: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != x.dtype:
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
        eps: added to the variance, >= 0.
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".

    Returns:
        A tensor like x (channels_last when x is).
    """
    _check_x(x)
    _check_eps(eps)
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.instance_norm(x, eps)
    return torch.ops.din_ops.instance_norm(x, float(eps))[0]


def _weight_1x1(x: Tensor, weight: Tensor) -> Tensor:
    """weight as (N, Co, C), accepting (N, Co, C) or (N, Co, C, 1, 1)."""
    _check_like_x(weight, "weight", x)
    n, c = x.shape[0], x.shape[1]
    ok = weight.dim() in (3, 5) and weight.shape[0] == n and weight.shape[2] == c
    if ok and weight.dim() == 5:
        ok = weight.shape[3] == 1 and weight.shape[4] == 1
    if not ok:
        raise ValueError(
            f"din_ops: expected weight of shape (N, Co, C) or (N, Co, C, 1, 1) with N = {n} and "
            f"C = {c} (from x), got {_shape(weight)}"
        )
    return weight if weight.dim() == 3 else weight.flatten(2)


def dynamic_instance_norm(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    *,
    eps: float = 1e-5,
    backend: Optional[str] = None,
) -> Tensor:
    """Dynamic Instance Normalization (Jing et al., AAAI 2020).

    Instance-normalizes the content features ``x`` and applies a per-sample 1x1 convolution whose
    weight and bias were predicted from a style image::

        y[n] = weight[n] @ IN(x)[n] + bias[n]

    The kernels fold the normalization into the convolution: the statistics take one pass over x,
    the rest is one GEMM per sample on cache-resident normalized tiles with the bias added in place;
    backward saves only x and the (N, C) statistics.

    Args:
        x: content features (N, C, H, W), float32/float64/float16/bfloat16, contiguous or
            channels_last (other strides are copied once).
        weight: (N, Co, C) or (N, Co, C, 1, 1), same dtype and device as x.
        bias: (N, Co) or None.
        eps: added to the variance of each (n, c) plane, >= 0.
        backend: None (the compiled kernels for x's device), "cpu", "cuda" or "reference".

    Returns:
        (N, Co, H, W), channels_last when x is.

    Example::

        content = encoder(content_image)                  # (N, C, H, W)
        w, b = weight_net(style), bias_net(style)         # (N, C, C), (N, C)
        features = din_ops.dynamic_instance_norm(content, w, b)
    """
    _check_x(x)
    _check_eps(eps)
    w = _weight_1x1(x, weight)
    if bias is not None:
        _check_like_x(bias, "bias", x)
        if _shape(bias) != (x.shape[0], w.shape[1]):
            raise ValueError(
                f"din_ops: expected bias of shape (N, Co) = ({x.shape[0]}, {w.shape[1]}), "
                f"got {_shape(bias)}"
            )
    chosen = backends.resolve(backend, x.device)
    if chosen == "reference":
        return reference.dynamic_instance_norm(x, w, bias, eps=eps)
    return torch.ops.din_ops.dynamic_instance_norm_1x1(x, w, bias, float(eps))[0]

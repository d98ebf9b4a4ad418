"""Neural-network modules built on the din_ops operators.

:class:`DynamicInstanceNorm2d` is the DIN layer of Jing et al. (AAAI 2020, Fig. 3): a weight net and
a bias net (each two convolutions and adaptive pooling) predict, from a style feature map, the
per-sample kernel of a dynamic convolution that is applied to the instance-normalized content
features. The fused public ops do the work: :func:`din_ops.dynamic_instance_norm` for the 1x1 and
k x k (grouped, depthwise) kinds and :func:`din_ops.spatially_adaptive_instance_norm` for the
spatially-adaptive kind. Every module takes a ``backend`` (None, "cpu", "cuda" or "reference"),
passed on to the ops.

:class:`InstanceNorm2d` is an affine instance normalization on the fused
``spatially_adaptive_instance_norm`` kernel (used by :mod:`din_ops.models`).

:class:`AdaIN` is the AdaIN layer of style-transfer models (:func:`din_ops.adain`) as a module.
"""
from __future__ import annotations

import inspect
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .backends import ALL_BACKENDS

#: A style code: the predicted (weight, bias) of one DIN layer for a batch of style images. For the
#: "conv" kind, weight is (N, C, C // groups, k, k) or (N, C, C) for 1x1 and bias (N, C); for the
#: "spatially_adaptive" kind, gamma and beta are (N, C, g, g).
StyleCode = tuple[Tensor, Tensor]

KINDS = ("conv", "spatially_adaptive", "deformable")


def deformable_supported() -> bool:
    """True when :func:`din_ops.dynamic_instance_norm` takes ``offset=`` (deformable kernels)."""
    return "offset" in inspect.signature(ops.dynamic_instance_norm).parameters


def supported_kinds() -> tuple[str, ...]:
    """The DIN kinds this installation can run."""
    return KINDS if deformable_supported() else KINDS[:2]


def _check_backend(backend: Optional[str]) -> None:
    if backend is not None and backend not in ALL_BACKENDS:
        raise ValueError(f"din_ops.nn: unknown backend {backend!r}; expected one of {ALL_BACKENDS} or None")


class InstanceNorm2d(nn.Module):
    """Instance normalization with a learned per-channel scale and shift, in one fused pass
    (:func:`din_ops.spatially_adaptive_instance_norm` with per-plane gamma and beta).

    Same result as ``torch.nn.InstanceNorm2d(channels, affine=True)``; contiguous and channels_last
    inputs run without copies.
    """

    def __init__(self, channels: int, eps: float = 1e-5, backend: Optional[str] = None) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"din_ops.nn.InstanceNorm2d: expected channels to be a positive int, got {channels!r}")
        _check_backend(backend)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        c = self.weight.shape[0]
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != c:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"din_ops.nn.InstanceNorm2d: expected input of shape (N, {c}, H, W) "
                             f"(this layer's {c} channels), got {got}")
        # Batch 1: one gamma and beta for every sample, read in place by the kernels.
        gamma = self.weight.to(x.dtype).view(1, c, 1, 1)
        beta = self.bias.to(x.dtype).view(1, c, 1, 1)
        return ops.spatially_adaptive_instance_norm(x, gamma, beta, eps=self.eps, backend=self.backend)


class ParamNet(nn.Sequential):
    """The weight or bias net of a DIN layer (paper, Fig. 3): two convolutions and adaptive pooling.

    ``AdaptiveAvgPool2d(pool) -> Conv3x3(style_channels, hidden, no padding) -> ReLU ->
    AdaptiveAvgPool2d(out_size) -> Conv1x1(hidden, out_channels)``. Pooling the style features to a
    fixed ``pool x pool`` grid first lets the net take style images of any size at a cost that does
    not depend on that size (about 20 MMAC for all weight and bias nets of
    :class:`din_ops.models.DINStyleNet`, as in the paper); the second pooling sets the spatial size
    of the prediction (the dynamic kernel's k x k, 1 x 1 for a bias, or the spatially-adaptive grid).
    The last convolution starts small (std ``init_std``) and with a zero bias, so that a new layer
    starts close to its identity (see :class:`DynamicInstanceNorm2d`).
    """

    def __init__(self, style_channels: int, hidden: int, out_channels: int, out_size: int,
                 pool: int = 4, init_std: float = 0.02) -> None:
        if pool < 3:
            raise ValueError(f"din_ops.nn.ParamNet: expected pool >= 3 (for the 3x3 convolution), got {pool}")
        super().__init__(
            nn.AdaptiveAvgPool2d(pool),
            nn.Conv2d(style_channels, hidden, 3),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(out_size),
            nn.Conv2d(hidden, out_channels, 1),
        )
        nn.init.normal_(self[4].weight, std=init_std / hidden**0.5)
        nn.init.zeros_(self[4].bias)


class DynamicInstanceNorm2d(nn.Module):
    """Dynamic Instance Normalization (Jing et al., AAAI 2020, Eq. 4 and Fig. 3) as a module.

    ``DIN(Fc, Fs) = f[Fs, IN(Fc)]``: the weight net and the bias net read the style features ``Fs``
    and predict, per sample, the weight and bias of the dynamic convolution ``f`` that is applied to
    the instance-normalized content features ``Fc``. Kinds:

    - ``"conv"`` (default): a standard dynamic convolution, 1x1 by default (the paper's choice,
      Implementation Details), or ``kernel_size`` k x k with ``groups`` (``groups=channels`` is
      depthwise); zero "same" padding, stride 1. Runs :func:`din_ops.dynamic_instance_norm`.
    - ``"spatially_adaptive"``: the paper's spatially-adaptive DIN, a kernel as large as the feature
      map, i.e. a per-pixel scale and shift ``gamma * IN(Fc) + beta``. The nets predict gamma and
      beta on a ``grid x grid`` grid that is bilinearly resized to the content's size (a grid of 1
      gives AdaIN-like per-channel parameters). Runs :func:`din_ops.spatially_adaptive_instance_norm`.
    - ``"deformable"``: the paper's deformable DIN, a k x k dynamic kernel sampled at offsets that an
      offset predictor (a 3x3 convolution on the content features, zero-initialized so it starts as
      the plain k x k kernel; Dai et al. 2017) computes. It needs :func:`din_ops.dynamic_instance_norm`
      to take ``offset=``; where it does not, asking for this kind raises ValueError naming the kinds
      this installation supports (:func:`supported_kinds`).

    The predicted weight is the identity kernel plus the weight net's output (and gamma is 1 plus
    it), so a fresh layer computes nearly IN(Fc) and learning starts from a sensible point.

    Style codes: :meth:`encode_style` returns the (weight, bias) pair for a batch of style feature
    maps; :meth:`apply` stylizes any number of content batches with it, so a style is encoded once.
    Codes are linear in the layer's output, so weighted sums of codes interpolate between styles.

    Args:
        channels: C of the content features (input and output).
        style_channels: channels of the style features.
        kind: "conv", "spatially_adaptive" or "deformable" (see above).
        kernel_size: k of the dynamic kernel (odd; "conv" and "deformable").
        groups: groups of the dynamic kernel; must divide ``channels``.
        hidden: channels between the two convolutions of each net (default ``2 * channels``).
        pool: the grid the style features are pooled to before the first convolution (>= 3).
        grid: size of the predicted gamma/beta grid of the spatially-adaptive kind.
        eps: added to the variance in the instance normalization.
        backend: None, "cpu", "cuda" or "reference", passed to the ops.
    """

    def __init__(self, channels: int, style_channels: int, *, kind: str = "conv", kernel_size: int = 1,
                 groups: int = 1, hidden: Optional[int] = None, pool: int = 4, grid: int = 8,
                 eps: float = 1e-5, backend: Optional[str] = None) -> None:
        super().__init__()
        if kind not in supported_kinds():
            extra = ""
            if kind == "deformable":
                extra = " (deformable DIN needs din_ops.dynamic_instance_norm(..., offset=), which this " \
                        "installation lacks)"
            raise ValueError(
                f"din_ops.nn.DynamicInstanceNorm2d: unsupported kind {kind!r}{extra}; supported kinds: "
                f"{', '.join(map(repr, supported_kinds()))}"
            )
        for name, value in (("channels", channels), ("style_channels", style_channels),
                            ("kernel_size", kernel_size), ("groups", groups), ("grid", grid)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: expected {name} to be a positive int, "
                                 f"got {value!r}")
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0):
            raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: expected hidden to be a positive int or None "
                             f"(for 2 * channels), got {hidden!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: expected an odd kernel_size, got {kernel_size}")
        if channels % groups:
            raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: groups = {groups} does not divide "
                             f"channels = {channels}")
        if kind == "spatially_adaptive" and (kernel_size != 1 or groups != 1):
            raise ValueError("din_ops.nn.DynamicInstanceNorm2d: the spatially_adaptive kind takes no "
                             "kernel_size or groups (its kernel is the size of the feature map)")
        _check_backend(backend)
        self.channels, self.style_channels, self.kind = channels, style_channels, kind
        self.kernel_size, self.groups, self.grid, self.eps = kernel_size, groups, grid, eps
        self.backend = backend
        hidden = 2 * channels if hidden is None else hidden
        if kind == "spatially_adaptive":
            self.weight_net = ParamNet(style_channels, hidden, channels, grid, pool)
            self.bias_net = ParamNet(style_channels, hidden, channels, grid, pool)
            self.register_buffer("identity", torch.ones(channels, 1, 1), persistent=False)
        else:
            per_group = channels // groups
            self.weight_net = ParamNet(style_channels, hidden, channels * per_group, kernel_size,
                                       max(pool, kernel_size + 2))
            self.bias_net = ParamNet(style_channels, hidden, channels, 1, pool)
            identity = torch.zeros(channels, per_group, kernel_size, kernel_size)
            centre = kernel_size // 2
            identity[torch.arange(channels), torch.arange(channels) % per_group, centre, centre] = 1.0
            self.register_buffer("identity", identity, persistent=False)
        if kind == "deformable":
            self.offset_net = nn.Conv2d(channels, 2 * kernel_size * kernel_size, 3, padding=1)
            nn.init.zeros_(self.offset_net.weight)
            nn.init.zeros_(self.offset_net.bias)

    def extra_repr(self) -> str:
        return (f"{self.channels}, style_channels={self.style_channels}, kind={self.kind!r}, "
                f"kernel_size={self.kernel_size}, groups={self.groups}, backend={self.backend!r}")

    def encode_style(self, style: Tensor) -> StyleCode:
        """The (weight, bias) of the dynamic convolution for style features (N, style_channels, H, W).

        "conv"/"deformable": weight (N, C, C // groups, k, k), or (N, C, C) when k = 1, and bias
        (N, C). "spatially_adaptive": gamma and beta (N, C, grid, grid).
        """
        if not isinstance(style, Tensor) or style.dim() != 4 or style.shape[1] != self.style_channels:
            got = tuple(style.shape) if isinstance(style, Tensor) else type(style).__name__
            raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: expected style features of shape "
                             f"(N, {self.style_channels}, H, W), got {got}")
        n = style.shape[0]
        delta, bias = self.weight_net(style), self.bias_net(style)
        if self.kind == "spatially_adaptive":
            return self.identity + delta, bias
        k, c = self.kernel_size, self.channels
        weight = self.identity + delta.reshape(n, c, c // self.groups, k, k)
        if k == 1 and self.groups == 1:
            weight = weight.reshape(n, c, c)
        return weight, bias.reshape(n, c)

    def apply(self, content: Tensor, code: StyleCode, alpha: float = 1.0) -> Tensor:
        """Stylizes content features (N, C, H, W) with a style code from :meth:`encode_style`.

        A code of batch 1 is used for every content sample. ``alpha`` in [0, 1] blends the result
        with the unchanged content features: ``alpha * DIN(x) + (1 - alpha) * x``.
        """
        alpha = ops._check_unit_interval(alpha)
        if not isinstance(content, Tensor) or content.dim() != 4 or content.shape[1] != self.channels:
            got = tuple(content.shape) if isinstance(content, Tensor) else type(content).__name__
            raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: expected content features of shape "
                             f"(N, {self.channels}, H, W), got {got}")
        weight, bias = code
        n = content.shape[0]
        if self.kind == "spatially_adaptive":
            c, g = self.channels, self.grid
            for name, t in (("gamma", weight), ("beta", bias)):
                if not isinstance(t, Tensor) or t.dim() != 4 or tuple(t.shape[1:]) != (c, g, g):
                    got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    raise ValueError(
                        f"din_ops.nn.DynamicInstanceNorm2d: expected a spatially_adaptive style code "
                        f"(gamma, beta) of shapes (N, {c}, {g}, {g}) (channels, grid, grid; as "
                        f"encode_style returns, batch N = {n} or 1), got {name} of shape {got}")
        if weight.shape[0] != n:
            if weight.shape[0] != 1:
                raise ValueError(f"din_ops.nn.DynamicInstanceNorm2d: a style code of batch {weight.shape[0]} "
                                 f"for content of batch {n}; expected batch 1 or {n}")
            weight = weight.expand(n, *weight.shape[1:])
            bias = bias.expand(n, *bias.shape[1:])
        weight, bias = weight.to(content.dtype), bias.to(content.dtype)
        if self.kind == "spatially_adaptive":
            size = content.shape[2:]
            if self.grid != 1:
                weight = F.interpolate(weight, size=size, mode="bilinear", align_corners=False)
                bias = F.interpolate(bias, size=size, mode="bilinear", align_corners=False)
                if content.is_contiguous(memory_format=torch.channels_last) and not content.is_contiguous():
                    weight = weight.contiguous(memory_format=torch.channels_last)
                    bias = bias.contiguous(memory_format=torch.channels_last)
            y = ops.spatially_adaptive_instance_norm(content, weight, bias, eps=self.eps, backend=self.backend)
        else:
            extra = {}
            if self.kind == "deformable":
                # The offset net runs in its parameters' dtype and its offsets are cast to content's
                # dtype, as the style code is: any float content dtype works, as in the other kinds.
                offset = self.offset_net(content.to(self.offset_net.weight.dtype))
                extra["offset"] = offset.to(content.dtype)
            pad = self.kernel_size // 2
            y = ops.dynamic_instance_norm(content, weight, bias, padding=pad, groups=self.groups, eps=self.eps,
                                          backend=self.backend, **extra)
        if alpha != 1.0:
            y = torch.lerp(content, y, alpha)
        return y

    def forward(self, content: Tensor, style: Tensor, alpha: float = 1.0) -> Tensor:
        """``apply(content, encode_style(style), alpha)``."""
        ops._check_unit_interval(alpha)  # before the style is encoded
        return self.apply(content, self.encode_style(style), alpha)


def mix_codes(codes: Sequence[StyleCode], weights: Union[Sequence[float], Tensor]) -> StyleCode:
    """Weighted sum of style codes of one layer (interpolation between styles); the weights are
    used as given (normalize them to sum to 1 for an interpolation)."""
    if len(codes) == 0 or len(codes) != len(weights):
        raise ValueError(f"din_ops.nn.mix_codes: expected as many weights as codes (>= 1), got {len(weights)} "
                         f"weights for {len(codes)} codes")
    weight = sum(float(w) * c[0] for w, c in zip(weights, codes))
    bias = sum(float(w) * c[1] for w, c in zip(weights, codes))
    return weight, bias


def set_backend(module: nn.Module, backend: Optional[str]) -> nn.Module:
    """Sets ``backend`` on every din_ops module inside ``module``; returns ``module``."""
    _check_backend(backend)
    for m in module.modules():
        if isinstance(m, (DynamicInstanceNorm2d, InstanceNorm2d)):
            m.backend = backend
    return module


class AdaIN(nn.Module):
    """Adaptive instance normalization as a layer: ``forward(content, style)`` is
    :func:`din_ops.adain` with this layer's ``alpha``, ``eps`` and ``unbiased``.

    A drop-in for the AdaIN function of pytorch-AdaIN-style models: their
    ``adaptive_instance_normalization(content_feat, style_feat)`` (unbiased ``torch.var``, eps 1e-5
    inside the square root) is ``AdaIN(unbiased=True)(content_feat, style_feat)``. ``style`` may be
    style features (batch N or 1) or precomputed ``(mean, std)`` from :func:`din_ops.style_stats`;
    ``alpha`` may also be given per call. No parameters.
    """

    def __init__(
        self, alpha: float = 1.0, eps: float = 1e-5, unbiased: bool = False,
        backend: Optional[str] = None,
    ) -> None:
        super().__init__()
        _check_backend(backend)
        self.alpha, self.eps, self.unbiased, self.backend = alpha, eps, unbiased, backend

    def forward(
        self, content: Tensor, style: Union[Tensor, tuple[Tensor, Tensor]],
        alpha: Optional[float] = None,
    ) -> Tensor:
        return ops.adain(
            content, style, alpha=self.alpha if alpha is None else alpha, eps=self.eps,
            unbiased=self.unbiased, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, eps={self.eps}, unbiased={self.unbiased}"

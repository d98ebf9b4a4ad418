"""The lightweight DIN style-transfer network of Jing et al. (AAAI 2020, Fig. 4).

Content side, MobileNetV1-style (depthwise separable convolutions; Howard et al. 2017) in the layout
of Johnson et al. 2016:

- encoder: one stride-1 9x9 convolution (3 -> c1), two stride-2 depthwise separable blocks
  (depthwise 3x3 stride 2, pointwise c1 -> c2, then c2 -> c3) and two stride-1 residual layers
  (each two depthwise separable convolutions at c3);
- decoder, the mirror image: two residual layers, two blocks that undo the downsampling (pointwise
  c3 -> c2, bilinear upsampling x2, depthwise 3x3; then c2 -> c1) and a 9x9 convolution c1 -> 3;
- three DIN layers, one per level (hierarchical, paper's "An Application of DIN"): DIN3 normalizes
  the encoder output and feeds the decoder; DIN2 and DIN1 normalize the encoder features at 1/2 and
  full resolution and their outputs are added to the decoder's features at those levels.

Style side: the paper's point is a *sophisticated* style encoder with a *lightweight* content
encoder ("DIN allows for the use of an elaborate style encoder ... and a lightweight content
encoder"), the style codes being computable in advance. So by default (``style_encoder="vgg"``) the
style features are VGG-19's relu2_1, relu3_1 and relu4_1 (frozen, the loss network's weights) for
DIN1, DIN2 and DIN3. ``style_encoder="mobilenet"`` gives the style side its own copy of the content
encoder's architecture instead (trained with the rest), for a network that is small end to end.

Widths. With c1, c2, c3 = 32, 96, 128 and 9x9 outer convolutions the multiply-accumulates at
512x512 are 3.623 G for the encoder and 3.722 G for the decoder, the paper's Table 1 figures
(3.62 G and 3.72 G), and the weight and bias nets (hidden width 2C, style features pooled to 4x4)
take 19.6 M (paper: 19.97 M). The paper's table does not list the dynamic convolutions of the DIN
layers themselves; they are counted separately (1x1 kernels: 1.14 G). See :func:`macs_breakdown`.

Normalization inside encoder and decoder is an affine instance norm (:class:`din_ops.nn.InstanceNorm2d`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import nn as din_nn
from .vgg import CHANNELS as VGG_CHANNELS
from .vgg import MIN_SIZE as VGG_MIN_SIZE
from .vgg import VGG19Encoder

StyleCodes = list[din_nn.StyleCode]


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _dw(channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pw(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


class _Residual(nn.Module):
    """x + [dw3x3, pw, IN, ReLU, dw3x3, pw, IN](x) (a depthwise separable residual layer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _dw(channels), _pw(channels, channels), din_nn.InstanceNorm2d(channels), _relu(),
            _dw(channels), _pw(channels, channels), din_nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        # In place where nothing records the graph (inference): one full-size tensor fewer.
        return h.add_(x) if not torch.is_grad_enabled() else x + h


class MobileEncoder(nn.Module):
    """The content encoder: returns the features at full, 1/2 and 1/4 resolution (c1, c2, c3)."""

    def __init__(self, widths: Sequence[int] = (32, 96, 128), outer_kernel: int = 9) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, c1, outer_kernel, padding=outer_kernel // 2, bias=False),
                                  din_nn.InstanceNorm2d(c1), _relu())
        self.down1 = nn.Sequential(_dw(c1, 2), _pw(c1, c2), din_nn.InstanceNorm2d(c2), _relu())
        self.down2 = nn.Sequential(_dw(c2, 2), _pw(c2, c3), din_nn.InstanceNorm2d(c3), _relu())
        self.residual = nn.Sequential(_Residual(c3), _Residual(c3))

    def forward(self, x: Tensor) -> list[Tensor]:
        """The features of images (N, 3, H, W), any size.

        Args:
            x: RGB images.

        Returns:
            ``[e1, e2, e3]``: c1 channels at full size, c2 at 1/2 and c3 at 1/4 of it (rounded up).
        """
        e1 = self.stem(x)
        e2 = self.down1(e1)
        e3 = self.residual(self.down2(e2))
        return [e1, e2, e3]


class _Up(nn.Module):
    """Mirror of a downsampling block: pointwise cin -> cout at the low resolution, bilinear
    upsampling to the skip level's size, depthwise 3x3, IN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pw = _pw(cin, cout)
        self.rest = nn.Sequential(_dw(cout), din_nn.InstanceNorm2d(cout), _relu())

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        x = F.interpolate(self.pw(x), size=tuple(size), mode="bilinear", align_corners=False)
        return self.rest(x)


class RowPackedConv2d(nn.Conv2d):
    """A stride-1, odd k x k, "same"-padded convolution with few output channels, computed faster.

    CPU convolution kernels (oneDNN) vectorize over output channels and pad them to the vector
    width: a 9x9 convolution to 3 channels costs as much as one to 16. This module (the decoder's
    last layer) splits the kernel's rows into ``g`` groups of ``r`` rows and stacks the groups as
    output channels (``g * out_channels`` <= ``lanes``): one convolution with an r x k kernel,
    then ``g`` shifted slices are summed. Same parameters and state dict as ``nn.Conv2d``, same
    result up to rounding; about 2x faster for 32 -> 3 channels, 9x9, on a 2-core AVX-512 CPU.
    It multiplies by the zero rows that complete the last group (9 rows as 5 groups of 2: 11% more
    multiply-adds than the layer's nominal cost). Set ``packed = False`` for the plain convolution
    (:func:`macs_breakdown` does, to count the architecture's cost).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, lanes: int = 16) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"RowPackedConv2d: expected an odd kernel_size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = kernel_size
        groups = min(k, max(1, lanes // out_channels))
        self.rows = -(-k // groups)
        self.row_groups = -(-k // self.rows)
        self.packed = True

    def forward(self, x: Tensor) -> Tensor:
        """The convolution of ``x`` (N, in_channels, H, W): (N, out_channels, H, W), as ``nn.Conv2d``.

        Args:
            x: the input, contiguous or channels_last.

        Returns:
            The output, in the layout of the plain convolution's.
        """
        if self.row_groups == 1 or not self.packed:
            return super().forward(x)
        co, ci, k, _ = self.weight.shape
        g, r = self.row_groups, self.rows
        extra = g * r - k  # zero rows that complete the last group
        w = F.pad(self.weight, (0, 0, 0, extra)).view(co, ci, g, r, k).permute(2, 0, 1, 3, 4)
        w = w.reshape(g * co, ci, r, k)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            w = w.contiguous(memory_format=torch.channels_last)
        # Output row j of z reads input rows j - (p + extra) + dy; group q's part of output row i
        # is z row i + q * r + extra.
        p = k // 2
        z = F.conv2d(x, w, None, padding=(p + extra, p))
        h = x.shape[2]
        y = z[:, :co, extra:extra + h]
        for q in range(1, g):
            y = y + z[:, q * co:(q + 1) * co, q * r + extra:q * r + extra + h]
        return y.add_(self.bias.view(1, co, 1, 1))  # y is the fresh sum of the slices


class MobileDecoder(nn.Module):
    """The decoder: ``forward(d3, s2, s1)`` with d3 the DIN3 output (c3, 1/4 resolution) and s2, s1
    the DIN2 and DIN1 outputs added at 1/2 and full resolution. Returns the image (N, 3, H, W)."""

    def __init__(self, widths: Sequence[int] = (32, 96, 128), outer_kernel: int = 9) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.residual = nn.Sequential(_Residual(c3), _Residual(c3))
        self.up2 = _Up(c3, c2)
        self.up1 = _Up(c2, c1)
        self.head = RowPackedConv2d(c1, 3, outer_kernel)

    def forward(self, d3: Tensor, s2: Tensor, s1: Tensor) -> Tensor:
        """Decodes the DIN outputs into an image.

        Args:
            d3: the DIN3 output (N, c3, H / 4, W / 4).
            s2: the DIN2 output (N, c2, H / 2, W / 2), added after the first upsampling.
            s1: the DIN1 output (N, c1, H, W), added after the second; it sets the output size.

        Returns:
            The image (N, 3, H, W), not clamped.
        """
        if torch.is_grad_enabled():
            x = self.up2(self.residual(d3), s2.shape[2:]) + s2
            x = self.up1(x, s1.shape[2:]) + s1
        else:  # inference: add the DIN outputs in place
            x = self.up2(self.residual(d3), s2.shape[2:]).add_(s2)
            x = self.up1(x, s1.shape[2:]).add_(s1)
        return self.head(x)


class DINStyleNet(nn.Module):
    """The paper's MobileNet-based arbitrary style transfer network with hierarchical DIN layers.

    ``forward(content, style, alpha=1.0)`` returns the stylized image; images are RGB (N, 3, H, W):
    content images any size, style images at least :attr:`min_style_size` pixels on each side (8
    for the VGG style encoder, 1 for "mobilenet"); the inputs in [0, 1], the output of the
    content's size and not clamped (the decoder ends in a linear layer; ``din_ops.images`` clamps
    when it saves). A style batch of 1 serves a whole content batch. For a style used many times,
    :meth:`encode_style` once and :meth:`stylize`.

    Args:
        widths: (c1, c2, c3) channels at full, 1/2 and 1/4 resolution (default: the widths whose
            cost matches the paper's Table 1, see the module docstring).
        outer_kernel: kernel size of the first and the last convolution (9, as Johnson et al.).
        style_encoder: "vgg" (paper: VGG-19 features, frozen; see ``vgg_weights``) or "mobilenet".
        vgg_weights: path of a torchvision vgg19 state dict for the VGG style encoder (None: random
            weights, or weights loaded later from a checkpoint).
        din_kind, din_kernel, din_groups: kind, kernel size and groups of the DIN layers
            (see :class:`din_ops.nn.DynamicInstanceNorm2d`; default the paper's 1x1 kernel).
        backend: din_ops backend of every DIN and instance-norm layer (None: compiled kernels).
    """

    def __init__(self, widths: Sequence[int] = (32, 96, 128), outer_kernel: int = 9, *,
                 style_encoder: str = "vgg", vgg_weights: Optional[str] = None, din_kind: str = "conv",
                 din_kernel: int = 1, din_groups: int = 1, backend: Optional[str] = None) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) <= 0:
            raise ValueError(f"DINStyleNet: expected three positive widths, got {widths}")
        if style_encoder not in ("vgg", "mobilenet"):
            raise ValueError(f"DINStyleNet: expected style_encoder 'vgg' or 'mobilenet', got {style_encoder!r}")
        self.config: dict[str, Any] = dict(widths=list(widths), outer_kernel=outer_kernel,
                                           style_encoder=style_encoder, din_kind=din_kind,
                                           din_kernel=din_kernel, din_groups=din_groups)
        self.encoder = MobileEncoder(widths, outer_kernel)
        self.decoder = MobileDecoder(widths, outer_kernel)
        if style_encoder == "vgg":
            self.style_encoder: nn.Module = VGG19Encoder(vgg_weights)
            style_channels = VGG_CHANNELS[1:]
        else:
            self.style_encoder = MobileEncoder(widths, outer_kernel)
            style_channels = widths
        self.dins = nn.ModuleList(
            din_nn.DynamicInstanceNorm2d(c, s, kind=din_kind, kernel_size=din_kernel,
                                         groups=din_groups if din_groups > 0 else c)
            for c, s in zip(widths, style_channels)
        )
        din_nn.set_backend(self, backend)

    @classmethod
    def from_config(cls, config: dict[str, Any], backend: Optional[str] = None) -> "DINStyleNet":
        """A network with the architecture recorded in ``config`` (``model.config``)."""
        return cls(**config, backend=backend)

    def set_backend(self, backend: Optional[str]) -> "DINStyleNet":
        """Runs every din_ops layer on ``backend`` (None, "cpu", "cuda" or "reference")."""
        din_nn.set_backend(self, backend)
        return self

    @property
    def min_style_size(self) -> int:
        """The smallest side of a style image: 8 with the VGG style encoder (three max-pools before
        relu4_1), 1 with the MobileNet one."""
        return VGG_MIN_SIZE if self.config["style_encoder"] == "vgg" else 1

    def param_net_parameters(self) -> list[nn.Parameter]:
        """The weight and bias nets' parameters (the paper trains them with a 10x learning rate)."""
        return [p for din in self.dins for p in din.parameters()]

    def style_features(self, style: Tensor) -> list[Tensor]:
        """Style features for DIN1..DIN3 (VGG relu2_1..relu4_1, or the style MobileEncoder's)."""
        feats = self.style_encoder(style)
        return feats[1:] if self.config["style_encoder"] == "vgg" else feats

    def encode_style(self, style: Tensor) -> StyleCodes:
        """The style codes of the three DIN layers for style images (N, 3, H, W), H and W at least
        :attr:`min_style_size`."""
        _check_image(style, "style")
        if min(style.shape[2:]) < self.min_style_size:
            raise ValueError(f"DINStyleNet: style images must be at least {self.min_style_size}x"
                             f"{self.min_style_size} pixels with the {self.config['style_encoder']} style "
                             f"encoder, got {style.shape[3]}x{style.shape[2]}")
        return [din.encode_style(f) for din, f in zip(self.dins, self.style_features(style))]

    @staticmethod
    def mix_styles(codes: Sequence[StyleCodes], weights: Sequence[float]) -> StyleCodes:
        """Interpolates between styles: the weighted sum of several styles' codes."""
        if len(codes) == 0 or len(codes) != len(weights):
            raise ValueError(f"DINStyleNet.mix_styles: expected as many weights as styles (>= 1), got "
                             f"{len(weights)} weights for {len(codes)} styles")
        return [din_nn.mix_codes([c[level] for c in codes], weights) for level in range(len(codes[0]))]

    def stylize(self, content: Tensor, codes: StyleCodes | Sequence[StyleCodes], alpha: float = 1.0,
                masks: Optional[Tensor] = None) -> Tensor:
        """Stylizes content images (N, 3, H, W) with precomputed style codes.

        Without ``masks``, ``codes`` is one style's codes. With ``masks`` (N or 1, K, H, W), ``codes``
        is a list of K styles' codes and each DIN layer's output is the mask-weighted sum of the K
        stylizations (masks are resized to each level bilinearly; regions whose masks sum to 1 get
        a plain mixture). ``alpha`` in [0, 1]: content/style trade-off at every DIN layer.
        """
        _check_image(content, "content")
        levels = len(self.dins)
        if masks is None and not _is_style_codes(codes, levels):
            if isinstance(codes, (list, tuple)) and codes and all(_is_style_codes(c, levels) for c in codes):
                raise ValueError(f"DINStyleNet.stylize: got {len(codes)} styles' codes but no masks; pass one "
                                 f"style's codes (mix_styles combines several) or masks (N or 1, {len(codes)}, "
                                 f"H, W) saying where each style goes")
            raise ValueError(f"DINStyleNet.stylize: expected one style's codes ({levels} (weight, bias) pairs, "
                             f"as encode_style returns), got {_describe(codes)}")
        if masks is not None and not (isinstance(codes, (list, tuple)) and codes
                                      and all(_is_style_codes(c, levels) for c in codes)):
            what = "one style's codes" if _is_style_codes(codes, levels) else _describe(codes)
            raise ValueError(f"DINStyleNet.stylize: with masks, expected a list of K styles' codes (one per "
                             f"mask channel, each as encode_style returns), got {what}")
        feats = self.encoder(content)
        if masks is None:
            outs = [din.apply(f, code, alpha) for din, f, code in zip(self.dins, feats, codes)]
        else:
            outs = self._masked(feats, codes, masks, alpha)
        return self.decoder(outs[2], outs[1], outs[0])

    def _masked(self, feats: list[Tensor], codes: Sequence[StyleCodes], masks: Tensor,
                alpha: float) -> list[Tensor]:
        n, _, h, w = feats[0].shape
        if not isinstance(masks, Tensor) or masks.dim() != 4 or masks.shape[1] != len(codes) \
                or masks.shape[0] not in (1, n) or tuple(masks.shape[2:]) != (h, w):
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            batch = "1" if n == 1 else f"{n} or 1"
            raise ValueError(f"DINStyleNet.stylize: expected masks of shape (N or 1, K, H, W) = "
                             f"({batch}, {len(codes)}, {h}, {w}) for {len(codes)} styles and content of "
                             f"batch {n} and size {w}x{h}, got {got}")
        outs = []
        for level, (din, f) in enumerate(zip(self.dins, feats)):
            m = masks.to(f.dtype)
            if tuple(m.shape[2:]) != tuple(f.shape[2:]):
                m = F.interpolate(m, size=f.shape[2:], mode="bilinear", align_corners=False)
            out = None
            for k, code in enumerate(codes):
                part = din.apply(f, code[level], alpha) * m[:, k:k + 1]
                out = part if out is None else out + part
            outs.append(out)
        return outs

    def forward(self, content: Tensor, style: Tensor, alpha: float = 1.0) -> Tensor:
        """The stylized image: ``stylize(content, encode_style(style), alpha)``."""
        return self.stylize(content, self.encode_style(style), alpha)


def _is_style_codes(codes: Any, levels: int) -> bool:
    """Whether ``codes`` is one style's codes: a (weight, bias) pair of tensors per DIN layer."""
    return isinstance(codes, (list, tuple)) and len(codes) == levels and all(
        isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(t, Tensor) for t in c) for c in codes)


def _describe(codes: Any) -> str:
    if isinstance(codes, (list, tuple)):
        kinds = "/".join(sorted({type(c).__name__ for c in codes})) or "items"
        return f"a {type(codes).__name__} of {len(codes)} {kinds}"
    return type(codes).__name__


def _check_image(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"DINStyleNet: expected {name} images of shape (N, 3, H, W), got {got}")
    if not x.is_floating_point():
        raise TypeError(f"DINStyleNet: expected {name} images as floats in [0, 1], got {x.dtype}")


def macs_breakdown(model: DINStyleNet, size: int = 512, style_size: int = 512) -> dict[str, int]:
    """Multiply-accumulates (FLOPs / 2, counted by ``torch.utils.flop_counter.FlopCounterMode``)
    of one forward of ``model`` for a ``size`` x ``size`` content and a ``style_size`` style image.

    Keys: "encoder", "decoder" (the paper's Table 1 columns), "param_nets" (weight and bias nets of
    all DIN layers), "din" (the DIN layers' dynamic convolutions), "style_encoder", and "total".
    """
    # The nominal cost of each layer: row-packed convolutions counted as the plain ones they equal.
    packed = [m for m in model.modules() if isinstance(m, RowPackedConv2d)]
    for m in packed:
        m.packed = False
    try:
        return _macs_breakdown(model, size, style_size)
    finally:
        for m in packed:
            m.packed = True


def _macs_breakdown(model: DINStyleNet, size: int, style_size: int) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn):
        with FlopCounterMode(display=False) as counter:
            result = fn()
        return counter.get_total_flops() // 2, result

    device = next(model.parameters()).device
    content = torch.rand(1, 3, size, size, device=device)
    style = torch.rand(1, 3, style_size, style_size, device=device)
    with torch.no_grad():
        out: dict[str, int] = {}
        out["style_encoder"], style_feats = count(lambda: model.style_features(style))
        out["param_nets"], codes = count(lambda: [d.encode_style(f) for d, f in zip(model.dins, style_feats)])
        out["encoder"], feats = count(lambda: model.encoder(content))
        out["din"], outs = count(lambda: [d.apply(f, c) for d, f, c in zip(model.dins, feats, codes)])
        out["decoder"], _ = count(lambda: model.decoder(outs[2], outs[1], outs[0]))
    out["total"] = sum(out.values())
    return out


def paper_macs(size: int = 512, style_size: int = 512, **config: Any) -> dict[str, int]:
    """:func:`macs_breakdown` of a ``DINStyleNet(**config)`` built on fake tensors (no memory, no
    arithmetic: ``torch._subclasses.FakeTensorMode``), so counting a 512x512 or larger forward is
    instantaneous."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return macs_breakdown(DINStyleNet(**config), size, style_size)

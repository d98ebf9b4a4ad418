"""VGG-19 up to relu4_1, in torchvision's ``vgg19`` layout, loading weights from a local file.

Used as the loss network (content loss at relu4_1, style loss at relu1_1..relu4_1; paper,
Implementation Details) and as the style encoder of :class:`din_ops.models.DINStyleNet`. Nothing is
ever downloaded: pass the path of a state dict saved from ``torchvision.models.vgg19`` (e.g.
``torch.save(torchvision.models.vgg19(weights="IMAGENET1K_V1").state_dict(), "vgg19.pth")`` on a
machine that has torchvision and network access).
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import Tensor, nn

# torchvision.models.vgg19().features indices of the convolutions up to conv4_1, with (in, out).
_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
          14: (256, 256), 16: (256, 256), 19: (256, 512)}
_POOLS = (4, 9, 18)
# Indices of relu1_1, relu2_1, relu3_1, relu4_1 in `features`.
_TAPS = (1, 6, 11, 20)
# ImageNet statistics that torchvision's VGG weights expect (inputs in [0, 1], RGB).
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

#: Channels of relu1_1, relu2_1, relu3_1, relu4_1.
CHANNELS = (64, 128, 256, 512)
#: The smallest input side: relu4_1 comes after three 2x2 max-pools (8 -> 4 -> 2 -> 1).
MIN_SIZE = 2 ** len(_POOLS)


def load_vgg19_state_dict(path: Union[str, os.PathLike]) -> dict[str, Tensor]:
    """Reads and validates a torchvision-layout VGG-19 state dict; returns the ``features.*``
    tensors up to conv4_1.

    Accepts the state dict of ``torchvision.models.vgg19`` (extra keys such as the classifier are
    ignored), also nested under a "state_dict" key. Raises FileNotFoundError for a missing file and
    ValueError naming the problem for anything that is not such a state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"din_ops: VGG-19 weights file {path!r} not found. Save torchvision's weights once with "
            "torch.save(torchvision.models.vgg19(weights='IMAGENET1K_V1').state_dict(), 'vgg19.pth')"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling or format error
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise ValueError(f"din_ops: {path!r} is not a readable torch state dict "
                         f"({type(error).__name__}: {first})") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"din_ops: {path!r} holds a {type(state).__name__}, expected a VGG-19 state dict")
    out: dict[str, Tensor] = {}
    problems = []
    for index, (cin, cout) in _CONVS.items():
        for suffix, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            key = f"features.{index}.{suffix}"
            value = state.get(key)
            if not isinstance(value, Tensor):
                problems.append(f"missing {key}")
            elif tuple(value.shape) != shape:
                problems.append(f"{key} has shape {tuple(value.shape)}, expected {shape}")
            elif not value.is_floating_point():
                problems.append(f"{key} has dtype {value.dtype}, expected a floating-point tensor")
            else:
                out[key] = value.float()
    if problems:
        shown = "; ".join(problems[:4]) + ("; ..." if len(problems) > 4 else "")
        raise ValueError(
            f"din_ops: {path!r} is not a torchvision vgg19 state dict ({shown}); expected the keys "
            "features.{0,2,5,7,10,12,14,16,19}.{weight,bias} of torchvision.models.vgg19().state_dict()"
        )
    return out


class VGG19Encoder(nn.Module):
    """VGG-19 ``features`` up to relu4_1 (torchvision layout, so its state dict loads as is).

    ``forward(x)`` takes RGB images in [0, 1] (N, 3, H, W), applies the ImageNet normalization the
    weights expect, and returns ``[relu1_1, relu2_1, relu3_1, relu4_1]`` (channels 64, 128, 256,
    512 at 1, 1/2, 1/4, 1/8 of the input size). The encoder is frozen (``requires_grad_(False)``):
    it is a fixed loss network and style encoder. Inputs must be at least ``MIN_SIZE`` (8) pixels
    on each side.

    Args:
        weights: path of a torchvision vgg19 state dict (see :func:`load_vgg19_state_dict`), or None
            for random weights (tests, timing; a model trained with random VGG weights is useless).
    """

    def __init__(self, weights: Optional[Union[str, os.PathLike]] = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(_TAPS[-1] + 1):
            if index in _CONVS:
                layers.append(nn.Conv2d(*_CONVS[index], 3, padding=1))
            elif index in _POOLS:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.load_state_dict(load_vgg19_state_dict(weights))
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """The features of RGB images in [0, 1].

        Args:
            x: images (N, 3, H, W), H and W at least ``MIN_SIZE`` (8).

        Returns:
            ``[relu1_1, relu2_1, relu3_1, relu4_1]`` at 1, 1/2, 1/4 and 1/8 of the input size.
        """
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"din_ops: VGG19Encoder expects RGB images (N, 3, H, W), got {got}")
        if min(x.shape[2:]) < MIN_SIZE:
            raise ValueError(f"din_ops: VGG19Encoder needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels "
                             f"(three 2x2 max-pools before relu4_1), got {x.shape[3]}x{x.shape[2]}")
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        taps = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in _TAPS:
                taps.append(h)
        return taps

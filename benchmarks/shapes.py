"""The shapes din-bench runs by default, and how ``--shapes`` names them.

The model's shapes are the feature maps that the DIN layers of the paper's MobileNet network normalize
(Jing et al., AAAI 2020, Sec. "An Application of Dynamic Instance Normalization" and Fig. 4). The text
gives the encoder as "one standard stride-1 convolutional layer, two stride-2 depthwise separable
convolutional blocks and two stride-1 residual layers, inspired by (Johnson, Alahi, and Fei-Fei
2016)", and the hierarchical DIN layers take the encoder's feature maps of every level. So for an
H x W input the levels are H x W, H/2 x W/2 and H/4 x W/4. The paper does not print the widths (they
are in its supplementary material); we take those of Johnson et al.'s network, 32, 64 and 128
channels. A check against the paper's Table 1: that encoder costs about 3.5 GMAC at 512 x 512 (9x9
conv 3->32 at 512^2: 2.04 G; the two depthwise-separable stride-2 blocks: 0.29 G; two residual
layers at 128^2, assuming two depthwise-separable 3x3 128->128 convolutions each: 1.15 G), close to
the 3.62 G the paper reports, while a first layer of stride 2 would put it at about a quarter of that.

One image (N = 1), as in the paper's cost figures and in stylizing one picture:

    512 x 512:   (1, 32, 512, 512)    (1, 64, 256, 256)    (1, 128, 128, 128)
    1024 x 1024: (1, 32, 1024, 1024)  (1, 64, 512, 512)    (1, 128, 256, 256)

``--shapes`` takes a comma-separated list of: ``model`` (both sizes), ``model512``, ``model1024``,
``targets`` (each op's own target shapes, from the issue that asks for its figures), ``quick`` (tiny
shapes, seconds), or explicit shapes ``NxCxHxW`` (e.g. ``2x16x32x32``).
"""
from __future__ import annotations

from .registry import OpBench, Shape

# (channels, downsampling factor) of the levels that carry a DIN layer.
MODEL_LEVELS = ((32, 1), (64, 2), (128, 4))
MODEL_SIZES = (512, 1024)
QUICK_SHAPES: tuple[Shape, ...] = ((2, 16, 16, 16),)
DEFAULT = "model,targets"


def model_shapes(size: int, n: int = 1) -> list[Shape]:
    """The DIN layers' feature maps for one size x size input image."""
    return [(n, c, size // f, size // f) for c, f in MODEL_LEVELS]


def parse_shape(token: str) -> Shape:
    """``"NxCxHxW"`` -> (N, C, H, W); ValueError naming the token otherwise."""
    parts = token.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(
            f"din-bench: expected a shape as NxCxHxW with positive sizes (e.g. 2x16x32x32), or one of "
            f"model, model512, model1024, targets, quick; got {token!r}"
        )
    return shape  # type: ignore[return-value]


def shapes_for(bench: OpBench, spec: str, gpu: bool = False) -> list[tuple[str, Shape]]:
    """The (set label, shape) pairs that ``spec`` names for one op, without repeats, in order."""
    out: list[tuple[str, Shape]] = []

    def add(label: str, shape: Shape) -> None:
        if shape not in [s for _, s in out] and bench.accepts(shape):
            out.append((label, shape))

    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token in ("model", "model512", "model1024"):
            sizes = MODEL_SIZES if token == "model" else (int(token[len("model"):]),)
            for size in sizes:
                for shape in model_shapes(size):
                    add(f"model {size}", shape)
        elif token == "targets":
            for shape in bench.targets:
                add("target", shape)
            if gpu:
                for shape in bench.gpu_targets:
                    add("target", shape)
        elif token == "quick":
            for shape in QUICK_SHAPES:
                add("quick", shape)
        else:
            add("custom", parse_shape(token))
    return out


def label(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)

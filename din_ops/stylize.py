"""din-stylize: stylize images with a trained DIN network (din_ops.models.DINStyleNet).

Examples::

    din-stylize --checkpoint runs/din/model.pt --content photo.jpg --style starry.jpg --output out.png
    din-stylize --checkpoint model.pt --content photos/ --style a.jpg b.jpg --style-weights 0.7 0.3 \\
        --output stylized/                        # interpolate between two styles
    din-stylize --checkpoint model.pt --content photo.jpg --style a.jpg b.jpg \\
        --masks sky.png ground.png --output out.png   # a different style in each masked region
    din-stylize --checkpoint model.pt --content photo.jpg --style a.jpg --alpha 0.6 --preserve-color

No weights ship with din_ops and none are downloaded: train a model with din-train and pass it with
--checkpoint (or --untrained for a randomly initialized network, for smoke tests and timing).
Content images are processed at full resolution unless --max-size is given; the network is light
enough for large images (a 4096x2160 photo runs on a CPU machine with 24 GiB).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from .images import ImageError, is_image_path, list_images, load_image, save_image
from .models import DINStyleNet

NO_CHECKPOINT = (
    "din-stylize: no trained model given. din_ops ships no weights and downloads none: train one with\n"
    "  din-train --content CONTENT_DIR --style STYLE_DIR --vgg vgg19.pth --out runs/din\n"
    "and pass --checkpoint runs/din/model.pt (or --untrained for a random network, for smoke tests)."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="din-stylize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--content", nargs="+", required=True, help="content image files and/or folders")
    p.add_argument("--style", nargs="+", required=True, help="one or more style images")
    p.add_argument("--output", required=True,
                   help="output image file (one content image), or a folder (written as <name>_stylized.png)")
    p.add_argument("--checkpoint", help="a model trained with din-train (model.pt or checkpoint.pt)")
    p.add_argument("--untrained", action="store_true", help="a randomly initialized network (no checkpoint)")
    p.add_argument("--alpha", type=float, default=1.0, help="content/style trade-off in [0, 1]")
    p.add_argument("--style-weights", type=float, nargs="+",
                   help="interpolate between the styles with these weights (normalized to sum to 1)")
    p.add_argument("--masks", nargs="+", help="one grayscale mask per style, the content's size: each style "
                                              "is applied where its mask is white")
    p.add_argument("--preserve-color", action="store_true", help="keep the content's colours (luminance "
                                                                  "from the result, chroma from the content)")
    p.add_argument("--max-size", type=int, help="scale content images down to this longer side")
    p.add_argument("--style-size", type=int, default=512, help="scale style images down to this longer side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="din_ops backend (default: the compiled kernels)")
    p.add_argument("--seed", type=int, default=0, help="initialization seed for --untrained")
    return p


_RGB_TO_YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])


def preserve_color(result: Tensor, content: Tensor) -> Tensor:
    """The luminance (Y of YUV, BT.601) of ``result`` with the chroma (U, V) of ``content``."""
    m = _RGB_TO_YUV.to(result)
    y = torch.einsum("ij,njhw->nihw", m[:1], result)
    uv = torch.einsum("ij,njhw->nihw", m[1:], content)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), torch.cat([y, uv], dim=1))


def _output_paths(contents: list[Path], output: str) -> list[Path]:
    out = Path(output)
    if len(contents) == 1 and is_image_path(out) and not out.is_dir():
        return [out]
    if out.exists() and not out.is_dir():
        raise ImageError(f"--output {output!r} is a file, but {len(contents)} content images need a folder")
    return [out / f"{c.stem}_stylized.png" for c in contents]


def _load_model(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DINStyleNet:
    if args.checkpoint:
        from .train import model_from_checkpoint

        try:
            return model_from_checkpoint(args.checkpoint, backend=args.backend)
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            parser.exit(2, f"din-stylize: error: {error}\n")
    torch.manual_seed(args.seed)
    return DINStyleNet(backend=args.backend)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Path]:
    """Stylizes as the parsed command line says; returns the files written."""
    if not args.checkpoint and not args.untrained:
        parser.exit(2, NO_CHECKPOINT + "\n")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.style_weights is not None and len(args.style_weights) != len(args.style):
        parser.error(f"--style-weights: {len(args.style_weights)} weights for {len(args.style)} styles")
    if args.style_weights is not None and args.masks is not None:
        parser.error("--style-weights and --masks do not combine: masks already say where each style goes")
    if args.masks is not None and len(args.masks) != len(args.style):
        parser.error(f"--masks: {len(args.masks)} masks for {len(args.style)} styles (one mask per style)")
    contents = [f for path in args.content for f in list_images(path, "content")]
    styles = [load_image(f, max_size=args.style_size) for f in args.style]
    masks = [load_image(f, mode="L") for f in args.masks] if args.masks else None
    outputs = _output_paths(contents, args.output)

    model = _load_model(args, parser).to(args.device).eval()
    model = model.to(memory_format=torch.channels_last)
    device = torch.device(args.device)
    with torch.inference_mode():
        codes = [model.encode_style(s.to(device).contiguous(memory_format=torch.channels_last)) for s in styles]
        if args.masks is None:
            weights = args.style_weights or [1.0] * len(codes)
            total = sum(weights)
            if total == 0:
                parser.error("--style-weights must not sum to 0")
            code = model.mix_styles(codes, [w / total for w in weights])
        for content_path, out_path in zip(contents, outputs):
            content = load_image(content_path, max_size=args.max_size)
            mask = None
            if masks is not None:
                height, width = _full_size(content_path)
                for f, m in zip(args.masks, masks):
                    if tuple(m.shape[2:]) != (height, width):
                        raise ImageError(f"mask {f!r} is {m.shape[3]}x{m.shape[2]} pixels but content image "
                                         f"{str(content_path)!r} is {width}x{height}; masks must match it")
                mask = torch.cat(masks, dim=1)
                if mask.shape[2:] != content.shape[2:]:
                    mask = torch.nn.functional.interpolate(mask, size=content.shape[2:], mode="bilinear",
                                                           align_corners=False)
                mask = _normalize_masks(mask).to(device)
            x = content.to(device).contiguous(memory_format=torch.channels_last)
            if mask is None:
                result = model.stylize(x, code, args.alpha)
            else:
                result = model.stylize(x, codes, args.alpha, masks=mask)
            del x
            result = result.float().cpu()
            if args.preserve_color:
                result = preserve_color(result.clamp(0, 1), content)
            save_image(result, out_path)
            print(f"wrote {out_path}", file=sys.stderr)
    return outputs


def _full_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.height, img.width


def _normalize_masks(mask: Tensor) -> Tensor:
    """Masks (1, K, H, W) in [0, 1] scaled to sum to 1 at every pixel (equal shares where all are 0)."""
    total = mask.sum(dim=1, keepdim=True)
    k = mask.shape[1]
    return torch.where(total > 0, mask / total.clamp_min(1e-12), torch.full_like(mask, 1.0 / k))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args, parser)
    except ImageError as error:
        parser.exit(2, f"din-stylize: error: {error}\n")


if __name__ == "__main__":
    main()

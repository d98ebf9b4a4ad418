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

An --output with an image suffix (.png, .jpg, ...) is a file; anything else is a folder, where a
content folder's images are written under their subfolders as <name>_stylized.png. Existing files
are never replaced without --overwrite, and an output that is one of the inputs, or that two
content images share, is refused. Earlier outputs found in a content folder (the files this naming
would write) are skipped.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from .images import (ImageError, check_folder, check_writable_format, image_format, image_size, list_images,
                     load_image, save_image)
from .models import DINStyleNet

NO_CHECKPOINT = (
    "din-stylize: no trained model given. din_ops ships no weights and downloads none: train one with\n"
    "  din-train --content CONTENT_DIR --style STYLE_DIR --vgg vgg19.pth --out runs/din\n"
    "and pass --checkpoint runs/din/model.pt (or --untrained for a random network, for smoke tests)."
)


def build_parser() -> argparse.ArgumentParser:
    """The din-stylize command line.

    Returns:
        The parser; :func:`run` takes what it parses.
    """
    p = argparse.ArgumentParser(prog="din-stylize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--content", nargs="+", required=True, help="content image files and/or folders")
    p.add_argument("--style", nargs="+", required=True, help="one or more style images")
    p.add_argument("--output", required=True,
                   help="output image file (a name with an image suffix, for one content image), or a folder "
                        "(written as <subfolders>/<name>_stylized.png)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("--checkpoint", help="a model trained with din-train (model.pt or checkpoint.pt)")
    p.add_argument("--untrained", action="store_true", help="a randomly initialized network (no checkpoint)")
    p.add_argument("--alpha", type=float, default=1.0,
                   help="content/style trade-off in [0, 1] (default: %(default)s)")
    p.add_argument("--style-weights", type=float, nargs="+",
                   help="interpolate between the styles with these weights (normalized to sum to 1)")
    p.add_argument("--masks", nargs="+", help="one grayscale mask per style, the content's size: each style "
                                              "is applied where its mask is white")
    p.add_argument("--preserve-color", action="store_true", help="keep the content's colours (luminance "
                                                                  "from the result, chroma from the content)")
    p.add_argument("--max-size", type=int, help="scale content images down to this longer side (> 0; "
                                                "default: full resolution)")
    p.add_argument("--style-size", type=int, default=512,
                   help="scale style images down to this longer side (default: %(default)s); style images "
                        "must keep 8 pixels on each side for the VGG style encoder")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--backend", default=None, help="din_ops backend (default: the compiled kernels)")
    p.add_argument("--seed", type=int, default=0, help="initialization seed for --untrained (default: %(default)s)")
    return p


_RGB_TO_YUV = torch.tensor([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])


def preserve_color(result: Tensor, content: Tensor) -> Tensor:
    """The luminance (Y of YUV, BT.601) of ``result`` with the chroma (U, V) of ``content``."""
    m = _RGB_TO_YUV.to(result)
    y = torch.einsum("ij,njhw->nihw", m[:1], result)
    uv = torch.einsum("ij,njhw->nihw", m[1:], content)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), torch.cat([y, uv], dim=1))


def _content_files(paths: Sequence[str]) -> list[tuple[Path, Path, bool]]:
    """The content images that --content names: (file, its path relative to the argument that named
    it, whether it was found by scanning a folder)."""
    out = []
    for arg in paths:
        root = Path(arg)
        scanned = root.is_dir()
        out.extend((f, f.relative_to(root) if scanned else Path(f.name), scanned)
                   for f in list_images(arg, "content"))
    return out


def _output_paths(contents: list[tuple[Path, Path, bool]], output: str) -> list[Path]:
    """Where each content image's result goes: ``output`` itself when it has an image suffix (one
    content image only), else ``output/<subfolders>/<name>_stylized.png``."""
    out = Path(output)
    if image_format(out) is not None and not out.is_dir():
        if len(contents) != 1:
            raise ImageError(f"--output {output!r} names one image file, but there are {len(contents)} content "
                             f"images: give a folder")
        check_writable_format(out)
        return [out]
    check_folder(out, "--output")
    return [out / rel.parent / f"{rel.stem}_stylized.png" for _, rel, _ in contents]


def _plan(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The content images and their output files, checked: no output is an input or the output of
    two contents, and none exists unless --overwrite. Earlier outputs found in content folders
    (files that are the output of another content image) are left out, with a note."""
    contents = _content_files(args.content)
    outputs = _output_paths(contents, args.output)
    produced = {o.resolve(): c for (c, _, _), o in zip(contents, outputs)}
    keep = []
    for (c, _, scanned), o in zip(contents, outputs):
        source = produced.get(c.resolve())
        if scanned and source is not None and source != c:
            print(f"din-stylize: skipping {str(c)!r}, the output of {str(source)!r}", file=sys.stderr)
        else:
            keep.append((c, o))
    if not keep:
        raise ImageError("--content: no content images left after skipping earlier outputs")
    inputs = {Path(f).resolve(): f"{what} {str(f)!r}" for what, files in (
        ("content image", [c for c, _ in keep]), ("style image", args.style), ("mask", args.masks or []))
        for f in files}
    writers: dict[Path, Path] = {}
    existing = []
    for c, o in keep:
        r = o.resolve()
        if r in inputs:
            raise ImageError(f"--output: {str(o)!r} would overwrite the {inputs[r]}; choose another output")
        if r in writers:
            raise ImageError(f"content images {str(writers[r])!r} and {str(c)!r} would both be written to "
                             f"{str(o)!r}; stylize them separately")
        writers[r] = c
        check_folder(o.parent, "--output folder")
        if o.is_dir():
            raise ImageError(f"--output: {str(o)!r} is a folder, not an image file")
        if o.exists():
            existing.append(o)
    if existing and not args.overwrite:
        more = f" and {len(existing) - 1} more files exist" if len(existing) > 1 else " exists"
        raise ImageError(f"--output: {str(existing[0])!r}{more}; pass --overwrite to replace "
                         f"{'them' if len(existing) > 1 else 'it'}")
    return [c for c, _ in keep], [o for _, o in keep]


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
    """Stylizes as the parsed command line says.

    Args:
        args: the parsed command line (:func:`build_parser`).
        parser: its parser, for usage errors.

    Returns:
        The files written.
    """
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
    for name in ("max_size", "style_size"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    from .train import resolve_device

    device = resolve_device(args.device)
    contents, outputs = _plan(args)

    model = _load_model(args, parser).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    smallest = model.min_style_size
    if args.style_size < smallest:
        parser.error(f"--style-size must be at least {smallest} for this model's "
                     f"{model.config['style_encoder']} style encoder, got {args.style_size}")
    styles = [load_image(f, max_size=args.style_size) for f in args.style]
    for f, style in zip(args.style, styles):
        if min(style.shape[2:]) < smallest:
            raise ImageError(f"style image {f!r} is {style.shape[3]}x{style.shape[2]} pixels (after --style-size "
                             f"{args.style_size}); this model's {model.config['style_encoder']} style encoder "
                             f"needs at least {smallest}x{smallest}")
    masks = [load_image(f, mode="L") for f in args.masks] if args.masks else None
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
                height, width = image_size(content_path)
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


def _normalize_masks(mask: Tensor) -> Tensor:
    """Masks (1, K, H, W) in [0, 1] scaled to sum to 1 at every pixel (equal shares where all are 0)."""
    total = mask.sum(dim=1, keepdim=True)
    k = mask.shape[1]
    return torch.where(total > 0, mask / total.clamp_min(1e-12), torch.full_like(mask, 1.0 / k))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The din-stylize command: stylizes as ``argv`` (default: ``sys.argv[1:]``) says, and exits
    with status 2 and a one-line message on a usage, file or image error.

    Args:
        argv: the command-line arguments, without the program name.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args, parser)
    except (ImageError, ValueError) as error:
        parser.exit(2, f"din-stylize: error: {error}\n")


if __name__ == "__main__":
    main()

"""Image files <-> tensors for din-train and din-stylize (Pillow), with clear errors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm")

PathLike = Union[str, os.PathLike]


class ImageError(ValueError):
    """A path that is not there, is not an image, or holds no images."""


def _pil():
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - pillow is a dependency
        raise ImportError("din_ops needs Pillow to read and write images: pip install pillow") from error
    return Image


def is_image_path(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(path: PathLike, what: str = "image") -> list[Path]:
    """The image files under a folder (recursively, sorted), or [path] for a file."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{what} path {os.fspath(path)!r} does not exist")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and is_image_path(f))
    if not files:
        raise ImageError(f"{what} folder {os.fspath(path)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def load_image(path: PathLike, mode: str = "RGB", max_size: Optional[int] = None) -> Tensor:
    """An image file as a float tensor in [0, 1]: (1, 3, H, W) for mode "RGB", (1, 1, H, W) for "L".

    ``max_size`` scales the image down (never up) so that its longer side is at most that many pixels.
    """
    Image = _pil()
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"image {os.fspath(path)!r} does not exist or is not a file")
    try:
        with Image.open(p) as img:
            img = img.convert(mode)
            if max_size is not None and max(img.size) > max_size:
                scale = max_size / max(img.size)
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                                 Image.Resampling.BICUBIC)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            t = data.view(img.height, img.width, len(mode)).permute(2, 0, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot read image {os.fspath(path)!r}: {error}") from error
    return t.unsqueeze(0).float().div_(255)


def save_image(x: Tensor, path: PathLike) -> None:
    """Writes an image tensor (3, H, W) or (1, 3, H, W) in [0, 1] (clamped) to ``path`` (format from
    the extension; PNG if it has none it knows)."""
    Image = _pil()
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"save_image: expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    data = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
    img = Image.fromarray(data.numpy(), "RGB")
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path if is_image_path(path) else path.with_suffix(".png"))


def grid(rows: Sequence[Tensor], size: int = 128) -> Tensor:
    """One image (3, H, W) from rows of image batches: each row's images resized to size x size."""
    out = []
    for row in rows:
        row = torch.nn.functional.interpolate(row.detach().float(), size=(size, size), mode="bilinear",
                                              align_corners=False)
        out.append(torch.cat(list(row.clamp(0, 1)), dim=2))
    width = max(r.shape[2] for r in out)
    out = [torch.nn.functional.pad(r, (0, width - r.shape[2])) for r in out]
    return torch.cat(out, dim=1)

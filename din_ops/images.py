"""Image files <-> tensors for din-train and din-stylize (Pillow), with clear errors."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
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
    """Whether ``path`` ends in one of the extensions that din-train and din-stylize read from
    folders (:data:`IMAGE_EXTENSIONS`, any case).

    Args:
        path: a file name or path.

    Returns:
        True for an image file name.
    """
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)


def image_format(path: PathLike) -> Optional[str]:
    """The Pillow format of ``path``'s suffix ("PNG" for ``x.png``), or None for a suffix Pillow
    does not know (``run.v2``, no suffix)."""
    return _pil().registered_extensions().get(Path(path).suffix.lower())


def check_writable_format(path: PathLike) -> None:
    """Raises ImageError unless Pillow can write an RGB image in the format of ``path``'s suffix
    (it knows some formats, such as .psd, only for reading)."""
    Image = _pil()
    fmt = image_format(path)
    try:
        if fmt is None:
            raise KeyError(fmt)
        Image.new("RGB", (2, 2)).save(io.BytesIO(), format=fmt)
    except Exception as error:  # unknown format, no save handler, or no RGB support
        raise ImageError(f"cannot write {Path(path).suffix!r} images to {os.fspath(path)!r} (Pillow has no "
                         f"RGB writer for it: {type(error).__name__}); use .png, .jpg, .tif or .webp") from error


def check_folder(path: PathLike, what: str) -> None:
    """Raises ImageError when ``path``, or a folder above it, is an existing file: ``path`` could
    not be created (or used) as a folder.

    Args:
        path: a folder that exists or is to be created.
        what: how the error names the path, e.g. "--out".
    """
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if q == p and not q.is_dir():
                raise ImageError(f"{what} {os.fspath(path)!r} is a file, not a folder")
            if not q.is_dir():
                raise ImageError(f"{what} {os.fspath(path)!r} cannot be created: {os.fspath(q)!r} is a file, "
                                 f"not a folder")
            return


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


# EXIF orientations (tag 0x0112) that turn the stored image by 90 or 270 degrees.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def load_image(path: PathLike, mode: str = "RGB", max_size: Optional[int] = None) -> Tensor:
    """An image file as a float tensor in [0, 1]: (1, 3, H, W) for mode "RGB", (1, 1, H, W) for "L".

    The image is turned upright as its EXIF orientation says. 16-bit and 32-bit integer greyscale
    images (Pillow modes I;16, I) are read as 16-bit values (0..65535 -> [0, 1]), floating-point
    ones (mode F) as values in [0, 1] (clamped).

    Args:
        path: the image file.
        mode: "RGB" or "L" (greyscale).
        max_size: if given (> 0), scales the image down (never up) so that its longer side is at
            most that many pixels.

    Returns:
        The image, float32.
    """
    if max_size is not None and max_size <= 0:
        raise ValueError(f"load_image: max_size must be a positive number of pixels, got {max_size}")
    Image = _pil()
    from PIL import ImageOps

    p = Path(path)
    if not p.is_file():
        raise ImageError(f"image {os.fspath(path)!r} does not exist or is not a file")
    try:
        with Image.open(p) as img:
            img = ImageOps.exif_transpose(img)
            # convert() saturates 16-bit and float greyscale: scale those as floats instead.
            scale = {"I": 65535.0, "F": 1.0}.get(img.mode, 65535.0 if img.mode.startswith("I;16") else None)
            scale = scale if mode in ("RGB", "L") else None
            img = img.convert("F" if scale is not None else mode)
            if max_size is not None and max(img.size) > max_size:
                factor = max_size / max(img.size)
                img = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))),
                                 Image.Resampling.BICUBIC)
            if scale is not None:
                grey = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).div_(scale).clamp_(0, 1)
                return grey.expand(1, len(mode), img.height, img.width).contiguous()
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            t = data.view(img.height, img.width, len(mode)).permute(2, 0, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot read image {os.fspath(path)!r}: {error}") from error
    return t.unsqueeze(0).float().div_(255)


def image_size(path: PathLike) -> tuple[int, int]:
    """The (height, width) of an image file as :func:`load_image` reads it (upright as its EXIF
    orientation says), without decoding the pixels."""
    Image = _pil()
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot read image {os.fspath(path)!r}: {error}") from error
    return height, width


def save_image(x: Tensor, path: PathLike) -> None:
    """Writes an image tensor (3, H, W) or (1, 3, H, W) in [0, 1] (clamped) to ``path`` (format from
    the extension; PNG, as ``path`` with the suffix .png, if Pillow knows no format for it)."""
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
    try:
        img.save(path if image_format(path) is not None else path.with_suffix(".png"))
    except (OSError, ValueError, KeyError) as error:
        raise ImageError(f"cannot write image {os.fspath(path)!r}: {error}") from error


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

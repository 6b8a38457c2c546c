"""Opening one image file: its upright size (for bucketing) and its 8-bit RGB pixels (for
training) come from the same functions, so an image is never bucketed one way and trained
another.

- Orientation: the EXIF tag, wherever the file keeps it (a PNG may put its eXIf chunk after
  the image data; finding it then means reading the file through). `orientation()` is used by
  both `read_image_size` and `open_upright`.
- Pixel modes: every mode Pillow opens becomes 8-bit RGB (RGBA when it has alpha) with its
  values scaled, never clipped: 16-bit values are divided by 257 (65535 -> 255), 32-bit
  integer images are read as 16-bit (refused when a value falls outside 0..65535), float
  images are read as 0..1 (refused otherwise). A mode Pillow cannot convert is refused by name.
- Pillow's decompression-bomb guard: an image over its pixel limit is named with its size and
  the limit; the environment variable SDXL_TUI_MAX_IMAGE_PIXELS raises the limit.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from engine.data.buckets import Size
from engine.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# formats sd-scripts does not train on, named when found beside a caption
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".jxl", ".svg", ".ico", ".psd")
MAX_PIXELS_ENV = "SDXL_TUI_MAX_IMAGE_PIXELS"
PILLOW_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # Pillow's own default for Image.MAX_IMAGE_PIXELS
ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WITH_ALPHA = ("RGBA", "LA", "PA", "La", "RGBa")


class BadImage(Exception):
    """An image file that cannot be read (broken, unsupported, or over Pillow's decompression-bomb limit); the
    message names the file."""
    pass


def _transpose_method(orientation: int):
    from PIL import Image

    return {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}.get(orientation)


def orientation(im) -> int:
    """EXIF orientation 1..8 of an open image (1 when absent). Pillow's `getexif()` reads a PNG
    through when its eXIf chunk is not before the image data."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def upright(size: Size, orient: int) -> Size:
    """`size` (width, height) as the image is shown: swapped for EXIF orientations 5-8 (rotated by 90°)."""
    return (size[1], size[0]) if orient in (5, 6, 7, 8) else size


def _pixel_limit() -> None:
    """Set Pillow's guard from SDXL_TUI_MAX_IMAGE_PIXELS, or back to Pillow's default when it is
    unset (Pillow reads the limit from a module attribute at each open, so every open sets it)."""
    from PIL import Image

    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    try:
        Image.MAX_IMAGE_PIXELS = int(raw) if raw else PILLOW_MAX_PIXELS
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV}={raw!r} is not a whole number of pixels",
                        hint=f"e.g. {MAX_PIXELS_ENV}=300000000") from None


def bomb_message(path: Path, exc: Exception) -> str:
    """Pillow's 'decompression bomb' refusal, said as the image's size and the limit."""
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    size, limit = (numbers + [0, 0])[:2]
    return (f"{path}: image has {size:,} pixels, over Pillow's limit of {limit:,} (its guard against "
            f"decompression bombs); if the file is genuine, raise the limit with the environment variable "
            f"{MAX_PIXELS_ENV}={max(size, limit) + 1} or make the image smaller")


def read_image_size(path: Path) -> Size:
    """Upright (width, height) after a cheap integrity check; BadImage if unusable."""
    from PIL import Image, UnidentifiedImageError

    _pixel_limit()
    try:
        with Image.open(path) as im:
            im.verify()  # must come first on a fresh handle
        with Image.open(path) as im:
            size, fmt, orient = im.size, im.format, orientation(im)
    except Image.DecompressionBombError as exc:
        raise BadImage(bomb_message(path, exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None
    if fmt == "JPEG" and not _jpeg_has_end_marker(path):
        raise BadImage(f"{path}: JPEG is truncated (no end-of-image marker)")
    if size[0] < 1 or size[1] < 1:
        raise BadImage(f"{path}: image has no pixels ({size[0]}x{size[1]})")
    return upright(size, orient)


def _jpeg_has_end_marker(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        fh.seek(max(0, end - 4096))
        return b"\xff\xd9" in fh.read()


def open_upright(path: Path):
    """The image as an 8-bit PIL RGB (or RGBA when it has alpha) image, EXIF orientation
    applied; DataError naming the file if it is unreadable or its pixel mode cannot be converted."""
    from PIL import Image

    _pixel_limit()
    try:
        with Image.open(path) as im:
            orient = orientation(im)
            im.load()
            image = to_rgb8(im, path)
    except Image.DecompressionBombError as exc:
        raise DataError(bomb_message(Path(path), exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})",
                        hint="fix or remove it, or set skip_bad_images = true") from None
    method = _transpose_method(orient)
    return image.transpose(method) if method is not None else image


def to_rgb8(im, path: Path | str = "image"):
    """Any Pillow mode as 8-bit RGB, or RGBA when it carries alpha (or palette transparency)."""
    from PIL import Image

    mode = im.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        gray = _gray_to_8bit(np.asarray(im), mode, path)
        return Image.fromarray(gray, "L").convert("RGB")
    has_alpha = mode in _WITH_ALPHA or "transparency" in im.info
    target = "RGBA" if has_alpha else "RGB"
    try:
        if mode == "La":  # premultiplied grey+alpha: Pillow converts it only by way of LA
            im = im.convert("LA")
        return im if im.mode == target else im.convert(target)
    except ValueError:
        raise DataError(f"{path}: pixel mode {mode!r} cannot be converted to RGB",
                        hint="re-save the image as 8-bit RGB (PNG or JPEG)") from None


def _gray_to_8bit(values: np.ndarray, mode: str, path: Path | str) -> np.ndarray:
    """One-channel high-bit-depth values -> uint8, scaled by the mode's range."""
    values = values.astype(np.float64)
    if mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DataError(f"{path}: 32-bit float image (mode 'F') with values outside 0..1 "
                            f"({values.min():g}..{values.max():g}); its brightness scale is unknown",
                            hint="re-save the image as 8- or 16-bit")
        return np.rint(values * 255).astype(np.uint8)
    if values.min() < 0 or values.max() > 65535:
        raise DataError(f"{path}: 32-bit integer image (mode {mode!r}) with values outside 0..65535 "
                        f"({values.min():g}..{values.max():g}); its brightness scale is unknown",
                        hint="re-save the image as 8- or 16-bit")
    return np.rint(values / 257.0).astype(np.uint8)

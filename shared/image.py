"""Turning untrusted bytes into a BGR image, or a clear ImageError.

Pillow reads the header first, so a decompression bomb is refused before any pixel is decoded,
and a truncated file fails instead of decoding into grey. Pillow is a dependency for this.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from revisit.shared.errors import ImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"})
MAX_PIXELS = 40_000_000  # e.g. 8000 x 5000; a 20000 x 20000 PNG bomb is refused from its header
MAX_BYTES = 50 * 1024 * 1024


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP/TIFF bytes to an HxWx3 uint8 BGR array, EXIF orientation applied.

    The format is taken from the content, never from a file name or a declared content type.
    """
    if not data:
        raise ImageError("empty file: 0 bytes")
    if len(data) > max_bytes:
        raise ImageError(f"file too large: {len(data)} bytes (limit {max_bytes})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"not a supported image ({type(exc).__name__}): {exc}") from exc
    except Exception as exc:  # Pillow plugins raise assorted errors on malformed headers
        raise ImageError(f"not a supported image: {exc}") from exc
    if img.format not in ALLOWED_FORMATS:
        raise ImageError(f"unsupported image format {img.format}; use JPEG, PNG or WebP")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"image too large: {width}x{height} pixels (limit {max_pixels:,} pixels)")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        rgb = img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"corrupt or truncated {img.format} image: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def read_image(path: str | Path, **limits: int) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data, **limits)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from exc

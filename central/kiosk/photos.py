"""Event photos: validated uploads, the files on disk, thumbnails, and background face extraction.

An upload is accepted only when its bytes decode completely as an image (`shared.image.decode_image`: the
format is sniffed from the content, never taken from the name or the declared content type; headers are read
before pixels, so a decompression bomb is refused without decoding; a truncated file fails). A refused file
writes nothing. Accepted originals are stored under UUID names, `<root>/<event hex>/<photo hex>.<ext>`, with a
JPEG thumbnail in `<root>/<event hex>/thumbs/`; the name a user gave is kept, sanitised, for display only.
Faces are extracted in the background (`revisit.central.kiosk.worker.FaceWorker`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from revisit.shared.errors import ImageError, RevisitError
from revisit.shared.image import decode_image

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 30 * 1024 * 1024
MAX_PIXELS = 40_000_000
THUMB_SIDE = 480
PHOTO_MAX_SIDE = 1280  # event photos are detected at up to this size: small faces in group shots survive
_MAGIC = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
)
_STORED = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp|bmp|tif)$")


class UploadError(RevisitError):
    """A file that is refused: what is wrong with it, in words for the person uploading."""


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes
    image: np.ndarray  # BGR, EXIF orientation applied; a large JPEG's at reduced size (enough for the thumbnail)
    ext: str
    size: tuple[int, int] | None = None  # (width, height) of the original, oriented, when `image` is reduced

    @property
    def width(self) -> int:
        return self.size[0] if self.size else int(self.image.shape[1])

    @property
    def height(self) -> int:
        return self.size[1] if self.size else int(self.image.shape[0])


@dataclass(frozen=True)
class StoredNames:
    original: str
    thumb: str


def sanitize_filename(name: str | None, limit: int = 120) -> str:
    """A display name from an uploaded file name: the last path component, no control characters, no
    leading dots, at most `limit` characters. Never used to build a path."""
    base = re.split(r"[\\/]", unicodedata.normalize("NFC", name or ""))[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip().lstrip(".").strip()
    if len(base) > limit:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: limit - len(ext) - 1] + dot + ext) if dot and len(ext) <= 8 else base[:limit]
    return base or "photo"


def sniff_ext(data: bytes) -> str:
    """The file extension of image bytes, from their content."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    raise UploadError("not an image, or not a supported format: use JPEG, PNG or WebP")


def validate_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> ValidatedImage:
    """Decode the bytes completely or raise UploadError with the reason."""
    if len(data) > max_bytes:
        raise UploadError(f"file too large: {len(data) / 1e6:.1f} MB (limit {max_bytes / 1e6:.0f} MB)")
    if not data:
        raise UploadError("empty file: 0 bytes")
    ext = sniff_ext(data)  # the content says what it is; the name and declared type are never trusted
    if ext == "jpg":
        reduced = _validate_jpeg(data, max_pixels, 2 * THUMB_SIDE)
        if reduced is not None:
            return reduced
    try:
        image = decode_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    except ImageError as exc:
        raise UploadError(str(exc)) from None
    return ValidatedImage(data, image, ext)


def _validate_jpeg(data: bytes, max_pixels: int, side: int) -> ValidatedImage | None:
    """A large JPEG decoded completely but at a reduced scale (Pillow's `draft`: the decoder still reads every
    byte, so a truncated or corrupt file fails as in `decode_image`, but skips most of the pixel work); None when
    it is small or not a plain JPEG (then `decode_image` does it all)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        if img.format != "JPEG" or img.width * img.height > max_pixels or max(img.size) < 4 * side:
            return None
        turned = (img.getexif().get(0x0112) or 1) in (5, 6, 7, 8)
        width, height = (img.height, img.width) if turned else img.size
        img.draft("RGB", (side, side))
        img.load()
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise UploadError(f"corrupt or truncated JPEG image: {exc}") from None
    except Exception:  # anything odd: the full decode decides (and explains)
        return None
    return ValidatedImage(data, np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]), "jpg", (width, height))


class PhotoFiles:
    """The originals and thumbnails of every event under `root`."""

    def __init__(
        self,
        root: str | Path,
        *,
        max_bytes: int = MAX_UPLOAD_BYTES,
        max_pixels: int = MAX_PIXELS,
        thumb_side: int = THUMB_SIDE,
    ):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.thumb_side = thumb_side

    def validate(self, data: bytes) -> ValidatedImage:
        return validate_upload(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    def event_dir(self, event_id: uuid.UUID) -> Path:
        return self.root / event_id.hex

    def save(self, event_id: uuid.UUID, photo_id: uuid.UUID, image: ValidatedImage) -> StoredNames:
        """Write the original and its thumbnail (each to a temporary name, then renamed); all or nothing."""
        names = StoredNames(f"{photo_id.hex}.{image.ext}", f"{photo_id.hex}.jpg")
        thumbs = self.event_dir(event_id) / "thumbs"
        thumbs.mkdir(parents=True, exist_ok=True)
        try:
            _write(self.original(event_id, names.original), image.data)
            _write(self.thumb(event_id, names.thumb), thumbnail(image.image, self.thumb_side))
        except BaseException:
            self.delete_photo(event_id, names.original, names.thumb)
            raise
        return names

    def original(self, event_id: uuid.UUID, name: str) -> Path:
        return self.event_dir(event_id) / _checked(name)

    def thumb(self, event_id: uuid.UUID, name: str) -> Path:
        return self.event_dir(event_id) / "thumbs" / _checked(name)

    def delete_photo(self, event_id: uuid.UUID, original: str, thumb: str) -> None:
        for path in (self.original(event_id, original), self.thumb(event_id, thumb)):
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".tmp").unlink(missing_ok=True)

    def delete_event(self, event_id: uuid.UUID) -> None:
        shutil.rmtree(self.event_dir(event_id), ignore_errors=True)


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE, quality: int = 82) -> bytes:
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UploadError("could not make a thumbnail")
    return bytes(buf)


def _checked(name: str) -> str:
    if not _STORED.match(name):
        raise UploadError(f"not a stored photo name: {name[:80]!r}")
    return name


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

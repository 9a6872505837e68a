"""Bad input gets a clear ImageError; good input in any common form decodes to HxWx3 BGR."""

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from revisit.shared.errors import ImageError
from revisit.shared.image import decode_image, read_image


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(h=40, w=60):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = 200  # red in RGB
    return img


def test_jpeg_decodes_to_bgr():
    out = decode_image(_encode(_rgb(), "JPEG", quality=95))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert out[..., 2].mean() > 150 and out[..., 0].mean() < 50  # red lands in the BGR red channel


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_png_modes(mode):
    img = Image.fromarray(_rgb()).convert("RGBA" if mode in ("LA", "RGBA") else "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = decode_image(buf.getvalue())
    assert out.shape == (40, 60, 3)


def test_webp_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(_rgb(), "WEBP"))
    assert read_image(path).shape == (40, 60, 3)


def test_exif_orientation_applied():
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.fromarray(_rgb(40, 60)).save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).shape == (60, 40, 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text, not an image", "not a supported image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "not a supported image"),
        (b"GIF89a" + b"\x00" * 40, "not a supported image"),
    ],
)
def test_rejects_non_images(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_rejects_truncated_jpeg():
    data = _encode(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8), "JPEG")
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def test_rejects_truncated_png():
    data = _encode(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8), "PNG")
    with pytest.raises(ImageError):
        decode_image(data[: len(data) // 2])


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height (grey, one compressed run of zeros)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    raw = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # only the first rows: decoding would need all
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


def test_rejects_decompression_bomb_from_header():
    with pytest.raises(ImageError, match="too large|DecompressionBomb"):
        decode_image(_png_bomb(20000, 20000))


def test_rejects_oversized_file():
    with pytest.raises(ImageError, match="too large"):
        decode_image(b"\xff\xd8" + b"\x00" * 100, max_bytes=50)


def test_read_image_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "nope.jpg")


def test_huge_but_allowed_image_decodes():
    big = np.zeros((3000, 4000, 3), np.uint8)
    ok, enc = cv2.imencode(".jpg", big)
    assert ok
    assert decode_image(enc.tobytes()).shape == (3000, 4000, 3)

"""CCTV-like degradations of labelled portraits, for evaluations (`eval recurrence`, `eval verify --degrade`).

A variant is drawn from a seeded generator, so the same (photo, level, seed, variant) always gives the same
frame: a small rotation, the face resized to a drawn width (from its box in the clean photo), Gaussian blur,
dim light and sensor noise, the result pasted into a 320x240 frame of dull background (a part of a camera's view:
the face size in pixels is what matters, and a small frame keeps evaluations affordable), and the whole frame
JPEG-compressed at a low quality. Levels:

- ``none``: the photo itself (no frame);
- ``cctv``: face 32-64 px wide, blur sigma 0.4-1.0, brightness x0.45-0.8, noise sigma 2-6, JPEG q30-60,
  rotation within +-8 degrees;
- ``hard``: the same with the face 20-32 px wide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

FRAME_SIZE = (320, 240)  # width, height


@dataclass(frozen=True, slots=True)
class Level:
    face_px: tuple[float, float]
    blur: tuple[float, float] = (0.4, 1.0)
    light: tuple[float, float] = (0.45, 0.8)
    noise: tuple[float, float] = (2.0, 6.0)
    jpeg: tuple[int, int] = (30, 60)
    rotate_deg: float = 8.0


LEVELS: dict[str, Level | None] = {"none": None, "cctv": Level((32, 64)), "hard": Level((20, 32))}


@dataclass(frozen=True, slots=True)
class Variant:
    frame: np.ndarray  # BGR uint8
    face_box: np.ndarray  # where the face was pasted (x1, y1, x2, y2), frame pixels
    face_px: float  # the drawn face width (0 for "none")


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded by a stable hash of `key` (not Python's salted hash)."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def degrade(image: np.ndarray, face_box: np.ndarray, level: str, rng: np.random.Generator) -> Variant:
    """One degraded variant of `image` whose face is at `face_box` (x1, y1, x2, y2 in image pixels)."""
    spec = LEVELS[level]
    box = np.asarray(face_box, dtype=np.float64).reshape(4)
    if spec is None:
        return Variant(image, box.astype(np.float32), float(box[2] - box[0]))
    h, w = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    angle = float(rng.uniform(-spec.rotate_deg, spec.rotate_deg))
    rot = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    img = cv2.warpAffine(image, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    face_px = float(rng.uniform(*spec.face_px))
    scale = face_px / max(box[2] - box[0], 1.0)
    size = (max(4, round(w * scale)), max(4, round(h * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    sigma = float(rng.uniform(*spec.blur))
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    fw, fh = FRAME_SIZE
    frame = _background(rng, fw, fh)
    x0 = int(rng.integers(0, max(1, fw - size[0])))
    y0 = int(rng.integers(0, max(1, fh - size[1])))
    pw, ph = min(size[0], fw - x0), min(size[1], fh - y0)
    frame[y0 : y0 + ph, x0 : x0 + pw] = img[:ph, :pw]
    frame *= float(rng.uniform(*spec.light))
    frame += rng.standard_normal(frame.shape, dtype=np.float32) * float(rng.uniform(*spec.noise))
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    quality = int(rng.integers(spec.jpeg[0], spec.jpeg[1] + 1))
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    half = face_px / 2
    ncx, ncy = x0 + cx * scale, y0 + cy * scale
    pasted = np.array([ncx - half, ncy - half * 1.2, ncx + half, ncy + half * 1.2], dtype=np.float32)
    return Variant(frame, pasted, face_px)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A dull, smooth background (a lit wall or floor): a colour gradient, float32."""
    a, b = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    row = a[None, None, :] * (1 - t) + b[None, None, :] * t
    return np.repeat(row, height, axis=0).astype(np.float32)


def nearest_face(faces: list, box: np.ndarray) -> object | None:
    """The detected face that overlaps `box` most (IoU > 0.1), or None: the pasted face, not a stray one."""
    best, best_iou = None, 0.1
    for face in faces:
        fb = face.box
        iw = max(0.0, min(fb[2], box[2]) - max(fb[0], box[0]))
        ih = max(0.0, min(fb[3], box[3]) - max(fb[1], box[1]))
        inter = iw * ih
        union = (fb[2] - fb[0]) * (fb[3] - fb[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
        iou = inter / union if union > 0 else 0.0
        if iou > best_iou:
            best, best_iou = face, iou
    return best

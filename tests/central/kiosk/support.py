"""Helpers of the event kiosk tests: an `Events` on a temporary directory, the central app with the kiosk built on
the session's real face engine, real photos from ../shared, bad files, and a y4m video for Chromium's fake webcam."""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from revisit.central.kiosk.config import KioskConfig
from revisit.central.kiosk.events import Events
from revisit.central.kiosk.photos import PhotoFiles
from revisit.central.kiosk.vectors import EventVectors
from revisit.central.store import Store
from revisit.shared.face import Face, Quality

REC = "test_rec@000000000000"


def make_events(tmp_path: Path, **files: int) -> Events:
    store = Store(f"sqlite:///{tmp_path / 'kiosk.db'}")
    events = Events(store, PhotoFiles(tmp_path / "photos", **files), EventVectors.memory())
    events.create_tables()
    return events


def close_events(events: Events) -> None:
    events.vectors.close()
    events.store.dispose()


_made = iter(range(1, 1 << 30))


def png(width: int = 64, height: int = 48, value: int = 120) -> bytes:
    """A flat grey PNG; each call's differs in one pixel (an event refuses the same file twice)."""
    image = np.full((height, width, 3), value, np.uint8)
    image[0, 0] = np.frombuffer(next(_made).to_bytes(3, "big"), np.uint8)
    return bytes(cv2.imencode(".png", image)[1])


def jpeg(width: int = 64, height: int = 48, value: int = 120) -> bytes:
    return bytes(cv2.imencode(".jpg", np.full((height, width, 3), value, np.uint8))[1])


def png_bomb(side: int = 20000) -> bytes:
    """A complete, valid 1-bit grey PNG of side x side pixels: ~50 MB of zeros deflated to ~50 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_files() -> dict[str, tuple[str, bytes, str]]:
    """case -> (file name, bytes, declared content type); each must be refused."""
    real = bytes(cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8))[1])
    return {
        "not an image": ("notes.txt", b"just some text, not a picture\n" * 10, "text/plain"),
        "lying content type": ("holiday.jpg", b"<html><script>alert(1)</script></html>", "image/jpeg"),
        "truncated jpeg": ("cut.jpg", real[: len(real) // 2], "image/jpeg"),
        "zero bytes": ("empty.jpg", b"", "image/jpeg"),
        "decompression bomb": ("bomb.png", png_bomb(), "image/png"),
        "path traversal, not an image": ("../../etc/passwd", b"root:x:0:0:root:/root:/bin/bash\n", "image/jpeg"),
    }


def fake_face(vector: np.ndarray, box: tuple[float, float, float, float] = (10, 10, 50, 60)) -> Face:
    vec = np.asarray(vector, np.float32)
    q = Quality(detector=0.9, size=0.8, sharpness=0.7, pose=0.9, score=0.8)
    x1, y1, x2, y2 = box
    marks = [[x1 + 10, y1 + 15], [x2 - 10, y1 + 15], [(x1 + x2) / 2, y1 + 25], [x1 + 12, y2 - 10], [x2 - 12, y2 - 10]]
    return Face(
        box=np.array(box),
        score=0.9,
        landmarks=np.array(marks),
        quality=q,
        embedding=vec / np.linalg.norm(vec),
        recognizer_id=REC,
    )


def files_under(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under root (to see what a call wrote)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# --- real photos -------------------------------------------------------------------------------------------


@dataclass
class People:
    """A person with a selfie and photos to find, and other people's photos (distractors)."""

    name: str
    selfie: Path
    own: list[Path]
    others: list[Path]
    group: Path | None = None


def dev_people(facedata: Path, distractors: int = 6) -> People:
    """Jennifer Aniston: her first portrait is the selfie; three more of hers and one group photo with her are to
    be found among `distractors` portraits of people with no group photo."""
    from revisit.shared.dataset import load_labels

    records = load_labels(facedata)
    name = "Jennifer_Aniston"
    mine = sorted((r for r in records if r.kind == "photo" and r.identity == name), key=lambda r: r.relpath)
    group = next(r for r in records if r.kind == "group" and name in r.identities)
    grouped = {n for r in records if r.kind == "group" for n in r.identities}
    others = sorted((r for r in records if r.kind == "photo" and r.identity not in grouped), key=lambda r: r.relpath)
    step = max(1, len(others) // distractors)
    return People(
        name, mine[0].path, [r.path for r in mine[1:4]], [r.path for r in others[::step][:distractors]], group.path
    )


def y4m(image: np.ndarray, path: Path, width: int = 640, height: int = 480, frames: int = 5) -> Path:
    """Write a YUV4MPEG2 (4:2:0) video of `frames` copies of the image, letterboxed on grey: Chromium's fake
    webcam plays it in a loop."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h) * 0.9
    small = cv2.resize(image, (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((height, width, 3), 110, np.uint8)
    y0, x0 = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    i420 = cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420).tobytes()  # Y plane, then U, then V
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n" + i420)
    return path


# --- the app -----------------------------------------------------------------------------------------------


@dataclass
class KioskApp:
    app: object
    service: object
    kiosk: object


@contextmanager
def kiosk_app(tmp_path: Path, engine, **kiosk_settings) -> Iterator[KioskApp]:
    """The central app (`web.create_app`) on a fresh service, with the kiosk built on `engine` (no model reload)."""
    from revisit.central.kiosk.service import Kiosk
    from revisit.central.web import create_app
    from tests.central.webapp import open_service, web_config

    service = open_service(web_config(tmp_path))
    kiosk = None
    try:
        app = create_app(service)
        kiosk = Kiosk.from_service(service, engine, KioskConfig(**kiosk_settings)).start()
        app.state.kiosk = kiosk
        yield KioskApp(app, service, kiosk)
    finally:
        if kiosk is not None:
            kiosk.close()
        service.stop()


def upload_and_wait(kiosk, event_id: uuid.UUID, paths: list[Path], timeout: float = 60) -> dict[Path, uuid.UUID]:
    """Add photos through the kiosk (as an upload does) and wait for the face worker; path -> photo id."""
    ids = {}
    for p in paths:
        result = kiosk.upload(event_id, p.name, p.read_bytes())
        assert result.photo is not None, result.error
        ids[p] = result.photo.id
    assert kiosk.worker.wait_idle(timeout), "face extraction did not finish"
    return ids

"""Background face extraction of uploaded event photos.

One `FaceWorker` thread fed by a queue detects, assesses and embeds every face of each photo, so an upload returns
as soon as its file is stored (`revisit.central.kiosk.photos`); each photo's status goes processing -> done (with its
face count) or failed (with the reason).
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from revisit.central.kiosk.photos import PHOTO_MAX_SIDE
from revisit.shared.detect import Detector, create_detector
from revisit.shared.errors import RevisitError
from revisit.shared.face import Face
from revisit.shared.image import decode_image

if TYPE_CHECKING:
    from revisit.central.kiosk.events import Events
    from revisit.shared.engine import FaceEngine

log = logging.getLogger(__name__)


def photo_detector(engine: FaceEngine, max_side: int = PHOTO_MAX_SIDE) -> Detector:
    """A detector for event photos sharing the engine's model session, at a larger input size."""
    det = engine.detector
    return create_detector(det.session, det.spec, det.settings.model_copy(update={"max_side": max_side}))


class FaceWorker:
    """One thread that detects, assesses and embeds the faces of uploaded photos, in upload order."""

    def __init__(self, events: Events, engine: FaceEngine, *, max_side: int = PHOTO_MAX_SIDE):
        self.events = events
        self.engine = engine
        self.detector = photo_detector(engine, max_side)
        self.max_side = max_side
        self.queue: queue.Queue[tuple[uuid.UUID, uuid.UUID] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, resume: bool = True) -> FaceWorker:
        """Start the thread; with `resume`, photos left processing (a restart) are queued again."""
        with self._lock:
            if self._thread is not None:
                return self
            if resume:
                for item in self.events.pending():
                    self.queue.put(item)
            self._thread = threading.Thread(target=self._run, name="kiosk-faces", daemon=True)
            self._thread.start()
        return self

    def submit(self, event_id: uuid.UUID, photo_id: uuid.UUID) -> None:
        self.queue.put((event_id, photo_id))

    def backlog(self) -> int:
        return self.queue.qsize()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted photo is processed; False on timeout."""
        done = threading.Event()

        def join() -> None:
            self.queue.join()
            done.set()

        threading.Thread(target=join, daemon=True).start()
        return done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self.queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        """Photos in upload order; the next one waiting is read and decoded (one helper thread) while the
        current one is in the models, so decoding and inference overlap on two cores."""
        with ThreadPoolExecutor(1, thread_name_prefix="kiosk-decode") as pool:
            ahead: tuple[tuple[uuid.UUID, uuid.UUID], Future] | None = None
            stop = False
            while not stop:
                if ahead is None:
                    item = self.queue.get()
                    if item is None:
                        self.queue.task_done()
                        return
                    ahead = (item, pool.submit(self.prepare, *item))
                (event_id, photo_id), prepared = ahead
                ahead = None
                try:
                    waiting = self.queue.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if waiting is None:
                        stop = True  # after this photo
                    else:
                        ahead = (waiting, pool.submit(self.prepare, *waiting))
                try:
                    self.finish(event_id, photo_id, prepared.result())
                except Exception:  # never let one photo stop the worker
                    log.exception("face extraction failed for photo %s", photo_id)
                finally:
                    self.queue.task_done()
            self.queue.task_done()  # the stop marker

    def process(self, event_id: uuid.UUID, photo_id: uuid.UUID) -> None:
        """Extract one photo's faces now (in the calling thread)."""
        self.finish(event_id, photo_id, self.prepare(event_id, photo_id))

    def prepare(self, event_id: uuid.UUID, photo_id: uuid.UUID) -> tuple[np.ndarray, int] | str | None:
        """The photo decoded for extraction (`load`); None when there is nothing to do; the reason it failed."""
        photo = self.events.photo(event_id, photo_id)
        if photo is None or photo.status != "processing":
            return None
        try:
            return self.load(self.events.files.original(event_id, photo.stored_name).read_bytes())
        except FileNotFoundError:
            return "the stored file is missing"
        except RevisitError as exc:
            return str(exc)
        except Exception as exc:
            log.exception("decoding photo %s failed", photo_id)
            return f"face extraction failed: {type(exc).__name__}"

    def finish(self, event_id: uuid.UUID, photo_id: uuid.UUID, prepared: tuple[np.ndarray, int] | str | None) -> None:
        if prepared is None:
            return
        if isinstance(prepared, str):
            self.events.fail_photo(photo_id, prepared)
            return
        image, factor = prepared
        try:
            faces = self.analyze(image)
            for face in faces:  # back to the original's pixels
                face.box = np.asarray(face.box, np.float32) * factor
                face.landmarks = np.asarray(face.landmarks, np.float32) * factor
        except RevisitError as exc:
            self.events.fail_photo(photo_id, str(exc))
            return
        except Exception as exc:
            log.exception("face extraction failed for photo %s", photo_id)
            self.events.fail_photo(photo_id, f"face extraction failed: {type(exc).__name__}")
            return
        self.events.record_faces(photo_id, faces, self.engine.recognizer_id)

    def load(self, data: bytes) -> tuple[np.ndarray, int]:
        """The stored photo (validated at upload) decoded for extraction, and the factor back to its pixels.

        A large JPEG is decoded at 1/2 or 1/4 size by the JPEG decoder itself (`IMREAD_REDUCED_COLOR_N`: it
        skips most of the work), as long as the result keeps at least twice the detector's input side: the
        detector sees the same pixels it would have seen, and faces keep at least twice their detected size for
        alignment (`bench/kiosk.py --extraction` has the figures). Other photos are decoded whole, by OpenCV
        (EXIF orientation applied), falling back to `decode_image` when OpenCV cannot read them."""
        files = self.events.files
        # a JPEG that ends as one should (OpenCV would decode a truncated one silently: decode_image refuses it)
        if data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00\r\n")[-2:] == b"\xff\xd9":
            try:
                with Image.open(io.BytesIO(data)) as img:
                    width, height = img.size
                    turned = (img.getexif().get(0x0112) or 1) in (5, 6, 7, 8)
            except Exception:
                width = height = 0
                turned = False
            if turned:
                width, height = height, width
            factor = next((f for f in (4, 2) if max(width, height) // f >= 2 * self.max_side), 1)
            flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}[factor]
            if width and width * height <= files.max_pixels:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
                # the shape must be the original's, reduced (a mismatch: let decode_image do it)
                if (
                    image is not None
                    and abs(image.shape[1] - -(-width // factor)) <= 1
                    and abs(image.shape[0] - -(-height // factor)) <= 1
                ):
                    return image, factor
        return decode_image(data, max_pixels=files.max_pixels, max_bytes=files.max_bytes), 1

    def analyze(self, image: np.ndarray) -> list[Face]:
        return self.engine.complete(image, self.detector.detect(image))

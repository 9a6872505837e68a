"""Background face extraction: per-photo status, resumed after a restart, large JPEGs decoded reduced."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from revisit.central.kiosk.worker import FaceWorker
from tests.central.kiosk.support import close_events, jpeg, make_events, png


@pytest.mark.models
@pytest.mark.facedata
def test_worker_extracts_faces_in_the_background(tmp_path, engine, facedata):
    from tests.central.kiosk.support import dev_people

    events = make_events(tmp_path)
    people = dev_people(facedata)
    worker = FaceWorker(events, engine)
    try:
        event = events.create_event("e")
        good = events.add_photo(event.id, people.own[0].name, people.own[0].read_bytes()).photo
        group = events.add_photo(event.id, people.group.name, people.group.read_bytes()).photo
        blank = events.add_photo(event.id, "blank.png", png(200, 200)).photo
        lost = events.add_photo(event.id, "lost.png", png(200, 200)).photo
        events.files.original(event.id, lost.stored_name).unlink()  # the file vanished before processing
        assert {p["status"] for p in events.photo_status(event.id)["photos"]} == {"processing"}
        worker.start()  # resumes the four photos left processing
        assert worker.wait_idle(60)
        rows = {p["id"]: p for p in events.photo_status(event.id)["photos"]}
        assert rows[str(good.id)]["status"] == "done" and rows[str(good.id)]["faces"] >= 1
        assert rows[str(group.id)]["status"] == "done" and rows[str(group.id)]["faces"] >= 5  # six friends
        assert rows[str(blank.id)]["status"] == "done" and rows[str(blank.id)]["faces"] == 0
        assert rows[str(lost.id)]["status"] == "failed" and "missing" in rows[str(lost.id)]["reason"]
        assert (
            events.vectors.count(event.id, engine.recognizer_id)
            == rows[str(good.id)]["faces"] + rows[str(group.id)]["faces"]
        )
    finally:
        worker.stop()
        close_events(events)


@pytest.mark.models
def test_worker_marks_a_corrupted_file_failed(tmp_path, engine):
    events = make_events(tmp_path)
    worker = FaceWorker(events, engine).start()
    try:
        event = events.create_event("e")
        photo = events.add_photo(event.id, "a.jpg", jpeg(200, 200)).photo
        path = events.files.original(event.id, photo.stored_name)
        path.write_bytes(path.read_bytes()[:100])  # damaged on disk after the upload
        worker.submit(event.id, photo.id)
        assert worker.wait_idle(30)
        row = events.photo_status(event.id)["photos"][0]
        assert row["status"] == "failed" and "truncated" in row["reason"].lower()
    finally:
        worker.stop()
        close_events(events)


@pytest.mark.models
@pytest.mark.facedata
def test_a_large_jpeg_is_decoded_reduced_and_its_faces_kept_in_original_pixels(tmp_path, engine, facedata):
    """A 24 MP photo is decoded at half size (the detector still gets twice its input side), yet the faces are
    found where they are in the original, and embed like the full-size decode's."""
    from sqlmodel import select

    from revisit.central.kiosk.models import PhotoFace
    from tests.central.kiosk.support import dev_people

    people = dev_people(facedata)
    canvas = np.full((4000, 6000, 3), 120, np.uint8)
    face = cv2.resize(cv2.imread(str(people.own[0])), (450, 450), interpolation=cv2.INTER_CUBIC)
    canvas[2500:2950, 4200:4650] = face
    data = bytes(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])[1])
    events = make_events(tmp_path)
    worker = FaceWorker(events, engine)
    try:
        image, factor = worker.load(data)
        assert factor == 2 and image.shape[:2] == (2000, 3000)
        small = bytes(cv2.imencode(".jpg", canvas[:2000, :3000])[1])
        assert worker.load(small)[1] == 1  # 3000 px: halving would leave less than twice the detector's side
        assert worker.load(png(64, 48))[1] == 1  # not a JPEG: decoded whole
        event = events.create_event("e")
        photo = events.add_photo(event.id, "big.jpg", data).photo
        worker.start()
        assert worker.wait_idle(120)
        with events.store.session() as s:
            rows = list(s.exec(select(PhotoFace).where(PhotoFace.photo_id == photo.id)))
        assert len(rows) >= 1
        best = min(rows, key=lambda r: abs((r.box[0] + r.box[2]) / 2 - 4425) + abs((r.box[1] + r.box[3]) / 2 - 2725))
        x1, y1, x2, y2 = best.box
        assert 4200 <= x1 < x2 <= 4650 and 2500 <= y1 < y2 <= 2950  # in the original's pixels
        full = engine.complete(canvas, photo_detector_faces(worker, canvas))
        ref = max(full, key=lambda f: float(np.dot(f.embedding, np.frombuffer(best.embedding, np.float32))))
        assert float(np.dot(ref.embedding, np.frombuffer(best.embedding, np.float32))) > 0.9
    finally:
        worker.stop()
        close_events(events)


def photo_detector_faces(worker, image):
    return worker.detector.detect(image)

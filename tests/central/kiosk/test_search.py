"""Face search on real photos through the real face engine: the person's photos are found, best first; the selfie
is never stored or logged; guidance for unusable selfies; the score scale; which face is used; rate limits."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlmodel import func, select

from revisit.central.kiosk.models import Event, GuestOrder, Photo, PhotoFace
from revisit.central.kiosk.search import (
    DEFAULT_THRESHOLD,
    FaceSearch,
    SelfieRejected,
    pick_face,
    to_cosine,
    to_similarity,
)
from revisit.central.kiosk.worker import FaceWorker
from revisit.shared.face import Face
from tests.central.kiosk.support import close_events, dev_people, files_under, make_events


@pytest.mark.parametrize(("similarity", "cosine"), [(0.5, 0.0), (1.0, 1.0), (0.0, -1.0), (0.6, 0.2), (0.68, 0.36)])
def test_scale_mapping(similarity, cosine):
    assert to_cosine(similarity) == pytest.approx(cosine)
    assert to_similarity(cosine) == pytest.approx(similarity)


def _face(x: float, y: float, w: float) -> Face:
    return Face(box=np.array([x, y, x + w, y + w]), score=0.9, landmarks=np.zeros((5, 2)))


@pytest.mark.parametrize(
    ("faces", "chosen", "note"),
    [
        ([(100, 100, 80)], 0, None),
        ([(0, 0, 40), (300, 200, 120)], 1, "largest"),  # the nearest person, not the one in the corner
        ([(10, 10, 100), (270, 190, 100)], 1, "nearest the middle"),  # same size: the one in the middle
        ([(270, 190, 100), (10, 10, 95), (500, 10, 30)], 0, "3 faces"),
    ],
)
def test_pick_face(faces, chosen, note):
    made = [_face(*f) for f in faces]
    face, notice = pick_face(made, (640, 640, 3))
    assert face is made[chosen]
    assert notice is None if note is None else note in notice


# --- on real photos ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, engine, facedata):
    """One event holding the person's three portraits and a group photo with her, among six strangers' photos."""
    people = dev_people(facedata)
    events = make_events(tmp_path_factory.mktemp("search"))
    worker = FaceWorker(events, engine).start()
    event = events.create_event("party")
    ids = {}
    for path in [*people.own, people.group, *people.others]:
        ids[path] = events.add_photo(event.id, path.name, path.read_bytes()).photo.id
        worker.submit(event.id, ids[path])
    assert worker.wait_idle(120)
    worker.stop()
    assert events.photo_status(event.id)["done"] == len(ids)
    yield events, event, people, ids
    close_events(events)


def _counts(events) -> dict[str, int]:
    with events.store.session() as s:
        return {
            m.__name__: s.exec(select(func.count()).select_from(m)).one() for m in (Event, Photo, PhotoFace, GuestOrder)
        }


@pytest.mark.models
@pytest.mark.facedata
def test_search_finds_the_persons_photos_best_first(indexed, engine):
    events, event, people, ids = indexed
    result = FaceSearch(events, engine).search(event.id, people.selfie.read_bytes())
    found = [m.photo.id for m in result.matches]
    assert set(found) == {ids[p] for p in [*people.own, people.group]}
    sims = [m.similarity for m in result.matches]
    assert sims == sorted(sims, reverse=True)
    assert all(DEFAULT_THRESHOLD <= s <= 1 for s in sims)
    assert all(m.cosine == pytest.approx(to_cosine(m.similarity), abs=1e-3) for m in result.matches)
    assert result.threshold == DEFAULT_THRESHOLD and result.selfie.faces_seen == 1


@pytest.mark.models
@pytest.mark.facedata
def test_threshold_narrows_the_results(indexed, engine):
    events, event, people, _ = indexed
    search = FaceSearch(events, engine)
    data = people.selfie.read_bytes()
    all_matches = search.search(event.id, data, threshold=0.6).matches
    best = all_matches[0].similarity
    assert [m.photo.id for m in search.search(event.id, data, threshold=best - 1e-3).matches] == [
        all_matches[0].photo.id
    ]
    assert search.search(event.id, data, threshold=1.0).matches == []
    with pytest.raises(ValueError):
        search.search(event.id, data, threshold=1.5)


@pytest.mark.models
@pytest.mark.facedata
def test_selfie_is_never_stored_or_logged(indexed, engine, caplog):
    events, event, people, _ = indexed
    data = people.selfie.read_bytes()
    before_files = files_under(events.files.root)
    before_rows = _counts(events)
    before_tmp = set(Path(tempfile.gettempdir()).iterdir())
    caplog.set_level(logging.DEBUG)
    search = FaceSearch(events, engine)
    assert search.search(event.id, data).matches
    with pytest.raises(SelfieRejected):
        search.search(event.id, data[: len(data) // 3])  # a broken selfie takes the error path
    assert files_under(events.files.root) == before_files
    assert _counts(events) == before_rows
    assert set(Path(tempfile.gettempdir()).iterdir()) == before_tmp
    import base64

    text = "\n".join(r.getMessage() + repr(r.args) for r in caplog.records)
    assert base64.b64encode(data[:48]).decode()[:60] not in text
    assert people.selfie.name not in text
    assert not [r for r in caplog.records if r.name.startswith("revisit.central")]


@pytest.mark.models
@pytest.mark.facedata
@pytest.mark.parametrize(
    ("case", "reason"),
    [("grey", "no_face"), ("dark", "too_dark"), ("blurred", "blurred"), ("tiny", "too_small"), ("junk", "bad_image")],
)
def test_guidance_for_unusable_selfies(indexed, engine, case, reason):
    events, event, people, _ = indexed
    image = cv2.imread(str(people.selfie))
    made = {
        "grey": lambda: np.full((480, 640, 3), 128, np.uint8),
        "dark": lambda: (image * 0.1).astype(np.uint8),
        "blurred": lambda: cv2.GaussianBlur(image, (0, 0), 12),
        "tiny": lambda: cv2.resize(image, None, fx=0.08, fy=0.08, interpolation=cv2.INTER_AREA),
        "junk": lambda: None,
    }[case]()
    data = b"not a picture" if made is None else bytes(cv2.imencode(".jpg", made)[1])
    with pytest.raises(SelfieRejected) as err:
        FaceSearch(events, engine).search(event.id, data)
    assert err.value.reason == reason
    assert len(err.value.message) > 20  # words for the guest


@pytest.mark.models
@pytest.mark.facedata
def test_several_faces_use_the_largest_and_say_so(indexed, engine):
    events, event, people, ids = indexed
    result = FaceSearch(events, engine).search(event.id, people.group.read_bytes())
    assert result.selfie.faces_seen >= 5
    assert "faces are in the picture" in result.selfie.notice
    widths = sorted((f.width for f in engine.detect(cv2.imread(str(people.group)))), reverse=True)
    assert result.selfie.face.width == pytest.approx(widths[0], abs=1)
    assert ids[people.group] in {m.photo.id for m in result.matches}  # the group photo itself is found

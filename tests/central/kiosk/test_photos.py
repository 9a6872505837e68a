"""Uploads: bad files refused with clear errors and nothing left behind; originals under UUID names; thumbnails."""

from __future__ import annotations

import uuid

import cv2
import numpy as np
import pytest

from revisit.central.kiosk.photos import (
    PhotoFiles,
    UploadError,
    sanitize_filename,
    sniff_ext,
    thumbnail,
    validate_upload,
)
from tests.central.kiosk.support import bad_files, close_events, files_under, jpeg, make_events, png


@pytest.fixture
def events(tmp_path):
    ev = make_events(tmp_path, max_bytes=200_000)
    yield ev
    close_events(ev)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("party.jpg", "party.jpg"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/IMG_1.JPG", "IMG_1.JPG"),
        (".hidden.jpg", "hidden.jpg"),
        ("bad\x00name\r\n.jpg", "badname.jpg"),
        ("", "photo"),
        (None, "photo"),
        ("..", "photo"),
        ("a" * 300 + ".jpeg", "a" * 115 + ".jpeg"),
    ],
)
def test_sanitize_filename(name, expected):
    assert sanitize_filename(name) == expected


@pytest.mark.parametrize(
    ("data", "ext"),
    [(jpeg(), "jpg"), (png(), "png"), (bytes(cv2.imencode(".webp", np.zeros((8, 8, 3), np.uint8))[1]), "webp")],
)
def test_sniff_ext(data, ext):
    assert sniff_ext(data) == ext


@pytest.mark.parametrize("case", list(bad_files()))
def test_bad_upload_is_refused_and_leaves_nothing(events, case):
    name, data, _ = bad_files()[case]
    event = events.create_event("e")
    result = events.add_photo(event.id, name, data)
    assert result.photo is None
    expected = {
        "not an image": "not an image",
        "lying content type": "not an image",
        "truncated jpeg": "truncated",
        "zero bytes": "empty file",
        "decompression bomb": "exceeds limit",
        "path traversal, not an image": "not an image",
    }[case]
    assert expected in result.error
    assert list(events.files.root.iterdir()) == []  # no file, no directory
    assert events.photos(event.id) == []


def test_over_the_size_limit_is_refused(events):
    event = events.create_event("e")
    noise = np.random.default_rng(1).integers(0, 255, (400, 400, 3), np.uint8)
    data = bytes(cv2.imencode(".png", noise)[1])
    assert len(data) > events.files.max_bytes
    result = events.add_photo(event.id, "big.png", data)
    assert result.photo is None and "too large" in result.error
    assert files_under(events.files.root) == {}


def test_huge_dimensions_are_refused_from_the_header(tmp_path):
    files = PhotoFiles(tmp_path, max_pixels=10_000)
    with pytest.raises(UploadError, match="too large: 200x100 pixels"):
        files.validate(png(200, 100))


def test_original_is_stored_under_a_uuid_name_by_its_content(events):
    event = events.create_event("e")
    data = png(300, 200)
    result = events.add_photo(event.id, "../../evil.jpg", data)  # a PNG that says it is a JPEG
    photo = result.photo
    assert result.filename == photo.filename == "evil.jpg"
    assert photo.stored_name == f"{photo.id.hex}.png"
    assert events.files.original(event.id, photo.stored_name).read_bytes() == data
    assert (photo.width, photo.height, photo.size, photo.status) == (300, 200, len(data), "processing")
    assert set(files_under(events.files.root)) == {
        f"{event.id.hex}/{photo.id.hex}.png",
        f"{event.id.hex}/thumbs/{photo.id.hex}.jpg",
    }


def test_the_same_file_twice_is_refused(events):
    event, other = events.create_event("e"), events.create_event("o")
    data = png(100, 80)
    first = events.add_photo(event.id, "a.png", data)
    again = events.add_photo(event.id, "copy of a.png", data)
    assert first.photo is not None and again.photo is None
    assert again.error == "already uploaded to this event (as a.png)"
    assert len(files_under(events.files.root)) == 2  # the first one's original and thumbnail
    assert events.add_photo(other.id, "a.png", data).photo is not None  # another event may have it


def test_stored_names_are_checked(tmp_path):
    files = PhotoFiles(tmp_path)
    with pytest.raises(UploadError):
        files.original(uuid.uuid4(), "../../etc/passwd")
    with pytest.raises(UploadError):
        files.thumb(uuid.uuid4(), "x.jpg")


def test_thumbnail_fits_the_side():
    image = np.zeros((1000, 2000, 3), np.uint8)
    thumb = cv2.imdecode(np.frombuffer(thumbnail(image, 480), np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (240, 480, 3)
    small = cv2.imdecode(np.frombuffer(thumbnail(np.zeros((50, 40, 3), np.uint8), 480), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (50, 40, 3)  # never enlarged


def test_validate_upload_limits():
    with pytest.raises(UploadError, match="too large"):
        validate_upload(jpeg(), max_bytes=10)
    assert validate_upload(jpeg(64, 48)).image.shape == (48, 64, 3)


def test_a_large_jpeg_is_validated_at_reduced_scale_but_completely(tmp_path):
    rng = np.random.default_rng(3)
    big = cv2.resize(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), (6000, 4000), interpolation=cv2.INTER_CUBIC)
    data = bytes(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1])
    checked = validate_upload(data)
    assert (checked.width, checked.height) == (6000, 4000)  # the original's size
    assert max(checked.image.shape[:2]) < 6000  # decoded at a reduced scale: enough for the thumbnail
    with pytest.raises(UploadError, match="truncated"):
        validate_upload(data[: len(data) * 2 // 3])  # every byte is still read
    events = make_events(tmp_path)
    try:
        photo = events.add_photo(events.create_event("e").id, "big.jpg", data).photo
        assert (photo.width, photo.height) == (6000, 4000)
        thumb = cv2.imread(str(events.files.thumb(photo.event_id, photo.thumb_name)))
        assert max(thumb.shape[:2]) == 480
    finally:
        close_events(events)

"""Events: codes, creation and expiry, photos and faces kept consistent across rows, files and Qdrant, deletion."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import inspect
from sqlmodel import func, select

from revisit.central.kiosk.events import CODE_ALPHABET, EventError, new_code, normalize_code
from revisit.central.kiosk.models import Event, GuestOrder, GuestOrderPhoto, LegacyOrder, Photo, PhotoFace
from revisit.central.kiosk.orders import Orders, migrate_legacy_orders
from revisit.central.store import Store, utcnow
from tests.central.kiosk.support import REC, close_events, fake_face, files_under, make_events, png


@pytest.fixture
def events(tmp_path):
    ev = make_events(tmp_path)
    yield ev
    close_events(ev)


def unit(seed: int, dim: int = 32) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def count(events, model, **where) -> int:
    with events.store.session() as s:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return s.exec(stmt).one()


def add_processed(events, event_id: uuid.UUID, vectors: list[np.ndarray]) -> Photo:
    """A stored photo whose faces are `vectors` (as the worker records them)."""
    result = events.add_photo(event_id, "party.png", png())
    assert result.photo is not None, result.error
    assert events.record_faces(result.photo.id, [fake_face(v) for v in vectors], REC)
    return result.photo


def test_codes_use_the_unambiguous_alphabet():
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000  # 31**8 possibilities: no repeats in practice
    assert all(len(c) == 8 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("01OIL") & set(CODE_ALPHABET)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("ABCD2345", "ABCD2345"),
        ("abcd2345", "ABCD2345"),
        (" abcd-2345 ", "ABCD2345"),
        ("ABC234", "ABC234"),  # 6 characters is the shortest code
        ("ABC23", None),
        ("ABCD23456", None),
        ("ABCD0345", None),  # 0 is never in a code
        ("ABCDI345", None),
        ("ABC/2345", None),
        ("", None),
    ],
)
def test_normalize_code(typed, expected):
    assert normalize_code(typed) == expected


def test_create_event_defaults_and_lookup(events):
    now = utcnow()
    event = events.create_event("  Summer   party ", now=now)
    assert event.name == "Summer party"
    assert event.date == now.date()
    assert event.expires_at == now + timedelta(days=30)
    assert events.by_code(event.code.lower()).id == event.id
    assert events.by_code("ZZZZ2222") is None
    assert events.get(event.id).code == event.code
    with pytest.raises(EventError, match="name"):
        events.create_event("   ")


def test_expired_event_is_not_found_by_code_and_expiry_deletes_it(events):
    now = utcnow()
    old = events.create_event("old", expires_at=now - timedelta(minutes=1))
    live = events.create_event("live")
    add_processed(events, old.id, [unit(1)])
    assert events.by_code(old.code) is None
    assert events.expire_events(now) == 1
    assert events.get(old.id) is None
    assert events.get(live.id) is not None
    assert events.vectors.collections(old.id) == []
    assert count(events, Photo, event_id=old.id) == 0


def test_tables_are_created_by_store_create_all(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    store.create_all()  # this module imported revisit.central.kiosk.events: its tables are on the same metadata
    names = set(inspect(store.engine).get_table_names())
    assert {"event", "event_photo", "event_photo_face", "event_order", "sighting"} <= names
    store.dispose()


def test_record_faces_writes_rows_and_vectors(events):
    event = events.create_event("e")
    photo = add_processed(events, event.id, [unit(1), unit(2)])
    status = events.photo_status(event.id)
    assert (status["total"], status["done"], status["processing"], status["faces"]) == (1, 1, 0, 2)
    assert status["photos"][0]["faces"] == 2
    assert count(events, PhotoFace, photo_id=photo.id) == 2
    hits = events.vectors.search(event.id, REC, unit(1), 0.9, 10)
    assert [h.photo_id for h in hits] == [photo.id]
    assert hits[0].cosine == pytest.approx(1.0, abs=1e-5)


def test_failed_photo_keeps_its_reason(events):
    event = events.create_event("e")
    photo = events.add_photo(event.id, "a.png", png()).photo
    events.fail_photo(photo.id, "corrupt or truncated JPEG image")
    row = events.photo_status(event.id)["photos"][0]
    assert (row["status"], row["reason"], row["faces"]) == ("failed", "corrupt or truncated JPEG image", 0)
    assert events.pending() == []


def test_pending_lists_unprocessed_photos_oldest_first(events):
    event = events.create_event("e")
    a = events.add_photo(event.id, "a.png", png()).photo
    b = events.add_photo(event.id, "b.png", png()).photo
    assert events.pending() == [(event.id, a.id), (event.id, b.id)]


def test_vectors_are_per_event_and_recognizer(events):
    one, two = events.create_event("one"), events.create_event("two")
    p1 = add_processed(events, one.id, [unit(1)])
    add_processed(events, two.id, [unit(1)])  # the same face in another event
    assert [h.photo_id for h in events.vectors.search(one.id, REC, unit(1), 0.5, 10)] == [p1.id]
    assert events.vectors.search(one.id, "other_rec@1", unit(1), 0.0, 10) == []  # never across recognizers
    assert len(events.vectors.collections(one.id)) == 1
    assert events.vectors.name(one.id, REC) != events.vectors.name(two.id, REC)
    assert events.vectors.name(one.id, REC) != events.vectors.name(one.id, "other_rec@1")


def test_delete_event_removes_photos_thumbnails_vectors_and_rows(events, tmp_path):
    keep, gone = events.create_event("keep"), events.create_event("gone")
    kept = add_processed(events, keep.id, [unit(1)])
    photo = add_processed(events, gone.id, [unit(2), unit(3)])
    Orders(events.store).create(gone.id, [photo.id], "Ann", "ann@example.com")
    assert events.files.original(gone.id, photo.stored_name).is_file()
    assert events.files.thumb(gone.id, photo.thumb_name).is_file()

    assert events.delete_event(gone.id) is True
    assert not events.files.event_dir(gone.id).exists()
    assert events.vectors.collections(gone.id) == []
    for model in (Photo, PhotoFace, GuestOrder, GuestOrderPhoto):
        assert count(events, model, event_id=gone.id) == 0
    assert events.get(gone.id) is None
    assert events.delete_event(gone.id) is False
    # the other event is untouched
    assert events.files.original(keep.id, kept.stored_name).is_file()
    assert [h.photo_id for h in events.vectors.search(keep.id, REC, unit(1), 0.9, 10)] == [kept.id]


def test_faces_recorded_after_the_event_was_deleted_are_dropped(events):
    event = events.create_event("e")
    photo = events.add_photo(event.id, "a.png", png()).photo
    events.delete_event(event.id)
    assert events.record_faces(photo.id, [fake_face(unit(1))], REC) is False
    assert events.vectors.collections(event.id) == []  # the worker did not recreate the collection


def test_add_photo_to_a_missing_event(events, tmp_path):
    with pytest.raises(EventError):
        events.add_photos(uuid.uuid4(), [("a.png", png())])
    assert files_under(events.files.root) == {}


def test_legacy_orders_are_moved_once_into_guests_orders(tmp_path):
    """A database holding orders of the first kiosk API (`event_order`, written as its code did): opening the
    tables moves each into a guest order the orders page lists, once; the legacy table stays, empty."""
    from datetime import datetime

    events = make_events(tmp_path)
    event, other = events.create_event("e"), events.create_event("o")
    photo, second = add_processed(events, event.id, [unit(1)]), add_processed(events, event.id, [unit(2)])
    theirs = add_processed(events, other.id, [unit(3)])
    legacy = [
        (uuid.uuid4(), event.id, photo.id, "2026-05-01 10:00:00.000000", "Ann Lee", "ann@example.com"),
        (uuid.uuid4(), event.id, second.id, "2026-05-01 10:05:00.000000", "", ""),
        (uuid.uuid4(), other.id, theirs.id, "2026-05-02 09:00:00.000000", "Bo", "bo@example.com"),
    ]
    with events.store.engine.begin() as conn:
        for row in legacy:
            conn.exec_driver_sql(
                "INSERT INTO event_order (id, event_id, photo_id, created_at, name, email) VALUES (?, ?, ?, ?, ?, ?)",
                (row[0].hex, row[1].hex, row[2].hex, *row[3:]),
            )
    close_events(events)

    events = make_events(tmp_path)  # the service's start: create_tables migrates
    orders = Orders(events.store)
    views = orders.list(event.id)
    assert [(v.order.id, v.order.name, v.order.contact, v.order.status) for v in views] == [
        (legacy[0][0], "Ann Lee", "ann@example.com", "new"),
        (legacy[1][0], "", "", "new"),
    ]
    assert [[p.id for p in v.photos] for v in views] == [[photo.id], [second.id]]
    assert views[0].order.created_at == datetime.fromisoformat("2026-05-01T10:00:00+00:00")
    assert len({v.order.reference for v in views}) == 2
    assert [v.order.id for v in orders.list(other.id)] == [legacy[2][0]]
    assert count(events, LegacyOrder) == 0 and "event_order" in inspect(events.store.engine).get_table_names()
    before = {v.order.id: v.order.reference for v in orders.list(event.id)}
    assert migrate_legacy_orders(events.store) == 0  # idempotent: nothing left to move, nothing changed
    events.create_tables()
    assert {v.order.id: v.order.reference for v in orders.list(event.id)} == before
    assert count(events, GuestOrder) == 3
    close_events(events)


def test_reindex_rebuilds_the_collection_from_the_database(events):
    event = events.create_event("e")
    photo = add_processed(events, event.id, [unit(1), unit(2)])
    events.vectors.drop_event(event.id)
    assert events.vectors.search(event.id, REC, unit(1), 0.5, 10) == []
    assert events.reindex(event.id) == 2
    assert events.vectors.count(event.id, REC) == 2
    assert events.vectors.search(event.id, REC, unit(2), 0.9, 10)[0].photo_id == photo.id


def test_list_events_counts(events):
    event = events.create_event("e")
    add_processed(events, event.id, [unit(1), unit(2)])
    events.add_photo(event.id, "b.png", png())
    (summary,) = events.list_events()
    assert (summary.photos, summary.processing, summary.failed, summary.faces) == (2, 1, 0, 2)


def test_event_rows_round_trip(events):
    event = events.create_event("e")
    with events.store.session() as s:
        row = s.get(Event, event.id)
    assert row.expires_at.tzinfo is not None


def test_event_deleted_during_an_upload_leaves_nothing(events, monkeypatch):
    event = events.create_event("e")
    save = events.files.save

    def save_then_delete(*args):
        names = save(*args)
        events.delete_event(event.id)  # staff delete the event while the file is being stored
        return names

    monkeypatch.setattr(events.files, "save", save_then_delete)
    with pytest.raises(EventError):
        events.add_photo(event.id, "a.png", png())
    assert list(events.files.root.iterdir()) == []  # not even an empty directory
    assert count(events, Photo) == 0

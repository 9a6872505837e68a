"""Events of the photo kiosk and the operations on them: events, their photos and faces, kept consistent across
the database rows (`revisit.central.kiosk.models`), the files (one directory per event,
`revisit.central.kiosk.photos.PhotoFiles`) and the face vectors (one collection per event and recognizer,
`revisit.central.kiosk.vectors.EventVectors`, whose docstring says why). The database keeps each face's embedding
too, so an event's collection can be rebuilt from it (`Events.reindex`).

Deleting an event, by hand or when it expires, removes its vectors, files and rows, in that order: a crash
half-way leaves rows that point at nothing (the next delete finishes the job), never files nobody can find.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from revisit.central.kiosk.config import KioskConfig
from revisit.central.kiosk.models import EVENT_ROWS, Event, EventSettings, Photo, PhotoFace, create_tables
from revisit.central.kiosk.photos import PhotoFiles, UploadError, sanitize_filename
from revisit.central.kiosk.vectors import EventVectors
from revisit.central.store import Store, utcnow
from revisit.shared.errors import RevisitError

log = logging.getLogger(__name__)

# Guests type the code: no 0/O, 1/I/L. 31 symbols, 8 of them: 31**8 ≈ 8.5e11 codes.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
DEFAULT_EXPIRY = timedelta(days=30)
PhotoStatus = Literal["processing", "done", "failed"]


class EventError(RevisitError):
    """An event operation that cannot be done (unknown event, bad code)."""


def new_code(length: int = CODE_LENGTH) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def normalize_code(text: str) -> str | None:
    """The code a guest typed, upper-cased without spaces or dashes; None when it cannot be a code."""
    code = re.sub(r"[\s-]+", "", text or "").upper()
    if not 6 <= len(code) <= 8 or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


# --- operations ------------------------------------------------------------------------------------------


@dataclass
class EventSummary:
    event: Event
    photos: int
    processing: int
    failed: int
    faces: int


@dataclass
class AddResult:
    """One uploaded file: the new photo, or the reason it was refused (nothing stored)."""

    filename: str
    photo: Photo | None = None
    error: str | None = None


class Events:
    """Events, their photos and faces: the database rows, the files and the vectors kept consistent.

    `lock` serialises the writes that must not interleave: recording a photo's faces against deleting its
    event (else the worker could recreate a dropped collection).
    """

    def __init__(self, store: Store, files: PhotoFiles, vectors: EventVectors):
        self.store = store
        self.files = files
        self.vectors = vectors
        self.lock = threading.RLock()

    @classmethod
    def for_service(cls, service: Any, config: KioskConfig | None = None) -> Events:
        """On an opened `CentralService`: its database and its vector index (`EventVectors.on`), photos under
        `[kiosk] storage_dir` (default <data_dir>/events). Enough for `expire_events` (no face engine); `close()`
        when done."""
        config = config or getattr(service.config, "kiosk", None) or KioskConfig()
        files = PhotoFiles(
            config.storage_dir or Path(service.config.data_dir) / "events", max_bytes=int(config.max_upload_mb * 2**20)
        )
        events = cls(service.store, files, EventVectors.on(service.vectors))
        events.create_tables()
        return events

    def create_tables(self) -> None:
        """Create the kiosk's tables if missing (`revisit.central.kiosk.models.create_tables`)."""
        create_tables(self.store)

    def close(self) -> None:
        """Let go of the vector handle when it is the kiosk's own (`EventVectors.on`); the database is the caller's."""
        self.vectors.close()

    # --- events ---

    def create_event(
        self, name: str, day: dt.date | None = None, *, expires_at: datetime | None = None, now: datetime | None = None
    ) -> Event:
        name = " ".join((name or "").split())
        if not name:
            raise EventError("an event needs a name")
        if len(name) > 200:
            raise EventError("event name too long (200 characters at most)")
        now = now or utcnow()
        expires_at = expires_at or now + DEFAULT_EXPIRY
        if expires_at.tzinfo is None:
            raise EventError("expires_at must be timezone-aware")
        for _ in range(10):  # a collision is ~1e-9 per existing event: retrying is enough
            event = Event(name=name, date=day or now.date(), code=new_code(), created_at=now, expires_at=expires_at)
            try:
                with self.store.begin() as s:
                    s.add(event)
                return event
            except IntegrityError:
                continue
        raise EventError("could not allocate a unique event code")

    def get(self, event_id: uuid.UUID) -> Event | None:
        with self.store.session() as s:
            return s.get(Event, event_id)

    def by_code(self, code: str, now: datetime | None = None) -> Event | None:
        """The live (not expired) event of a typed code."""
        norm = normalize_code(code)
        if norm is None:
            return None
        with self.store.session() as s:
            event = s.exec(select(Event).where(Event.code == norm)).first()
        if event is None or event.expires_at <= (now or utcnow()):
            return None
        return event

    def min_threshold(self, event_id: uuid.UUID) -> float | None:
        """The floor the staff set for this event's searches (None: the configured default)."""
        with self.store.session() as s:
            row = s.get(EventSettings, event_id)
        return row.min_threshold if row else None

    def set_min_threshold(self, event_id: uuid.UUID, value: float, actor: str = "") -> None:
        if not 0.5 <= value < 1:
            raise EventError("the minimum similarity is on the (cos + 1) / 2 scale: from 0.5 to below 1")
        with self.store.begin() as s:
            if s.get(Event, event_id) is None:
                raise EventError(f"no event {event_id}")
            row = s.get(EventSettings, event_id) or EventSettings(event_id=event_id, min_threshold=value)
            row.min_threshold, row.updated_at, row.updated_by = float(value), utcnow(), actor[:64]
            s.add(row)

    def list_events(self) -> list[EventSummary]:
        with self.store.session() as s:
            events = list(s.exec(select(Event).order_by(col(Event.date).desc(), col(Event.created_at).desc())))
            counts: dict[uuid.UUID, dict[str, int]] = {}
            for event_id, status, n, faces in s.exec(
                select(Photo.event_id, Photo.status, func.count(), func.sum(Photo.faces_found)).group_by(
                    Photo.event_id, Photo.status
                )
            ):
                c = counts.setdefault(event_id, {"photos": 0, "faces": 0})
                c[status] = int(n)
                c["photos"] += int(n)
                c["faces"] += int(faces or 0)
        out = []
        for e in events:
            c = counts.get(e.id, {})
            out.append(
                EventSummary(e, c.get("photos", 0), c.get("processing", 0), c.get("failed", 0), c.get("faces", 0))
            )
        return out

    def delete_event(self, event_id: uuid.UUID) -> bool:
        """Vectors, files, then rows (guests' orders, faces, photos, the event). False when there was no such event."""
        with self.lock:
            with self.store.session() as s:
                exists = s.get(Event, event_id) is not None
            self.vectors.drop_event(event_id)
            self.files.delete_event(event_id)
            with self.store.begin() as s:
                for table in EVENT_ROWS:
                    s.exec(delete(table).where(table.event_id == event_id))  # type: ignore[call-overload]
                s.exec(delete(Event).where(Event.id == event_id))  # type: ignore[call-overload]
        if exists:
            log.info("event %s deleted", event_id)
        return exists

    def expire_events(self, now: datetime | None = None) -> int:
        """Delete every event past its expiry (the retention job calls this); returns how many."""
        now = now or utcnow()
        with self.store.session() as s:
            ids = list(s.exec(select(Event.id).where(Event.expires_at <= now)))
        for event_id in ids:
            self.delete_event(event_id)
        if ids:
            log.info("%d expired event(s) deleted", len(ids))
        return len(ids)

    # --- photos ---

    def add_photos(self, event_id: uuid.UUID, uploads: Iterable[tuple[str, bytes]]) -> list[AddResult]:
        """Validate and store each (file name, bytes): a refused file leaves nothing behind. New photos are
        `processing` until the face worker has been through them (hand their ids to `FaceWorker.submit`)."""
        if self.get(event_id) is None:
            raise EventError(f"no event {event_id}")
        return [self.add_photo(event_id, name, data) for name, data in uploads]

    def add_photo(self, event_id: uuid.UUID, filename: str, data: bytes) -> AddResult:
        display = sanitize_filename(filename)
        try:
            image = self.files.validate(data)
        except UploadError as exc:
            return AddResult(display, error=str(exc))
        digest = hashlib.sha256(data).hexdigest()
        with self.store.session() as s:
            same = s.exec(select(Photo.filename).where(Photo.event_id == event_id, Photo.sha256 == digest)).first()
        if same is not None:
            return AddResult(display, error=f"already uploaded to this event (as {same})")
        photo_id = uuid.uuid4()
        stored = self.files.save(event_id, photo_id, image)
        photo = Photo(
            id=photo_id,
            event_id=event_id,
            filename=display,
            stored_name=stored.original,
            thumb_name=stored.thumb,
            size=len(data),
            width=image.width,
            height=image.height,
            sha256=digest,
        )
        try:
            with self.lock, self.store.begin() as s:
                if s.get(Event, event_id) is None:  # deleted meanwhile
                    raise EventError(f"no event {event_id}")
                s.add(photo)
        except IntegrityError:  # the same file, uploaded at the same moment
            self.files.delete_photo(event_id, stored.original, stored.thumb)
            return AddResult(display, error="already uploaded to this event")
        except BaseException:
            self.files.delete_photo(event_id, stored.original, stored.thumb)
            if self.get(event_id) is None:  # deleted during the upload: no empty directory left either
                self.files.delete_event(event_id)
            raise
        return AddResult(display, photo=photo)

    def photo(self, event_id: uuid.UUID, photo_id: uuid.UUID) -> Photo | None:
        """The photo, only when it belongs to that event."""
        with self.store.session() as s:
            photo = s.get(Photo, photo_id)
        return photo if photo is not None and photo.event_id == event_id else None

    def photos(self, event_id: uuid.UUID) -> list[Photo]:
        with self.store.session() as s:
            return list(s.exec(select(Photo).where(Photo.event_id == event_id).order_by(Photo.created_at, Photo.id)))

    def photos_by_id(self, event_id: uuid.UUID, photo_ids: list[uuid.UUID]) -> dict[uuid.UUID, Photo]:
        """Those of the photos that belong to the event and are processed."""
        if not photo_ids:
            return {}
        with self.store.session() as s:
            rows = s.exec(
                select(Photo).where(col(Photo.id).in_(photo_ids), Photo.event_id == event_id, Photo.status == "done")
            )
            return {p.id: p for p in rows}

    def photo_status(self, event_id: uuid.UUID) -> dict[str, Any]:
        """Counts by status and each photo's status, reason and faces (the status view polls this)."""
        photos = self.photos(event_id)
        counts = {"processing": 0, "done": 0, "failed": 0}
        for p in photos:
            counts[p.status] = counts.get(p.status, 0) + 1
        return {
            "total": len(photos),
            **counts,
            "faces": sum(p.faces_found for p in photos),
            "photos": [
                {
                    "id": str(p.id),
                    "filename": p.filename,
                    "status": p.status,
                    "reason": p.reason,
                    "faces": p.faces_found,
                    "size": p.size,
                }
                for p in photos
            ],
        }

    def pending(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(event id, photo id) of photos still to process, oldest first (resumed after a restart)."""
        with self.store.session() as s:
            stmt = select(Photo.event_id, Photo.id).where(Photo.status == "processing").order_by(Photo.created_at)
            return [(e, p) for e, p in s.exec(stmt)]

    def record_faces(self, photo_id: uuid.UUID, faces: list[Any], recognizer_id: str) -> bool:
        """Store the embedded faces of a processed photo (rows, then vectors) and mark it done.
        False when the photo (or its event) was deleted meanwhile: nothing is written."""
        with self.lock:
            with self.store.begin() as s:
                photo = s.get(Photo, photo_id)
                if photo is None:
                    return False
                s.exec(delete(PhotoFace).where(PhotoFace.photo_id == photo_id))  # type: ignore[call-overload]
                rows = [
                    PhotoFace(
                        photo_id=photo_id,
                        event_id=photo.event_id,
                        box=[round(float(v), 1) for v in f.box],
                        landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks],
                        quality=float(f.quality.score) if f.quality else 0.0,
                        quality_parts={k: round(v, 4) for k, v in f.quality.as_dict().items()} if f.quality else {},
                        recognizer_id=recognizer_id,
                        embedding=np.asarray(f.embedding, np.float32).tobytes(),
                    )
                    for f in faces
                ]
                s.add_all(rows)
                photo.status, photo.reason, photo.faces_found = "done", "", len(rows)
                s.add(photo)
                event_id = photo.event_id
            self.vectors.upsert(
                event_id,
                recognizer_id,
                [(r.id, photo_id, np.asarray(f.embedding)) for r, f in zip(rows, faces, strict=True)],
            )
        return True

    def fail_photo(self, photo_id: uuid.UUID, reason: str) -> None:
        with self.lock, self.store.begin() as s:
            photo = s.get(Photo, photo_id)
            if photo is not None:
                photo.status, photo.reason, photo.faces_found = "failed", reason[:500], 0
                s.add(photo)

    def reindex(self, event_id: uuid.UUID) -> int:
        """Rebuild the event's collections from the embeddings in the database; returns the faces written."""
        with self.lock:
            self.vectors.drop_event(event_id)
            with self.store.session() as s:
                faces = list(s.exec(select(PhotoFace).where(PhotoFace.event_id == event_id)))
            by_rec: dict[str, list[tuple[uuid.UUID, uuid.UUID, np.ndarray]]] = {}
            for f in faces:
                vec = np.frombuffer(f.embedding, np.float32)
                by_rec.setdefault(f.recognizer_id, []).append((f.id, f.photo_id, vec))
            for rec, points in by_rec.items():
                self.vectors.upsert(event_id, rec, points)
        return len(faces)

"""The central database (SQLModel on SQLite or PostgreSQL): the schema, the engine and sessions, the write helpers,
the crop files and the day rule. What pages, the API, exports and analytics read is in `revisit.central.queries`.

Tables: sites, devices, cameras (made on first sight from topics and messages), visitors, sightings (one per
observation, unique by observation UUID), visits (a visitor's sightings at one site sessionised with a gap),
cannot-links and must-links between sightings (manual edits and same-frame tracks, kept for `recluster`),
an audit log, and dead letters (messages whose storing failed for a bug, kept for replay). Keys are UUIDs;
timestamps are timezone-aware UTC (SQLite stores them naive, in UTC).

The database is the source of truth: each sighting keeps its embedding, so the Qdrant collections can be
rebuilt from it (`Rebuilder.reindex`).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from datetime import timezone as _timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    LargeBinary,
    TypeDecorator,
    UniqueConstraint,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from revisit.shared.errors import RevisitError

UTC = _timezone.utc  # datetime.UTC is Python 3.11+


class StoreError(RevisitError):
    """The database or the crop directory cannot be used."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out; SQLite (no time zones) stores them as naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


def _time(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


class Site(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    name: str = Field(max_length=64, unique=True, description="the site id of the topics")
    timezone: str | None = Field(None, max_length=64, description="IANA zone of the site's days; None: the global")
    created_at: datetime = _time(default_factory=utcnow)


class Device(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    site_id: uuid.UUID = Field(foreign_key="site.id", index=True)
    name: str = Field(max_length=64)
    state: str = Field("unknown", max_length=16, description="online / offline from the status topic")
    version: str = Field("", max_length=64)
    stats: dict = Field(default_factory=dict, sa_type=JSON, description="counters of the last heartbeat")
    last_seen: datetime | None = _time(default=None, description="last message of any kind")
    status_at: datetime | None = _time(default=None, description="time of the last status message (edge clock)")
    observations: int = 0
    rejected: int = 0


class Camera(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("device_id", "name"),)
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    site_id: uuid.UUID = Field(foreign_key="site.id", index=True)
    device_id: uuid.UUID = Field(foreign_key="device.id", index=True)
    name: str = Field(max_length=64)
    last_seen: datetime | None = _time(default=None)


class Visitor(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    recognizer_id: str = Field(max_length=128, index=True, description="embedding space of its sightings")
    site_id: uuid.UUID | None = Field(None, foreign_key="site.id", index=True, description="site of first sighting")
    first_seen: datetime = _time()
    last_seen: datetime = _time(index=True)
    visit_count: int = 0
    sighting_count: int = 0
    reference_sighting_id: uuid.UUID | None = Field(None, description="best-quality sighting (with a crop)")
    reference_quality: float = -1.0
    label: str = Field("", max_length=200)
    notes: str = Field("", max_length=10_000)
    proto_sum: bytes = Field(b"", sa_type=LargeBinary, description="float64 quality-weighted sum of members")
    proto_weight: float = 0.0
    unassigned: bool = Field(
        False, description="holds one low-quality sighting that matched nobody: never listed, never joined"
    )
    status: str = Field(
        "customer",
        max_length=16,
        description="customer, staff or excluded: staff and excluded leave the loyal "
        "list, the analytics and the new-visitor counts (their sightings still attach)",
    )
    created_at: datetime = _time(default_factory=utcnow)


VISITOR_STATUSES = ("customer", "staff", "excluded")


class Sighting(SQLModel, table=True):
    __table_args__ = (
        Index("ix_sighting_visitor_time", "visitor_id", "best_ts"),
        # same-frame tracks at ingest: a camera's sightings ending after a time (not all of the camera's)
        Index("ix_sighting_camera_last", "camera_id", "last_ts"),
    )
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    observation_id: uuid.UUID = Field(unique=True, description="the edge's observation UUID: idempotency")
    visitor_id: uuid.UUID = Field(foreign_key="visitor.id", index=True)
    visit_id: uuid.UUID | None = Field(None, foreign_key="visit.id", index=True)
    site_id: uuid.UUID = Field(foreign_key="site.id", index=True)
    device_id: uuid.UUID = Field(foreign_key="device.id")
    camera_id: uuid.UUID = Field(foreign_key="camera.id", index=True)
    track_id: int = Field(sa_type=BigInteger)
    first_ts: datetime = _time()
    last_ts: datetime = _time()
    best_ts: datetime = _time(index=True)
    quality: float
    det_score: float
    box: list = Field(sa_type=JSON)
    frame_size: list = Field(sa_type=JSON)
    co_tracks: list = Field(default_factory=list, sa_type=JSON)
    crop_path: str | None = Field(None, max_length=64, description="relative to the crop directory; None: expired")
    recognizer_id: str = Field(max_length=128)
    embedding: bytes | None = Field(None, sa_type=LargeBinary, description="float32; None once expired")
    created_at: datetime = _time(default_factory=utcnow, index=True)


class Visit(SQLModel, table=True):
    __table_args__ = (Index("ix_visit_visitor_start", "visitor_id", "start"),)
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    visitor_id: uuid.UUID = Field(foreign_key="visitor.id", index=True)
    site_id: uuid.UUID = Field(foreign_key="site.id", index=True)
    start: datetime = _time(index=True)
    end: datetime = _time()
    sighting_count: int = 0


LinkReason = Literal["co_track", "not_this_person", "split", "merge"]


class SightingPair(SQLModel):
    """Columns of a constraint between two sightings, stored as an ordered pair (see `pair`)."""

    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    a_id: uuid.UUID = Field(foreign_key="sighting.id", index=True, ondelete="CASCADE")
    b_id: uuid.UUID = Field(foreign_key="sighting.id", index=True, ondelete="CASCADE")
    reason: str = Field(max_length=32)
    created_at: datetime = _time(default_factory=utcnow)


class CannotLink(SightingPair, table=True):
    """Two sightings of different people: same-frame tracks, "not this person", split."""

    __table_args__ = (UniqueConstraint("a_id", "b_id"),)


class MustLink(SightingPair, table=True):
    """Two sightings a person said are the same visitor (merge, split); `recluster` keeps them together."""

    __table_args__ = (UniqueConstraint("a_id", "b_id"),)


class AuditLog(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    at: datetime = _time(default_factory=utcnow, index=True)
    actor: str = Field("", max_length=64)
    action: str = Field(max_length=32, description="erase, merge, split, not_this_person, retention, recluster")
    visitor_id: uuid.UUID | None = Field(None, description="no foreign key: erased visitors stay named here")
    details: dict = Field(default_factory=dict, sa_type=JSON)


class SightingFlag(SQLModel, table=True):
    """Why a sighting's times are not the edge's own: `clock_skew` (far from the receive time: stamped with it)
    or `backfill` (imported after the fact). The device's best time is kept in `device_ts`."""

    sighting_id: uuid.UUID = Field(foreign_key="sighting.id", primary_key=True, ondelete="CASCADE")
    kind: str = Field(max_length=16, index=True)
    device_ts: float = Field(description="the observation's best_ts as the edge sent it (UTC epoch seconds)")
    received_at: datetime = _time(default_factory=utcnow)


class DeadLetter(SQLModel, table=True):
    """A message whose storing failed with a non-transient error (a bug, not bad input): kept as received, acked
    to the edge as rejected so it stops resending, and replayed by `revisit central backfill --dead-letters` once
    the fault is fixed (the row goes once its observation is stored). One row per distinct message (`digest`)."""

    __tablename__ = "dead_letter"
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    digest: str = Field(max_length=64, unique=True, description="sha256 hex of topic and payload")
    topic: str = Field(max_length=512)
    site: str = Field("", max_length=64, index=True, description="the site of its topic ('' if unreadable)")
    payload: bytes = Field(sa_type=LargeBinary, description="the message as received")
    observation_id: str = Field("", max_length=64)
    error: str = Field("", max_length=2000, description="the last failure: exception type and text")
    backfill: bool = Field(False, description="it came from a backfill import: replayed as one")
    received_at: datetime = _time(description="the first receive time: a replay checks clock skew against it")
    failed_at: datetime = _time(default_factory=utcnow, description="the last failure")
    attempts: int = 1


# --- accounts (revisit.central.users) -------------------------------------------------------------------------


class User(SQLModel, table=True):
    """A person who logs in to the pages and the API; `role` decides what they may do (`revisit.central.auth`)."""

    __tablename__ = "web_user"
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    username: str = Field(max_length=64, unique=True, index=True)
    password_hash: str = Field(max_length=512, description="argon2id")
    role: str = Field(max_length=16, description="admin, head_office, site_manager, event_staff")
    sites: list = Field(default_factory=list, sa_type=JSON, description="site names a site manager may see")
    created_at: datetime = _time(default_factory=utcnow)
    password_changed_at: datetime = _time(default_factory=utcnow)
    config_hash: str | None = Field(None, max_length=512, description="the [admin] password last applied from config")


class ApiToken(SQLModel, table=True):
    """A bearer token for integrations: only its SHA-256 is kept; scoped to a role and sites; revocable."""

    __tablename__ = "api_token"
    id: uuid.UUID = Field(default_factory=_uuid, primary_key=True)
    name: str = Field(max_length=64)
    token_hash: str = Field(max_length=64, unique=True, index=True, description="sha256 hex of the token")
    hint: str = Field(max_length=16, description="the token's first characters, to recognise it in lists")
    role: str = Field(max_length=16)
    sites: list = Field(default_factory=list, sa_type=JSON)
    created_by: str = Field("", max_length=64)
    created_at: datetime = _time(default_factory=utcnow)
    last_used_at: datetime | None = _time(default=None)
    revoked_at: datetime | None = _time(default=None)


class WebSession(SQLModel, table=True):
    """A login: the signed cookie holds a random id whose SHA-256 is this row's key; deleting the row ends it."""

    __tablename__ = "web_session"
    id: str = Field(max_length=64, primary_key=True, description="sha256 hex of the cookie's session id")
    user_id: uuid.UUID = Field(foreign_key="web_user.id", index=True, ondelete="CASCADE")
    created_at: datetime = _time(default_factory=utcnow)
    last_seen_at: datetime = _time(default_factory=utcnow)
    client: str = Field("", max_length=64)


def pair(a: uuid.UUID, b: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """Links are stored with a_id < b_id so each pair has one row."""
    return (a, b) if str(a) < str(b) else (b, a)


class Store:
    """The engine and sessions of one database. Sessions keep objects usable after commit."""

    def __init__(self, url: str, echo: bool = False):
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if url in ("sqlite://", "sqlite:///:memory:"):
                from sqlalchemy.pool import StaticPool

                kwargs["poolclass"] = StaticPool  # one shared in-memory database
            else:
                Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as exc:  # bad URL or missing driver
            raise StoreError(f"cannot use database {_redact(url)}: {exc}") from exc
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    def create_all(self) -> None:
        try:
            SQLModel.metadata.create_all(self.engine)
            self._add_missing_columns()
            self._add_missing_indexes()
        except Exception as exc:
            raise StoreError(f"cannot open database {_redact(self.url)}: {exc}") from exc

    def _add_missing_columns(self) -> None:
        """Columns added after a database was made (create_all never alters a table): added with their default,
        nothing lost."""
        false = "0" if self.engine.dialect.name == "sqlite" else "FALSE"
        added = (
            ("site", "timezone", "VARCHAR(64)"),
            ("visitor", "unassigned", f"BOOLEAN NOT NULL DEFAULT {false}"),
            ("visitor", "status", "VARCHAR(16) NOT NULL DEFAULT 'customer'"),
        )
        inspector = inspect(self.engine)
        for table, column, ddl in added:
            if column not in {c["name"] for c in inspector.get_columns(table)}:
                with self.engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))

    def _add_missing_indexes(self) -> None:
        """Indexes declared after a database was made (create_all only indexes the tables it creates)."""
        inspector = inspect(self.engine)
        for table in SQLModel.metadata.sorted_tables:
            have = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if index.name not in have:
                    index.create(self.engine, checkfirst=True)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on error."""
        with self.session() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process kill
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1:***@", url)


# --- sites, devices, cameras -------------------------------------------------------------------------------


def _get_or_create(session: Session, model: type, **key: Any) -> Any:
    stmt = select(model)
    for name, value in key.items():
        stmt = stmt.where(getattr(model, name) == value)
    row = session.exec(stmt).first()
    if row is not None:
        return row
    try:
        with session.begin_nested():  # another worker may insert the same row concurrently
            row = model(**key)
            session.add(row)
    except IntegrityError:
        row = session.exec(stmt).one()
    return row


def ensure_site(session: Session, name: str) -> Site:
    return _get_or_create(session, Site, name=name)


def ensure_device(session: Session, site: Site, name: str) -> Device:
    return _get_or_create(session, Device, site_id=site.id, name=name)


def ensure_camera(session: Session, site: Site, device: Device, name: str) -> Camera:
    camera = _get_or_create(session, Camera, device_id=device.id, name=name, site_id=site.id)
    return camera


# --- crops -----------------------------------------------------------------------------------------------

_CROP = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}\.jpg$")


class CropStore:
    """JPEG crops under `root`, named by a fresh UUID (never by anything in a message): `ab/<uuid hex>.jpg`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._made: set[str] = set()  # the 256 subfolders this process has made sure of

    def save(self, jpeg: bytes) -> str:
        name = uuid.uuid4().hex
        rel = f"{name[:2]}/{name}.jpg"
        if name[:2] not in self._made:
            (self.root / name[:2]).mkdir(exist_ok=True)
            self._made.add(name[:2])
        path = os.path.join(self.root, rel)
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:  # no fsync: like SQLite's synchronous=NORMAL, safe against a killed process
            fh.write(jpeg)
        os.replace(tmp, path)
        return rel

    def path(self, rel: str) -> Path:
        """The file of a stored crop name; anything that is not one of our names is refused."""
        if not _CROP.match(rel):
            raise StoreError(f"not a crop name: {rel[:80]!r}")
        return self.root / rel

    def delete(self, rel: str | None) -> bool:
        if not rel:
            return False
        try:
            self.path(rel).unlink()
            return True
        except FileNotFoundError:
            return False


# --- days and zones (the day rule) -------------------------------------------------------------------------


@lru_cache(maxsize=256)
def zone_info(name: str) -> ZoneInfo:
    """The IANA zone `name`; StoreError when unknown (validate configuration and forms with this)."""
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise StoreError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'") from exc


def site_zone(site: Site, default: str) -> str:
    """A site's zone; the global zone when the site has none."""
    return site.timezone or default


def local_day(ts: datetime, zone: str) -> date:
    """The day rule: a visit belongs to the local day (in `zone`) on which it starts."""
    return ts.astimezone(zone_info(zone)).date()


def day_start(day: date, zone: str) -> datetime:
    """Local midnight starting `day` in `zone`, as UTC."""
    return datetime.combine(day, time(), zone_info(zone)).astimezone(UTC)


def day_bounds(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of the day of `now` in `timezone`, as UTC datetimes (23 or 25 hours on DST change days)."""
    day = local_day(now, timezone)
    return day_start(day, timezone), day_start(day + timedelta(days=1), timezone)

"""The kiosk's tables: `event`, `event_photo`, `event_photo_face`, `event_settings`, the guests' orders
`event_guest_order` and `event_guest_order_photo`, and the legacy `event_order` (read only to migrate it).

They live on the same `SQLModel.metadata` as central's own tables (`revisit.central.store`): defining the classes
below is what puts them there, so importing this module registers them. That import is explicit: the service
makes it and calls `create_tables` when it opens the database (`CentralService.open`), and so does
`Events.create_tables`; importing the settings (`revisit.central.kiosk.config`) registers nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from revisit.central.store import Store, UTCDateTime, utcnow


class Event(SQLModel, table=True):
    __tablename__ = "event"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200)
    date: dt.date
    code: str = Field(max_length=8, unique=True, index=True, description="what guests type at the kiosk")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class Photo(SQLModel, table=True):
    __tablename__ = "event_photo"
    __table_args__ = (UniqueConstraint("event_id", "sha256"),)
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    event_id: uuid.UUID = Field(foreign_key="event.id", index=True, ondelete="CASCADE")
    filename: str = Field(max_length=255, description="the uploaded name, sanitised; for display only")
    stored_name: str = Field(max_length=64, description="the original on disk: <photo id hex>.<ext>")
    thumb_name: str = Field(max_length=64, description="<photo id hex>.jpg in the event's thumbs/")
    status: str = Field("processing", max_length=16, index=True, description="processing / done / failed")
    reason: str = Field("", max_length=500, description="why it failed")
    faces_found: int = 0
    size: int = Field(0, description="bytes of the original")
    sha256: str | None = Field(None, max_length=64, index=True, description="of the original: no re-uploads")
    width: int = 0
    height: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PhotoFace(SQLModel, table=True):
    __tablename__ = "event_photo_face"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    photo_id: uuid.UUID = Field(foreign_key="event_photo.id", index=True, ondelete="CASCADE")
    event_id: uuid.UUID = Field(foreign_key="event.id", index=True, ondelete="CASCADE")
    box: list = Field(sa_type=JSON, description="x1, y1, x2, y2 in pixels of the original")
    landmarks: list = Field(sa_type=JSON, description="5 x (x, y)")
    quality: float
    quality_parts: dict = Field(default_factory=dict, sa_type=JSON)
    recognizer_id: str = Field(max_length=128)
    embedding: bytes = Field(sa_type=LargeBinary, description="float32, unit length")


class EventSettings(SQLModel, table=True):
    """Per-event settings the staff choose (a separate table: existing databases gain it with create_all)."""

    __tablename__ = "event_settings"
    event_id: uuid.UUID = Field(foreign_key="event.id", primary_key=True, ondelete="CASCADE")
    min_threshold: float = Field(description="guests' searches use at least this, on the (cos+1)/2 scale")
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field("", max_length=64)


class LegacyOrder(SQLModel, table=True):
    """A single-photo order of the first kiosk API, which the orders page never showed: `create_tables` moves any
    into `GuestOrder`s (`revisit.central.kiosk.orders.migrate_legacy_orders`). Kept so old databases stay readable;
    nothing writes it."""

    __tablename__ = "event_order"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    event_id: uuid.UUID = Field(foreign_key="event.id", index=True, ondelete="CASCADE")
    photo_id: uuid.UUID = Field(foreign_key="event_photo.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    name: str = Field("", max_length=200)
    email: str = Field("", max_length=254)


class GuestOrder(SQLModel, table=True):
    __tablename__ = "event_guest_order"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    event_id: uuid.UUID = Field(foreign_key="event.id", index=True, ondelete="CASCADE")
    reference: str = Field(max_length=8, unique=True, index=True, description="shown to the guest: ABCDEF")
    name: str = Field("", max_length=200)
    contact: str = Field("", max_length=254, description="e-mail or phone number, as the guest gave it")
    status: str = Field("new", max_length=16, index=True, description="new / ready / delivered")
    notes: str = Field("", max_length=2000, description="the photographer's")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = Field("", max_length=64)


class GuestOrderPhoto(SQLModel, table=True):
    __tablename__ = "event_guest_order_photo"
    order_id: uuid.UUID = Field(foreign_key="event_guest_order.id", primary_key=True, ondelete="CASCADE")
    photo_id: uuid.UUID = Field(foreign_key="event_photo.id", primary_key=True, ondelete="CASCADE")
    event_id: uuid.UUID = Field(foreign_key="event.id", index=True, ondelete="CASCADE")


# parents first
TABLES: tuple[Any, ...] = (Event, Photo, PhotoFace, EventSettings, LegacyOrder, GuestOrder, GuestOrderPhoto)
# what deleting an event deletes, children first (the event row itself last)
EVENT_ROWS: tuple[Any, ...] = (GuestOrderPhoto, GuestOrder, LegacyOrder, PhotoFace, Photo, EventSettings)


def create_tables(store: Store) -> None:
    """Create the kiosk's tables that are missing (existing ones are left as they are), then move any legacy
    orders into guests' orders."""
    from revisit.central.kiosk.orders import migrate_legacy_orders  # it imports this module

    SQLModel.metadata.create_all(store.engine, tables=[m.__table__ for m in TABLES])
    migrate_legacy_orders(store)

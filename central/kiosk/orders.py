"""Guests' orders of event photos, and what a photographer needs to fulfil them.

A guest orders one or more photos a search returned (their signed tokens) with a name and a contact (e-mail or
phone); the answer carries a short order reference (`ABC-DEF`: the event code alphabet, no 0/O, 1/I/L) to show
at the counter. Staff see the orders of an event, move each through new -> ready -> delivered with notes, export
them as CSV and download the ordered originals as one ZIP, streamed file by file (never all in memory).

Tables `event_guest_order` and `event_guest_order_photo` (`revisit.central.kiosk.models`). An order leaves with its
event (`Events.delete_event`, at expiry or by hand) and with the guest's erasure (`Orders.erase`). Status changes,
exports and erasures are in the audit log (`revisit.central.kiosk.routes.audit`).

Orders of the first kiosk API (table `event_order`, one photo each, never shown on the orders page) are moved here
once, when the tables are opened (`migrate_legacy_orders`): each becomes a `new` guest order with the same id.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from revisit.central.kiosk.events import CODE_ALPHABET, EventError
from revisit.central.kiosk.models import GuestOrder, GuestOrderPhoto, LegacyOrder, Photo
from revisit.central.store import Store, utcnow

log = logging.getLogger(__name__)
STATUSES = ("new", "ready", "delivered")
MAX_PHOTOS_PER_ORDER = 100
REFERENCE_LENGTH = 6  # 31**6 ≈ 8.9e8 references; unique across all events
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PHONE = re.compile(r"\+?[0-9 ()./-]{6,24}")


def format_reference(reference: str) -> str:
    return f"{reference[:3]}-{reference[3:]}"


@dataclass
class OrderView:
    """An order with its photos (those still in the event, in the order the guest chose them)."""

    order: GuestOrder
    photos: list[Photo]

    @property
    def reference(self) -> str:
        return format_reference(self.order.reference)


class Orders:
    def __init__(self, store: Store):
        self.store = store

    def create(
        self, event_id: uuid.UUID, photo_ids: Iterable[uuid.UUID], name: str = "", contact: str = ""
    ) -> OrderView:
        """An order of processed photos of the event; EventError with a reason a guest can act on."""
        ids = list(dict.fromkeys(photo_ids))
        if not ids:
            raise EventError("choose at least one photo")
        if len(ids) > MAX_PHOTOS_PER_ORDER:
            raise EventError(f"at most {MAX_PHOTOS_PER_ORDER} photos in one order")
        name = " ".join((name or "").split())[:200]
        contact = " ".join((contact or "").split())[:254]
        if contact and not (EMAIL.fullmatch(contact) or PHONE.fullmatch(contact)):
            raise EventError("that e-mail address or phone number does not look right")
        with self.store.session() as s:
            photos = {
                p.id: p
                for p in s.exec(
                    select(Photo).where(col(Photo.id).in_(ids), Photo.event_id == event_id, Photo.status == "done")
                )
            }
        if len(photos) != len(ids):
            raise EventError("no such photo in this event")
        for _ in range(10):
            order = GuestOrder(event_id=event_id, reference=new_reference(), name=name, contact=contact)
            try:
                with self.store.begin() as s:
                    s.add(order)
                    s.flush()
                    s.add_all(GuestOrderPhoto(order_id=order.id, photo_id=p, event_id=event_id) for p in ids)
                return OrderView(order, [photos[p] for p in ids])
            except IntegrityError:  # a reference already taken (or the event deleted meanwhile)
                continue
        raise EventError("could not place the order; please try again")

    def get(self, event_id: uuid.UUID, order_id: uuid.UUID) -> OrderView | None:
        views = self._views(event_id, order_id)
        return views[0] if views else None

    def list(self, event_id: uuid.UUID, status: str | None = None) -> list[OrderView]:
        return self._views(event_id, None, status)

    def _views(
        self, event_id: uuid.UUID, order_id: uuid.UUID | None = None, status: str | None = None
    ) -> list[OrderView]:
        with self.store.session() as s:
            stmt = select(GuestOrder).where(GuestOrder.event_id == event_id)
            if order_id is not None:
                stmt = stmt.where(GuestOrder.id == order_id)
            if status:
                stmt = stmt.where(GuestOrder.status == status)
            orders = list(s.exec(stmt.order_by(col(GuestOrder.created_at), col(GuestOrder.id))))
            by_order: dict[uuid.UUID, list[Photo]] = {o.id: [] for o in orders}
            if orders:
                rows = s.exec(
                    select(GuestOrderPhoto.order_id, Photo)
                    .join(Photo, col(Photo.id) == col(GuestOrderPhoto.photo_id))
                    .where(col(GuestOrderPhoto.order_id).in_(list(by_order)))
                    .order_by(col(Photo.created_at), col(Photo.id))
                )
                for oid, photo in rows:
                    by_order[oid].append(photo)
        return [OrderView(o, by_order[o.id]) for o in orders]

    def update(
        self,
        event_id: uuid.UUID,
        order_id: uuid.UUID,
        *,
        status: str | None = None,
        notes: str | None = None,
        actor: str = "",
    ) -> GuestOrder:
        if status is not None and status not in STATUSES:
            raise EventError(f"status is one of {', '.join(STATUSES)}")
        if notes is not None and len(notes) > 2000:
            raise EventError("notes: 2000 characters at most")
        with self.store.begin() as s:
            order = s.get(GuestOrder, order_id)
            if order is None or order.event_id != event_id:
                raise EventError("no such order in this event")
            if status is not None:
                order.status = status
            if notes is not None:
                order.notes = notes.strip()
            order.updated_at, order.updated_by = utcnow(), actor[:64]
            s.add(order)
        return order

    def erase(self, event_id: uuid.UUID, order_id: uuid.UUID) -> GuestOrder | None:
        """Delete the order (the guest's name and contact with it); the photos stay in the event."""
        with self.store.begin() as s:
            order = s.get(GuestOrder, order_id)
            if order is None or order.event_id != event_id:
                return None
            s.exec(delete(GuestOrderPhoto).where(GuestOrderPhoto.order_id == order_id))  # type: ignore[call-overload]
            s.delete(order)
        return order

    def counts(self) -> dict[uuid.UUID, dict[str, int]]:
        """Per event: orders by status, and "total"."""
        out: dict[uuid.UUID, dict[str, int]] = {}
        with self.store.session() as s:
            for event_id, status, n in s.exec(
                select(GuestOrder.event_id, GuestOrder.status, func.count()).group_by(
                    GuestOrder.event_id, GuestOrder.status
                )
            ):
                c = out.setdefault(event_id, {"total": 0})
                c[status] = int(n)
                c["total"] += int(n)
        return out


def new_reference() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def order_json(view: OrderView) -> dict:
    o = view.order
    return {
        "order_id": str(o.id),
        "reference": view.reference,
        "event_id": str(o.event_id),
        "name": o.name,
        "contact": o.contact,
        "status": o.status,
        "notes": o.notes,
        "created_at": o.created_at.isoformat(),
        "updated_at": o.updated_at.isoformat(),
        "updated_by": o.updated_by,
        "photos": [{"photo_id": str(p.id), "filename": p.filename} for p in view.photos],
    }


# --- exports ----------------------------------------------------------------------------------------------


def _cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def orders_csv(views: list[OrderView]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(
        ["reference", "status", "name", "contact", "photos", "files", "notes", "created_at", "updated_at", "updated_by"]
    )
    for v in views:
        o = v.order
        w.writerow(
            [
                v.reference,
                o.status,
                _cell(o.name),
                _cell(o.contact),
                len(v.photos),
                _cell(" ".join(p.filename for p in v.photos)),
                _cell(o.notes),
                o.created_at.isoformat(),
                o.updated_at.isoformat(),
                _cell(o.updated_by),
            ]
        )
    return out.getvalue()


class _Sink:
    """A write-only file for `zipfile`: it sees no seek/tell, so it writes data descriptors and never seeks back;
    the bytes written are taken out by `take()` as they come."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def zip_stream(entries: Iterable[tuple[str, Path]], chunk: int = 1 << 20) -> Iterator[bytes]:
    """A ZIP of (name in the archive, file) streamed: at most about one chunk of one file is in memory.
    Photos are already compressed: stored, not deflated."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        for arcname, path in entries:
            info = zipfile.ZipInfo.from_file(path, arcname)
            info.compress_type = zipfile.ZIP_STORED
            with path.open("rb") as src, zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                while data := src.read(chunk):
                    dst.write(data)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def zip_entries(views: list[OrderView], original: Callable[[Photo], Path | None]) -> list[tuple[str, Path]]:
    """One folder per order (`<reference> <name>/`), the originals under their uploaded names (made unique)."""
    entries = []
    for v in views:
        folder = _safe(f"{v.reference} {v.order.name}".strip()) or v.reference
        seen: set[str] = set()
        for p in v.photos:
            path = original(p)
            if path is None:
                continue
            name = _safe(Path(p.filename).stem) or p.id.hex
            base, n = name, 2
            while name.lower() in seen:
                name, n = f"{base} ({n})", n + 1
            seen.add(name.lower())
            entries.append((f"{folder}/{name}{path.suffix}", path))
    return entries


def _safe(text: str) -> str:
    return re.sub(r"[^\w .()-]+", "_", text).strip(" .")[:80]


def migrate_legacy_orders(store: Store) -> int:
    """Move every legacy `event_order` row into a guest order of its photo (same id, name, e-mail as contact,
    created time; status `new`), deleting the row in the same transaction: idempotent, nothing lost. Returns how
    many were moved."""
    with store.begin() as s:
        legacy = list(s.exec(select(LegacyOrder).order_by(LegacyOrder.created_at)))
        if not legacy:
            return 0
        taken = set(s.exec(select(GuestOrder.reference)))
        for row in legacy:
            if s.get(GuestOrder, row.id) is None:
                reference = new_reference()
                while reference in taken:
                    reference = new_reference()
                taken.add(reference)
                s.add(
                    GuestOrder(
                        id=row.id,
                        event_id=row.event_id,
                        reference=reference,
                        name=row.name,
                        contact=row.email,
                        notes="ordered at the kiosk's first version (one photo)",
                        created_at=row.created_at,
                        updated_at=row.created_at,
                        updated_by="migration",
                    )
                )
                s.flush()
                s.add(GuestOrderPhoto(order_id=row.id, photo_id=row.photo_id, event_id=row.event_id))
            s.delete(row)
    log.info("%d legacy kiosk order(s) moved into guests' orders", len(legacy))
    return len(legacy)

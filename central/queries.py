"""The read model: every read the pages, the API, the exports and the analytics make, in one module.

The schema, the engine and sessions and the write helpers stay in `revisit.central.store` (with the day rule,
which the write side uses too); every change goes through the clusterer (`CentralService.clusterer`), which keeps
the database, the vector index and the crop files consistent and writes the audit log. Here are only reads.

One module, in sections by concern (sort orders, names, site scope, visitors, loyal customers, the visitor page,
live, sites and devices, analytics, exports), not a package: the sections share the scope filter, the names and
the row types, and callers read it as one namespace (`queries.loyal_customers`, `queries.LOYAL_SORTS`). The sort
orders are defined once here, as a `Literal` (what the API and the pages accept) and a table (what the sort menus
show and how each query orders).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import or_
from sqlmodel import Session, col, func, select

from revisit.central.service import CentralService
from revisit.central.store import (
    UTC,
    Camera,
    DeadLetter,
    Device,
    Sighting,
    Site,
    UTCDateTime,
    Visit,
    Visitor,
    day_bounds,
    day_start,
    local_day,
    site_zone,
    utcnow,
)
from revisit.shared.assign import Prototype

SIMILAR_MIN_SCORE = 0.2  # merge candidates below this cosine are not shown
STALE_AFTER = timedelta(minutes=2)  # no message for this long: the device is "stale" (edges beat every 30 s)


# --- sort orders (the API takes the Literal; the pages' menus show the labels, in this order) ---------------------

Order = TypeVar("Order")


@dataclass(frozen=True)
class SortOption(Generic[Order]):
    label: str  # what the sort menu shows
    order: Order  # how the query orders: an ORDER BY term (visitors) or a key on candidate rows (loyal)


class LoyalCandidate(NamedTuple):
    """A visitor seen on the day with enough visits before it, before paging (what the loyal sorts order)."""

    visitor_id: uuid.UUID
    before: int  # visits in the window before the day
    arrival: datetime  # start of the first visit of the day
    last_seen: datetime


LoyalSort = Literal["arrival", "-arrival", "visits", "-visits", "last_seen", "-last_seen"]
LOYAL_SORTS: dict[LoyalSort, SortOption[Callable[[LoyalCandidate], tuple]]] = {
    "-arrival": SortOption("arrived today, latest first", lambda r: (-r.arrival.timestamp(), str(r.visitor_id))),
    "arrival": SortOption("arrived today, earliest first", lambda r: (r.arrival, str(r.visitor_id))),
    "-visits": SortOption("most visits before today", lambda r: (-r.before, str(r.visitor_id))),
    "visits": SortOption("fewest visits before today", lambda r: (r.before, str(r.visitor_id))),
    "-last_seen": SortOption("last seen, newest first", lambda r: (-r.last_seen.timestamp(), str(r.visitor_id))),
    "last_seen": SortOption("last seen, oldest first", lambda r: (r.last_seen, str(r.visitor_id))),
}

VisitorSort = Literal["-last_seen", "last_seen", "-visits", "-sightings", "-first_seen", "first_seen"]
VISITOR_SORTS: dict[VisitorSort, SortOption[Any]] = {
    "-last_seen": SortOption("last seen, newest first", col(Visitor.last_seen).desc()),
    "last_seen": SortOption("last seen, oldest first", col(Visitor.last_seen)),
    "-visits": SortOption("most visits", col(Visitor.visit_count).desc()),
    "-sightings": SortOption("most sightings", col(Visitor.sighting_count).desc()),
    "-first_seen": SortOption("first seen, newest first", col(Visitor.first_seen).desc()),
    "first_seen": SortOption("first seen, oldest first", col(Visitor.first_seen)),
}


# --- names and links -----------------------------------------------------------------------------------------------


def crop_url(path: str | None) -> str | None:
    return f"/crops/{path}" if path else None


def short_id(value: uuid.UUID) -> str:
    return value.hex[:8]


def visitor_name(visitor: Visitor) -> str:
    return visitor.label or f"Visitor {short_id(visitor.id)}"


@dataclass
class Names:
    """Site and camera names by id (small tables: read whole)."""

    sites: dict[uuid.UUID, str]
    cameras: dict[uuid.UUID, str]

    @classmethod
    def load(cls, session: Session, site_ids: set[uuid.UUID] | None = None) -> Names:
        """With `site_ids`, other sites' and their cameras' names are left out (shown as "")."""
        return cls(
            {s.id: s.name for s in session.exec(select(Site)) if site_ids is None or s.id in site_ids},
            {c.id: c.name for c in session.exec(select(Camera)) if site_ids is None or c.site_id in site_ids},
        )

    def site(self, site_id: uuid.UUID | None) -> str:
        return self.sites.get(site_id, "") if site_id else ""

    def camera(self, camera_id: uuid.UUID | None) -> str:
        return self.cameras.get(camera_id, "") if camera_id else ""


# --- site scope (site managers see only their sites) ---------------------------------------------------------


def site_ids(session: Session, sites: Collection[str] | None) -> set[uuid.UUID] | None:
    """The ids of the named sites (None: every site, no filter)."""
    if sites is None:
        return None
    return set(session.exec(select(Site.id).where(col(Site.name).in_(sorted(sites))))) if sites else set()


def seen_at(ids: set[uuid.UUID]):
    """A filter on Visitor: seen (a visit) at one of these sites."""
    return col(Visitor.id).in_(select(Visit.visitor_id).where(col(Visit.site_id).in_(list(ids))))


def visitor_visible(session: Session, visitor_id: uuid.UUID, ids: set[uuid.UUID] | None) -> bool:
    """The visitor exists and (with a scope) was seen at one of the sites."""
    stmt = select(Visitor.id).where(Visitor.id == visitor_id)
    if ids is not None:
        stmt = stmt.where(seen_at(ids))
    return session.exec(stmt).first() is not None


def scoped_visitors(session: Session, visitors: list[Visitor], ids: set[uuid.UUID] | None) -> list[Visitor]:
    """With a scope, copies of the visitors whose first/last seen and visit and sighting counts are computed from
    their visits and sightings at these sites only (not other sites' numbers); without one, the visitors."""
    if ids is None or not visitors:
        return visitors
    vids, scope = [v.id for v in visitors], list(ids)
    visits = dict(
        session.exec(
            select(Visit.visitor_id, func.count())
            .where(col(Visit.visitor_id).in_(vids), col(Visit.site_id).in_(scope))
            .group_by(Visit.visitor_id)
        ).all()
    )
    sightings = {
        vid: (n, first, last)
        for vid, n, first, last in session.exec(
            select(Sighting.visitor_id, func.count(), func.min(Sighting.first_ts), func.max(Sighting.last_ts))
            .where(col(Sighting.visitor_id).in_(vids), col(Sighting.site_id).in_(scope))
            .group_by(Sighting.visitor_id)
        )
    }
    out = []
    for v in visitors:
        copy = Visitor(**{name: getattr(v, name) for name in Visitor.model_fields})  # detached: never saved
        n, first, last = sightings.get(v.id, (0, None, None))
        copy.visit_count, copy.sighting_count = int(visits.get(v.id, 0)), int(n)
        # SQLite's min/max of a column come back naive: the times are UTC
        copy.first_seen = _aware(first) if first is not None else v.first_seen
        copy.last_seen = _aware(last) if last is not None else v.last_seen
        out.append(copy)
    return out


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def scoped_sort(sort: VisitorSort, ids: set[uuid.UUID]):
    """`VISITOR_SORTS[sort]`'s order computed from the visits and sightings at these sites."""
    scope = list(ids)
    visits = select(func.count()).where(Visit.visitor_id == Visitor.id, col(Visit.site_id).in_(scope))
    in_scope = [Sighting.visitor_id == Visitor.id, col(Sighting.site_id).in_(scope)]
    columns = {
        "visits": visits,
        "sightings": select(func.count()).where(*in_scope),
        "last_seen": select(func.max(Sighting.last_ts)).where(*in_scope),
        "first_seen": select(func.min(Sighting.first_ts)).where(*in_scope),
    }
    value = columns[sort.lstrip("-")].scalar_subquery()
    return value.desc() if sort.startswith("-") else value


def crop_visible(session: Session, crop_path: str, ids: set[uuid.UUID] | None) -> bool:
    """A crop of a sighting at one of the sites (no scope: any crop)."""
    if ids is None:
        return True
    stmt = select(Sighting.id).where(Sighting.crop_path == crop_path, col(Sighting.site_id).in_(list(ids)))
    return session.exec(stmt).first() is not None


# --- visitors ---------------------------------------------------------------------------------------------------


@dataclass
class VisitorPage:
    visitors: list[Visitor]
    references: dict[uuid.UUID, Sighting]  # visitor id -> reference sighting
    total: int
    unassigned: int = 0  # low-quality sightings waiting unassigned (each held apart, never a visitor)


def list_visitors(
    session: Session,
    *,
    q: str = "",
    sort: VisitorSort = "-last_seen",
    offset: int = 0,
    limit: int = 50,
    site_ids: set[uuid.UUID] | None = None,
    unassigned: bool = False,
) -> VisitorPage:
    """Visitors whose label or notes contain `q` (or whose id is `q`), sorted and paged; with `site_ids`, only
    those seen at these sites; with `unassigned`, the held low-quality sightings instead (each in a row of its own
    that founds no visitor)."""
    stmt = select(Visitor).where(col(Visitor.unassigned).is_(unassigned))
    held_stmt = select(func.count()).select_from(Visitor).where(col(Visitor.unassigned).is_(True))
    if site_ids is not None:
        stmt = stmt.where(seen_at(site_ids))
        held_stmt = held_stmt.where(seen_at(site_ids))
    q = q.strip()
    if q:
        try:
            stmt = stmt.where(Visitor.id == uuid.UUID(q))
        except ValueError:
            needle = f"%{q.lower()}%"
            stmt = stmt.where(or_(func.lower(Visitor.label).like(needle), func.lower(Visitor.notes).like(needle)))
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    order = VISITOR_SORTS[sort].order if site_ids is None else scoped_sort(sort, site_ids)
    visitors = list(session.exec(stmt.order_by(order, Visitor.id).offset(offset).limit(limit)))
    visitors = scoped_visitors(session, visitors, site_ids)
    held = session.exec(held_stmt).one()
    refs = {
        vid: ref
        for vid, ref in references(session, visitors).items()
        if site_ids is None or ref.site_id in site_ids  # another site's photo is not theirs to see
    }
    return VisitorPage(visitors, refs, int(total), int(held))


def references(session: Session, visitors: Iterable[Visitor]) -> dict[uuid.UUID, Sighting]:
    ids = {v.reference_sighting_id: v.id for v in visitors if v.reference_sighting_id}
    if not ids:
        return {}
    rows = session.exec(select(Sighting).where(col(Sighting.id).in_(list(ids))))
    return {ids[r.id]: r for r in rows}


def visitor_labels(session: Session, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    ids = list(set(ids))
    if not ids:
        return {}
    return {v.id: v.label for v in session.exec(select(Visitor).where(col(Visitor.id).in_(ids)))}


def sighting_owners(
    session: Session, sighting_ids: Iterable[uuid.UUID], site_ids: set[uuid.UUID] | None = None
) -> set[uuid.UUID]:
    """The visitors the given sightings belong to (unknown ids are ignored); with `site_ids`, a sighting at
    another site counts as owned by nobody visible (None is in the set)."""
    ids = list(set(sighting_ids))
    if not ids:
        return set()
    rows = session.exec(select(Sighting.visitor_id, Sighting.site_id).where(col(Sighting.id).in_(ids)))
    return {v if site_ids is None or site in site_ids else None for v, site in rows}  # type: ignore[misc]


def visits_of(
    session: Session,
    *,
    visitor_id: uuid.UUID | None = None,
    since: datetime | None = None,
    limit: int = 100,
    site_ids: set[uuid.UUID] | None = None,
) -> list[Visit]:
    stmt = select(Visit).order_by(col(Visit.start).desc()).limit(limit)
    if site_ids is not None:
        stmt = stmt.where(col(Visit.site_id).in_(list(site_ids)))
    if visitor_id is not None:
        stmt = stmt.where(Visit.visitor_id == visitor_id)
    if since is not None:
        stmt = stmt.where(Visit.start >= since)
    return list(session.exec(stmt))


@dataclass
class VisitorDetail:
    visitor: Visitor
    reference: Sighting | None
    visits: list[Visit]
    sightings: list[Sighting]  # newest first, one page
    sighting_total: int
    sites: dict[uuid.UUID, str] = field(default_factory=dict)
    cameras: dict[uuid.UUID, str] = field(default_factory=dict)


def visitor_detail(
    session: Session,
    visitor_id: uuid.UUID,
    offset: int = 0,
    limit: int = 100,
    site_ids: set[uuid.UUID] | None = None,
) -> VisitorDetail | None:
    """A visitor with visits and a page of sightings; with `site_ids` only those at these sites (and None when
    the visitor was never seen there)."""
    visitor = session.get(Visitor, visitor_id)
    if visitor is None:
        return None
    where_visit = [Visit.visitor_id == visitor_id]
    where_sighting = [Sighting.visitor_id == visitor_id]
    if site_ids is not None:
        where_visit.append(col(Visit.site_id).in_(list(site_ids)))
        where_sighting.append(col(Sighting.site_id).in_(list(site_ids)))
    visits = list(session.exec(select(Visit).where(*where_visit).order_by(col(Visit.start).desc())))
    if site_ids is not None and not visits:
        return None
    sightings = list(
        session.exec(
            select(Sighting)
            .where(*where_sighting)
            .order_by(col(Sighting.best_ts).desc(), Sighting.id)
            .offset(offset)
            .limit(limit)
        )
    )
    total = session.exec(select(func.count()).select_from(Sighting).where(*where_sighting)).one()
    sites = {s.id: s.name for s in session.exec(select(Site))}
    camera_ids = {s.camera_id for s in sightings}
    cameras = {c.id: c.name for c in session.exec(select(Camera).where(col(Camera.id).in_(camera_ids)))}
    reference = _own_reference(session, visitor, site_ids)
    visitor = scoped_visitors(session, [visitor], site_ids)[0]
    return VisitorDetail(visitor, reference, visits, sightings, int(total), sites, cameras)


def _reference(session: Session, visitor: Visitor) -> Sighting | None:
    return session.get(Sighting, visitor.reference_sighting_id) if visitor.reference_sighting_id else None


def _own_reference(session: Session, visitor: Visitor, ids: set[uuid.UUID] | None) -> Sighting | None:
    """The reference sighting, unless it is of a site outside the scope."""
    reference = _reference(session, visitor)
    return None if reference is None or (ids is not None and reference.site_id not in ids) else reference


def similar_visitors(
    service: CentralService,
    visitor: Visitor,
    limit: int = 6,
    min_score: float = SIMILAR_MIN_SCORE,
    site_ids: set[uuid.UUID] | None = None,
) -> list[tuple[Visitor, float]]:
    """The visitors whose prototypes are nearest this one's (same recognizer, cosine >= min_score): merge
    candidates. Strangers score about 0 with the default recognizer, so they are left out."""
    if not visitor.proto_sum:
        return []
    vector = Prototype.from_bytes(visitor.proto_sum).vector
    hits = [
        (vid, score)
        for vid, score in service.vectors.search_prototypes(visitor.recognizer_id, vector, limit + 1)
        if vid != visitor.id and score >= min_score
    ][:limit]
    with service.session() as s:
        stmt = select(Visitor).where(col(Visitor.id).in_([h[0] for h in hits]))
        if site_ids is not None:
            stmt = stmt.where(seen_at(site_ids))
        rows = {v.id: v for v in scoped_visitors(s, list(s.exec(stmt)), site_ids)}
    return [(rows[vid], score) for vid, score in hits if vid in rows]


# --- loyal customers --------------------------------------------------------------------------------------------


@dataclass
class LoyalRow:
    visitor: Visitor
    site: str
    arrived_today: datetime  # start of the first visit of the day
    visits_before: int  # visits (all sites: days with a visit) in the window before the day
    visits_7d: int  # the same in the 7 days ending with the day, the day included
    visits_window: int  # the same in the window, the day included
    reference: Sighting | None
    today: Sighting | None  # best-quality sighting of the day's visits
    zone: str = "UTC"  # the zone of the site of that sighting: arrival times are shown in it


@dataclass
class LoyalPage:
    rows: list[LoyalRow]
    total: int
    day: date
    min_visits: int
    window_days: int
    zone: str = "UTC"  # the zone whose days count: the site's, or head office's for all sites
    all_sites: bool = True  # then a person counts at most one visit per day of head office's zone


def loyal_customers(
    session: Session,
    *,
    min_visits: int = 3,
    window_days: int = 30,
    as_of: date | None = None,
    now: datetime | None = None,
    timezone: str = "UTC",
    site: str | None = None,
    sites: Collection[str] | None = None,
    sort: LoyalSort = "-arrival",
    offset: int = 0,
    limit: int = 50,
) -> LoyalPage:
    """Visitors seen on day `as_of` AND with at least `min_visits` visits in the `window_days` days before it.

    The day rule: every visit belongs to the local day on which it starts, in its site's zone when one site is in
    scope, in head office's zone (`timezone`) for all sites; "seen today" and "visits before" both use it, so a
    visit past midnight counts once, for the day it began. With all sites in scope a person counts at most one
    visit per day. `as_of` defaults to today in the scope's zone; `sites` restricts the scope to these site names
    (a user's allowed sites). Unassigned low-quality sightings never count.
    """
    now = now or utcnow()
    site_row = session.exec(select(Site).where(Site.name == site)).first() if site else None
    zone = site_zone(site_row, timezone) if site_row else timezone
    day = as_of or local_day(now, zone)
    allowed = site_ids(session, sites)
    empty = LoyalPage([], 0, day, min_visits, window_days, zone, site is None)
    if (site and site_row is None) or (site_row and allowed is not None and site_row.id not in allowed):
        return empty
    first = day - timedelta(days=window_days)
    week = day - timedelta(days=6)
    stmt = (
        select(Visit.id, Visit.visitor_id, Visit.start)
        .join(Visitor, col(Visitor.id) == Visit.visitor_id)
        .where(col(Visitor.unassigned).is_(False))
        .where(Visitor.status == "customer")  # staff and excluded visitors are never loyal customers
        .where(Visit.start >= day_start(first, zone) - timedelta(days=1))  # a day of margin: other sites' zones
        .where(Visit.start < day_start(day + timedelta(days=1), zone) + timedelta(days=1))
    )
    if site_row is not None:
        stmt = stmt.where(Visit.site_id == site_row.id)
    elif allowed is not None:
        stmt = stmt.where(col(Visit.site_id).in_(list(allowed)))
    days: dict[uuid.UUID, list[date]] = defaultdict(list)
    today: dict[uuid.UUID, list[tuple[datetime, uuid.UUID]]] = defaultdict(list)
    for visit_id, visitor_id, start in session.exec(stmt):
        d = local_day(start, zone)
        if first <= d <= day:
            days[visitor_id].append(d)
        if d == day:
            today[visitor_id].append((start, visit_id))

    def count(ds: list[date], lo: date, hi: date) -> int:
        picked = [d for d in ds if lo <= d < hi]
        return len(picked) if site_row is not None else len(set(picked))

    loyal = []
    for visitor_id, visits in today.items():
        before = count(days[visitor_id], first, day)
        if before >= min_visits:
            loyal.append((visitor_id, before, min(visits)[0]))
    visitors = {}
    if loyal:
        ids = [v for v, _, _ in loyal]
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            found = list(session.exec(select(Visitor).where(col(Visitor.id).in_(part))))
            visitors |= {v.id: v for v in scoped_visitors(session, found, allowed)}
    candidates = [LoyalCandidate(v, before, arrival, visitors[v].last_seen) for v, before, arrival in loyal]
    candidates.sort(key=LOYAL_SORTS[sort].order)
    out = []
    for visitor_id, before, arrival, _ in candidates[offset : offset + limit]:
        visitor = visitors[visitor_id]
        today_best = session.exec(
            select(Sighting)
            .where(col(Sighting.visit_id).in_([v for _, v in today[visitor_id]]))
            .order_by(col(Sighting.quality).desc())
        ).first()
        site_row_today = session.get(Site, today_best.site_id) if today_best else None
        site_name = site_row_today.name if site_row_today else ""
        ds = days[visitor_id]
        out.append(
            LoyalRow(
                visitor=visitor,
                site=site_name,
                arrived_today=arrival,
                visits_before=before,
                visits_7d=count(ds, week, day + timedelta(days=1)),
                visits_window=count(ds, first, day + timedelta(days=1)),
                reference=_own_reference(session, visitor, allowed),
                today=today_best,
                zone=site_zone(site_row_today, timezone) if site_row_today else zone,
            )
        )
    return LoyalPage(out, len(loyal), day, min_visits, window_days, zone, site is None)


def frequency_text(visits_7d: int, visits_window: int, window_days: int) -> str:
    week = f"{visits_7d} visit{'s' if visits_7d != 1 else ''} this week"
    return f"{week}, {visits_window} in {window_days} days"


# --- live -------------------------------------------------------------------------------------------------------


def latest_sightings(
    session: Session,
    *,
    since: datetime | None = None,
    camera_id: uuid.UUID | None = None,
    limit: int = 50,
    site_ids: set[uuid.UUID] | None = None,
) -> list[Sighting]:
    """Newest sightings first (the live page); with `site_ids`, only at these sites."""
    stmt = select(Sighting).order_by(col(Sighting.created_at).desc()).limit(limit)
    if site_ids is not None:
        stmt = stmt.where(col(Sighting.site_id).in_(list(site_ids)))
    if since is not None:
        stmt = stmt.where(Sighting.created_at > since)
    if camera_id is not None:
        stmt = stmt.where(Sighting.camera_id == camera_id)
    return list(session.exec(stmt))


# --- sites and devices --------------------------------------------------------------------------------------


def devices_overview(session: Session) -> list[tuple[Site, Device, list[Camera]]]:
    out = []
    for device, site in session.exec(select(Device, Site).join(Site).order_by(Site.name, Device.name)):
        cameras = list(session.exec(select(Camera).where(Camera.device_id == device.id).order_by(Camera.name)))
        out.append((site, device, cameras))
    return out


def device_status(device: Device, now: datetime | None = None) -> str:
    """online / stale (online but silent past STALE_AFTER) / offline / unknown (never sent a status)."""
    now = now or utcnow()
    if device.status_at is None and device.state == "unknown":
        return "unknown" if device.last_seen is None or now - device.last_seen > STALE_AFTER else "online"
    if device.state == "online":
        return "online" if device.last_seen and now - device.last_seen <= STALE_AFTER else "stale"
    return "offline"


@dataclass
class CameraRow:
    camera: Camera
    sightings_today: int
    live_url: str | None  # the edge's live view base for this camera's device, when configured


@dataclass
class DeviceRow:
    site: Site
    device: Device
    status: str
    cameras: list[CameraRow]
    live_base: str | None


@dataclass
class SiteRow:
    site: Site
    devices: list[DeviceRow]
    visits_today: int
    sightings_today: int
    zone: str = "UTC"  # the site's zone (its own, or the global default)
    today: date | None = None  # the site's local day
    dead_letters: int = 0  # messages from the site kept as dead letters, waiting for a replay


def sites_overview(
    session: Session,
    live_urls: Mapping[str, str],
    timezone: str = "UTC",
    now: datetime | None = None,
    site_ids: set[uuid.UUID] | None = None,
) -> list[SiteRow]:
    """Sites with their devices; "today" is each site's own local day (visits by the day they start)."""
    now = now or utcnow()
    rows: dict[uuid.UUID, SiteRow] = {}
    per_camera: dict[uuid.UUID, int] = {}
    for site in session.exec(select(Site).order_by(Site.name)):
        zone = site_zone(site, timezone)
        today, tomorrow = day_bounds(now, zone)
        visits = session.exec(
            select(func.count())
            .select_from(Visit)
            .join(Visitor, col(Visitor.id) == Visit.visitor_id)
            .where(Visit.site_id == site.id, col(Visitor.unassigned).is_(False))
            .where(Visit.start >= today, Visit.start < tomorrow)
        ).one()
        per_camera |= dict(
            session.exec(
                select(Sighting.camera_id, func.count())
                .where(Sighting.site_id == site.id, Sighting.best_ts >= today, Sighting.best_ts < tomorrow)
                .group_by(Sighting.camera_id)
            ).all()
        )
        rows[site.id] = SiteRow(site, [], int(visits), 0, zone, local_day(now, zone))
    for site, device, cameras in devices_overview(session):
        base = live_base(live_urls, site.name, device.name)
        cams = [CameraRow(c, int(per_camera.get(c.id, 0)), base) for c in cameras]
        rows[site.id].devices.append(DeviceRow(site, device, device_status(device, now), cams, base))
        rows[site.id].sightings_today += sum(c.sightings_today for c in cams)
    dead = dict(session.exec(select(DeadLetter.site, func.count()).group_by(DeadLetter.site)).all())
    for row in rows.values():
        row.dead_letters = int(dead.get(row.site.name, 0))
    return [r for r in rows.values() if site_ids is None or r.site.id in site_ids]


def live_base(live_urls: Mapping[str, str], site: str, device: str) -> str | None:
    """The edge live-view base URL configured for "site/device" (or "device"), without a trailing slash."""
    url = live_urls.get(f"{site}/{device}") or live_urls.get(device)
    return url.rstrip("/") if url else None


def camera_live_url(base: str, camera_name: str, ext: Literal["mjpg", "jpg"] = "mjpg") -> str:
    return f"{base}/camera/{quote(camera_name, safe='')}.{ext}"


def camera_source(
    session: Session, live_urls: Mapping[str, str], camera_id: uuid.UUID, site_ids: set[uuid.UUID] | None = None
) -> tuple[Camera, str] | None:
    """A camera and its edge's live base URL, or None when either is unknown (or outside `site_ids`)."""
    camera = session.get(Camera, camera_id)
    if camera is None or (site_ids is not None and camera.site_id not in site_ids):
        return None
    device, site = session.get(Device, camera.device_id), session.get(Site, camera.site_id)
    base = live_base(live_urls, site.name, device.name) if device and site else None
    return (camera, base) if base else None


# --- analytics (staff and excluded visitors are left out of every figure) ----------------------------------------

FREQUENCY_BUCKETS = ("1", "2", "3-5", "6+")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
RETURN_DAYS = 30  # a week's new visitors count as returned when seen again within this many days
MAX_RANGE_DAYS = 366


def counted():
    """The filter of every analytics figure: customers only (staff and excluded visitors are left out), and no
    holder of an unassigned low-quality sighting where the store has those."""
    rule = Visitor.status == "customer"
    unassigned = getattr(Visitor, "unassigned", None)
    return rule if unassigned is None else rule & col(unassigned).is_(False)


def _in_scope(stmt, site_ids: set[uuid.UUID] | None):
    return stmt if site_ids is None else stmt.where(col(Visit.site_id).in_(list(site_ids)))


@dataclass
class DayFigures:
    day: date
    visitors: int  # unique visitors with a visit starting this local day
    new: int  # of them, seen for the first time (in scope) this day
    returning: int
    visits: int


@dataclass
class WeekReturn:
    week: date  # the Monday
    new: int  # visitors first seen (in scope) that week
    returned: int  # of them, seen again on a later day within RETURN_DAYS of their first visit
    complete: bool  # False while the RETURN_DAYS after the week's end have not all passed

    @property
    def rate(self) -> float | None:
        return self.returned / self.new if self.new else None


@dataclass
class Analytics:
    first: date
    last: date  # inclusive
    zone: str
    days: list[DayFigures]
    frequency: dict[str, int]  # visits per visitor in the range -> visitors
    heatmap: list[list[int]]  # [weekday Mon..Sun][hour 0..23] -> arrivals (visit starts)
    weeks: list[WeekReturn]
    visits: int
    visitors: int
    new_visitors: int
    median_dwell_s: float | None

    @property
    def return_rate(self) -> float | None:
        """Returned / new over every week of the range (weeks still open may yet rise)."""
        new = sum(w.new for w in self.weeks)
        return sum(w.returned for w in self.weeks) / new if new else None


def frequency_bucket(visits: int) -> str:
    return "1" if visits <= 1 else "2" if visits == 2 else "3-5" if visits <= 5 else "6+"


def analytics(
    session: Session,
    first: date,
    last: date,
    *,
    timezone: str = "UTC",
    site_ids: set[uuid.UUID] | None = None,
    now: datetime | None = None,
) -> Analytics:
    """The figures of the Analytics page for the local days [first, last] in `timezone`, over the visits at
    `site_ids` (None: every site). Visits belong to the local day on which they start."""
    zone = ZoneInfo(timezone)
    now = now or utcnow()
    lo, _ = day_bounds(datetime.combine(first, datetime.min.time(), zone), timezone)
    hi, _ = day_bounds(datetime.combine(last + timedelta(days=1), datetime.min.time(), zone), timezone)
    horizon = hi + timedelta(days=RETURN_DAYS + 1)
    # first visit ever (in scope) of each customer with a visit in the range
    in_range = _in_scope(select(Visit.visitor_id).where(Visit.start >= lo, Visit.start < hi), site_ids)
    firsts_stmt = _in_scope(
        select(Visit.visitor_id, func.min(Visit.start))
        .join(Visitor, col(Visitor.id) == Visit.visitor_id)
        .where(counted(), col(Visit.visitor_id).in_(in_range))
        .group_by(Visit.visitor_id),
        site_ids,
    )
    dialect = session.get_bind().dialect
    firsts = {v: UTCDateTime().process_result_value(t, dialect) for v, t in session.exec(firsts_stmt)}
    visits_stmt = _in_scope(
        select(Visit.visitor_id, Visit.start, Visit.end)
        .join(Visitor, col(Visitor.id) == Visit.visitor_id)
        .where(counted(), Visit.start >= lo, Visit.start < horizon)
        .order_by(Visit.start),
        site_ids,
    ).execution_options(yield_per=2000)
    n_days = (last - first).days + 1
    per_day: dict[date, set[uuid.UUID]] = {first + timedelta(days=i): set() for i in range(n_days)}
    visits_per_day: dict[date, int] = dict.fromkeys(per_day, 0)
    per_visitor: dict[uuid.UUID, int] = {}
    heat = [[0] * 24 for _ in range(7)]
    dwell: list[float] = []
    later: dict[uuid.UUID, list[date]] = {}
    for visitor_id, start, end in session.exec(visits_stmt):
        local = start.astimezone(zone)
        day = local.date()
        later.setdefault(visitor_id, []).append(day)
        if start >= hi:
            continue
        per_day[day].add(visitor_id)
        visits_per_day[day] += 1
        per_visitor[visitor_id] = per_visitor.get(visitor_id, 0) + 1
        heat[local.weekday()][local.hour] += 1
        dwell.append(max(0.0, (end - start).total_seconds()))
    first_day = {v: t.astimezone(zone).date() for v, t in firsts.items()}
    days = []
    for day, who in per_day.items():
        new = sum(1 for v in who if first_day.get(v) == day)
        days.append(DayFigures(day, len(who), new, len(who) - new, visits_per_day[day]))
    frequency = dict.fromkeys(FREQUENCY_BUCKETS, 0)
    for n in per_visitor.values():
        frequency[frequency_bucket(n)] += 1
    weeks: dict[date, WeekReturn] = {}
    monday = first - timedelta(days=first.weekday())
    while monday <= last:
        done = datetime.combine(monday + timedelta(days=7 + RETURN_DAYS), datetime.min.time(), zone) <= now
        weeks[monday] = WeekReturn(monday, 0, 0, done)
        monday += timedelta(days=7)
    for v, d in first_day.items():
        if not first <= d <= last:
            continue
        week = weeks[d - timedelta(days=d.weekday())]
        week.new += 1
        if any(d < other <= d + timedelta(days=RETURN_DAYS) for other in later.get(v, [])):
            week.returned += 1
    new_total = sum(1 for d in first_day.values() if first <= d <= last)
    median = float(np.median(dwell)) if dwell else None
    return Analytics(
        first,
        last,
        timezone,
        days,
        frequency,
        heat,
        list(weeks.values()),
        len(dwell),
        len(per_visitor),
        new_total,
        median,
    )


def analytics_rows(a: Analytics) -> Iterator[list[Any]]:
    """The analytics as long-format CSV rows: chart, key, column, value (the same numbers as the page)."""
    yield ["chart", "key", "column", "value"]
    yield ["summary", a.first.isoformat(), "first_day", a.first.isoformat()]
    yield ["summary", a.last.isoformat(), "last_day", a.last.isoformat()]
    yield ["summary", "", "visits", a.visits]
    yield ["summary", "", "unique_visitors", a.visitors]
    yield ["summary", "", "new_visitors", a.new_visitors]
    yield ["summary", "", "median_dwell_s", "" if a.median_dwell_s is None else round(a.median_dwell_s, 1)]
    yield ["summary", "", "return_rate", "" if a.return_rate is None else round(a.return_rate, 4)]
    for d in a.days:
        for column in ("visitors", "new", "returning", "visits"):
            yield ["daily", d.day.isoformat(), column, getattr(d, column)]
    for bucket, n in a.frequency.items():
        yield ["frequency", bucket, "visitors", n]
    for wd, hours in enumerate(a.heatmap):
        for hour, n in enumerate(hours):
            yield ["arrivals", WEEKDAYS[wd], f"{hour:02d}", n]
    for w in a.weeks:
        yield ["return", w.week.isoformat(), "new", w.new]
        yield ["return", w.week.isoformat(), "returned", w.returned]
        yield ["return", w.week.isoformat(), "complete", int(w.complete)]


# --- exports (streamed: rows come from the database in chunks, never all at once) -------------------------------

EXPORT_CHUNK = 1000


def visits_rows(
    session: Session, lo: datetime, hi: datetime, site_ids: set[uuid.UUID] | None = None, timezone: str = "UTC"
) -> Iterator[list[Any]]:
    """Visits starting in [lo, hi) at `site_ids`, oldest first, as CSV rows (with a header), read with a
    server-side cursor in chunks."""
    zone = ZoneInfo(timezone)
    names = Names.load(session, site_ids)
    yield ["visit_id", "visitor_id", "label", "status", "site", "start", "end", "local_day", "dwell_s", "sightings"]
    stmt = _in_scope(
        select(Visit, Visitor.label, Visitor.status)
        .join(Visitor, col(Visitor.id) == Visit.visitor_id)
        .where(Visit.start >= lo, Visit.start < hi)
        .order_by(Visit.start, Visit.id),
        site_ids,
    ).execution_options(stream_results=True, yield_per=EXPORT_CHUNK)
    for visit, label, status in session.exec(stmt):
        yield [
            visit.id,
            visit.visitor_id,
            label,
            status,
            names.site(visit.site_id),
            visit.start.isoformat(),
            visit.end.isoformat(),
            visit.start.astimezone(zone).date().isoformat(),
            round((visit.end - visit.start).total_seconds(), 1),
            visit.sighting_count,
        ]


def loyal_rows(pages: Callable[[int, int], Any]) -> Iterator[list[Any]]:
    """The loyal list as CSV rows: `pages(offset, limit)` returns a LoyalPage; read EXPORT_CHUNK rows at a time."""
    yield ["visitor_id", "label", "site", "arrived", "visits_before", "visits_7d", "visits_window"]
    offset = 0
    while True:
        page = pages(offset, EXPORT_CHUNK)
        for r in page.rows:
            yield [
                r.visitor.id,
                r.visitor.label,
                r.site,
                r.arrived_today.isoformat(),
                r.visits_before,
                r.visits_7d,
                r.visits_window,
            ]
        offset += EXPORT_CHUNK
        if not page.rows or offset >= page.total:
            return


def _cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_stream(open_session: Callable[[], Session], rows: Callable[[Session], Iterator[list[Any]]]) -> Iterator[str]:
    """CSV text of `rows(session)` in chunks of lines, the session open only while the response streams."""
    import csv
    import io

    with open_session() as session:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for i, row in enumerate(rows(session)):
            writer.writerow([_cell(v) for v in row])
            if i % 500 == 499:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()


# --- the visitor page ------------------------------------------------------------------------------------------


def visit_frequency(
    session: Session,
    visitor_id: uuid.UUID,
    days: int = 30,
    now: datetime | None = None,
    timezone: str = "UTC",
    site_ids: set[uuid.UUID] | None = None,
) -> list[tuple[date, int]]:
    """Visits started on each of the last `days` local days (oldest first), for the frequency chart; with
    `site_ids`, visits at these sites only."""
    now = now or utcnow()
    zone = ZoneInfo(timezone)
    last = now.astimezone(zone).date()
    first = last - timedelta(days=days - 1)
    counts = dict.fromkeys((first + timedelta(days=i) for i in range(days)), 0)
    since, _ = day_bounds(datetime.combine(first, datetime.min.time(), zone), timezone)
    stmt = _in_scope(select(Visit.start).where(Visit.visitor_id == visitor_id, Visit.start >= since), site_ids)
    for start in session.exec(stmt):
        d = start.astimezone(zone).date()
        if d in counts:
            counts[d] += 1
    return sorted(counts.items())


def visits_per_week(
    session: Session,
    visitor_id: uuid.UUID,
    weeks: int = 12,
    now: datetime | None = None,
    timezone: str = "UTC",
    site_ids: set[uuid.UUID] | None = None,
) -> list[tuple[date, int]]:
    """Visits started in each of the last `weeks` local weeks (Monday first), oldest first."""
    zone = ZoneInfo(timezone)
    today = (now or utcnow()).astimezone(zone).date()
    last_monday = today - timedelta(days=today.weekday())
    first = last_monday - timedelta(weeks=weeks - 1)
    counts = {first + timedelta(weeks=i): 0 for i in range(weeks)}
    since, _ = day_bounds(datetime.combine(first, datetime.min.time(), zone), timezone)
    stmt = _in_scope(select(Visit.start).where(Visit.visitor_id == visitor_id, Visit.start >= since), site_ids)
    for start in session.exec(stmt):
        d = start.astimezone(zone).date()
        monday = d - timedelta(days=d.weekday())
        if monday in counts:
            counts[monday] += 1
    return sorted(counts.items())


@dataclass
class SiteVisits:
    site: str
    visits: int
    first: datetime
    last: datetime


def sites_visited(session: Session, visitor_id: uuid.UUID, site_ids: set[uuid.UUID] | None = None) -> list[SiteVisits]:
    """The sites a visitor was seen at: visits, first and last visit start (most visits first)."""
    stmt = _in_scope(
        select(Site.name, func.count(), func.min(Visit.start), func.max(Visit.start))
        .join(Site, col(Site.id) == Visit.site_id)
        .where(Visit.visitor_id == visitor_id)
        .group_by(Site.name),
        site_ids,
    )
    dialect = session.get_bind().dialect
    t = UTCDateTime()
    rows = [
        SiteVisits(name, int(n), t.process_result_value(a, dialect), t.process_result_value(b, dialect))
        for name, n, a, b in session.exec(stmt)
    ]
    return sorted(rows, key=lambda r: (-r.visits, r.site))


@dataclass
class Bar:
    day: date
    count: int
    x: float
    y: float
    height: float


def frequency_bars(counts: list[tuple[date, int]], width: float = 300, height: float = 60) -> list[Bar]:
    """Bar geometry of the visit-frequency SVG (one bar per day, scaled to the busiest day)."""
    if not counts:
        return []
    peak = max(1, max(n for _, n in counts))
    step = width / len(counts)
    bars = []
    for i, (day, n) in enumerate(counts):
        h = (height - 2) * n / peak
        bars.append(Bar(day, n, round(i * step + 1, 2), round(height - h, 2), round(h, 2)))
    return bars

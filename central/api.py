"""The pages' data as JSON under /api/v1 (OpenAPI at /docs).

Authentication: the pages' session cookie (log in at /login; writes also need the session's CSRF token in the
`X-CSRF-Token` header, which GET /api/v1/me returns), or an API token (`Authorization: Bearer rvt_...`, made by an
admin on /admin/users; no CSRF token). Without either every route answers 401; a role without the route's
permission gets 403 (`auth.ACCESS`). Site managers' tokens and sessions see only their sites: other visitors are
404, lists leave them out. Offsets are at most 10^7 and times within 1970..2200 (422 otherwise).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from revisit.central import queries
from revisit.central.auth import CSRFChecked, CurrentUser, ServiceDep, csrf_token
from revisit.central.bounds import BoundedDate, BoundedTime, Offset
from revisit.central.clustering import ClusterError
from revisit.central.pages import (
    analytics_window,
    audit_details,
    scoped_site,
    visible_or_404,
)
from revisit.central.store import Sighting, Visit, Visitor
from revisit.shared.errors import NotFound

router = APIRouter(prefix="/api/v1", tags=["api"], dependencies=[CSRFChecked])


# --- response models ---------------------------------------------------------------------------------------


class VisitorOut(BaseModel):
    id: uuid.UUID
    label: str
    notes: str
    recognizer_id: str
    site: str  # site of the first sighting
    first_seen: datetime
    last_seen: datetime
    visit_count: int
    sighting_count: int
    status: str = "customer"  # customer, staff or excluded (staff and excluded leave loyal list and analytics)
    reference_sighting_id: uuid.UUID | None
    reference_crop_url: str | None
    url: str
    unassigned: bool = False  # a held low-quality sighting, not a visitor

    @classmethod
    def of(cls, v: Visitor, names: queries.Names, reference: Sighting | None) -> VisitorOut:
        return cls(
            id=v.id,
            label=v.label,
            notes=v.notes,
            recognizer_id=v.recognizer_id,
            site=names.site(v.site_id),
            first_seen=v.first_seen,
            last_seen=v.last_seen,
            visit_count=v.visit_count,
            sighting_count=v.sighting_count,
            status=v.status,
            reference_sighting_id=v.reference_sighting_id,
            reference_crop_url=queries.crop_url(reference.crop_path) if reference else None,
            url=f"/visitors/{v.id}",
            unassigned=v.unassigned,
        )


class SightingOut(BaseModel):
    id: uuid.UUID
    observation_id: uuid.UUID
    visitor_id: uuid.UUID
    visitor_label: str = ""
    visit_id: uuid.UUID | None
    site: str
    camera: str
    camera_id: uuid.UUID
    track_id: int
    first_ts: datetime
    last_ts: datetime
    best_ts: datetime
    quality: float
    crop_url: str | None
    recognizer_id: str
    created_at: datetime

    @classmethod
    def of(cls, s: Sighting, names: queries.Names, label: str = "") -> SightingOut:
        return cls(
            id=s.id,
            observation_id=s.observation_id,
            visitor_id=s.visitor_id,
            visitor_label=label,
            visit_id=s.visit_id,
            site=names.site(s.site_id),
            camera=names.camera(s.camera_id),
            camera_id=s.camera_id,
            track_id=s.track_id,
            first_ts=s.first_ts,
            last_ts=s.last_ts,
            best_ts=s.best_ts,
            quality=s.quality,
            crop_url=queries.crop_url(s.crop_path),
            recognizer_id=s.recognizer_id,
            created_at=s.created_at,
        )


class VisitOut(BaseModel):
    id: uuid.UUID
    visitor_id: uuid.UUID
    site: str
    start: datetime
    end: datetime
    sighting_count: int

    @classmethod
    def of(cls, v: Visit, names: queries.Names) -> VisitOut:
        return cls(
            id=v.id,
            visitor_id=v.visitor_id,
            site=names.site(v.site_id),
            start=v.start,
            end=v.end,
            sighting_count=v.sighting_count,
        )


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


class DayCount(BaseModel):
    day: date
    visits: int


class VisitorDetailOut(BaseModel):
    visitor: VisitorOut
    visits: list[VisitOut]
    sightings: Page[SightingOut]
    frequency_30d: list[DayCount]


class LoyalOut(BaseModel):
    visitor: VisitorOut
    site: str
    arrived_today: datetime
    visits_before: int
    visits_7d: int
    visits_window: int
    frequency: str
    today_crop_url: str | None


class LoyalPageOut(BaseModel):
    items: list[LoyalOut]
    total: int
    day: date
    min_visits: int
    window_days: int
    offset: int
    limit: int
    zone: str = Field(description="the zone whose days count: the site's, or head office's for all sites")
    all_sites: bool = Field(description="all sites: a person counts at most one visit per day of `zone`")


class CameraOut(BaseModel):
    id: uuid.UUID
    name: str
    last_seen: datetime | None
    sightings_today: int
    live_url: str | None  # central's relay of the edge's MJPEG view


class DeviceOut(BaseModel):
    id: uuid.UUID
    site: str
    name: str
    status: str  # online, stale, offline, unknown
    state: str  # as last reported
    version: str
    last_seen: datetime | None
    status_at: datetime | None
    observations: int
    rejected: int  # messages rejected for good (invalid) on this device's topics
    stats: dict[str, Any]
    cameras: list[CameraOut]


class SiteOut(BaseModel):
    id: uuid.UUID
    name: str
    timezone: str = Field(description="the site's IANA zone (its own, or loyal.timezone)")
    today: date | None = Field(None, description="the site's local day that 'today' counts")
    visits_today: int
    sightings_today: int
    devices: list[DeviceOut]


class Me(BaseModel):
    user: str
    role: str
    sites: list[str] | None = Field(description="the sites this user may see; null: all")
    csrf_token: str | None = Field(description="send as X-CSRF-Token on writes (sessions only; tokens need none)")


class VisitorPatch(BaseModel):
    label: str | None = Field(None, max_length=200)
    notes: str | None = Field(None, max_length=10_000)
    status: Literal["customer", "staff", "excluded"] | None = Field(
        None, description="staff and excluded visitors leave the loyal list and the analytics (reversible)"
    )


class MergeIn(BaseModel):
    other: uuid.UUID = Field(description="this visitor is merged into the one of the path, then deleted")


class SplitIn(BaseModel):
    sighting_ids: list[uuid.UUID] = Field(min_length=1, max_length=10_000)


class EraseOut(BaseModel):
    erased: uuid.UUID
    sightings: int
    crops: int
    visits: int


# --- routes ------------------------------------------------------------------------------------------------


def _cluster_call(action: Any) -> Any:
    try:
        return action()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except ClusterError as exc:
        raise HTTPException(409, str(exc)) from None


def _visitor_out(service: Any, visitor_id: uuid.UUID, user: Any) -> VisitorOut:
    with service.session() as s:
        v = s.get(Visitor, visitor_id)
        if v is None:
            raise HTTPException(404, f"no visitor {visitor_id}")
        ids = queries.site_ids(s, user.sites)
        names = queries.Names.load(s, ids)
        reference = queries.references(s, [v]).get(v.id)
        if reference is not None and ids is not None and reference.site_id not in ids:
            reference = None  # another site's photo
        return VisitorOut.of(queries.scoped_visitors(s, [v], ids)[0], names, reference)


@router.get("/me")
def me(request: Request, user: CurrentUser) -> Me:
    """The logged-in user (or token), its role and sites, and the CSRF token that writes must send."""
    sites = sorted(user.sites) if user.sites is not None else None
    token = csrf_token(request) if user.kind == "session" else None
    return Me(user=user.name, role=user.role, sites=sites, csrf_token=token)


@router.get("/visitors")
def list_visitors(
    service: ServiceDep,
    user: CurrentUser,
    q: Annotated[str, Query(max_length=200, description="label or notes contain this; or a visitor id")] = "",
    sort: queries.VisitorSort = "-last_seen",
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    unassigned: Annotated[bool, Query(description="the held low-quality sightings instead of visitors")] = False,
) -> Page[VisitorOut]:
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        page = queries.list_visitors(s, q=q, sort=sort, offset=offset, limit=limit, site_ids=ids, unassigned=unassigned)
        names = queries.Names.load(s, queries.site_ids(s, user.sites))
    items = [VisitorOut.of(v, names, page.references.get(v.id)) for v in page.visitors]
    return Page[VisitorOut](items=items, total=page.total, offset=offset, limit=limit)


@router.get("/visitors/{visitor_id}")
def get_visitor(
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="of the sightings, newest first")] = 0,
    limit: Annotated[int, Query(ge=0, le=1000)] = 100,
) -> VisitorDetailOut:
    with service.session() as s:
        d = queries.visitor_detail(s, visitor_id, offset=offset, limit=limit, site_ids=queries.site_ids(s, user.sites))
        if d is None:
            raise HTTPException(404, f"no visitor {visitor_id}")
        names = queries.Names.load(s, queries.site_ids(s, user.sites))
        freq = queries.visit_frequency(
            s, visitor_id, days=30, timezone=service.config.loyal.timezone, site_ids=queries.site_ids(s, user.sites)
        )
    return VisitorDetailOut(
        visitor=VisitorOut.of(d.visitor, names, d.reference),
        visits=[VisitOut.of(v, names) for v in d.visits],
        sightings=Page[SightingOut](
            items=[SightingOut.of(x, names, d.visitor.label) for x in d.sightings],
            total=d.sighting_total,
            offset=offset,
            limit=limit,
        ),
        frequency_30d=[DayCount(day=day, visits=n) for day, n in freq],
    )


@router.patch("/visitors/{visitor_id}")
def patch_visitor(service: ServiceDep, user: CurrentUser, visitor_id: uuid.UUID, body: VisitorPatch) -> VisitorOut:
    visible_or_404(service, user, visitor_id)
    if body.label is not None or body.notes is not None:
        _cluster_call(lambda: service.clusterer.update_visitor(visitor_id, label=body.label, notes=body.notes))
        audit_details(service, user.actor, visitor_id, body.label, body.notes)
    if body.status is not None:
        _cluster_call(lambda: service.clusterer.set_status([visitor_id], body.status, actor=user.actor))
    return _visitor_out(service, visitor_id, user)


@router.post("/visitors/{visitor_id}/merge")
def merge_visitor(service: ServiceDep, user: CurrentUser, visitor_id: uuid.UUID, body: MergeIn) -> VisitorOut:
    """Merge `other` into this visitor (this one keeps its id)."""
    visible_or_404(service, user, visitor_id)
    visible_or_404(service, user, body.other)
    _cluster_call(lambda: service.clusterer.merge(visitor_id, body.other, actor=user.actor))
    return _visitor_out(service, visitor_id, user)


@router.post("/visitors/{visitor_id}/split")
def split_visitor(service: ServiceDep, user: CurrentUser, visitor_id: uuid.UUID, body: SplitIn) -> VisitorOut:
    """Move these sightings of this visitor to a new visitor; returns the new one."""
    visible_or_404(service, user, visitor_id)
    with service.session() as s:
        owners = queries.sighting_owners(s, body.sighting_ids, queries.site_ids(s, user.sites))
    if owners - {visitor_id}:
        raise HTTPException(409, "split: some sightings belong to another visitor")
    new = _cluster_call(lambda: service.clusterer.split(body.sighting_ids, actor=user.actor))
    return _visitor_out(service, new.id, user)


@router.post("/sightings/{sighting_id}/not-this-person")
def not_this_person(service: ServiceDep, user: CurrentUser, sighting_id: uuid.UUID) -> VisitorOut:
    """This sighting is someone else: it becomes a new visitor (returned) and never rejoins the old one."""
    with service.session() as s:
        row = s.get(Sighting, sighting_id)
        scope = queries.site_ids(s, user.sites)
    if row is None or (scope is not None and row.site_id not in scope):
        raise HTTPException(404, f"no sighting {sighting_id}")
    new = _cluster_call(lambda: service.clusterer.not_this_person(sighting_id, actor=user.actor))
    return _visitor_out(service, new.id, user)


@router.delete("/visitors/{visitor_id}")
def erase_visitor(
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    reason: Annotated[str, Query(max_length=500)] = "",
) -> EraseOut:
    """Erase a visitor everywhere (rows, vectors, crops); the erasure is written to the audit log."""
    visible_or_404(service, user, visitor_id)
    counts = _cluster_call(lambda: service.clusterer.erase_visitor(visitor_id, actor=user.actor, reason=reason))
    return EraseOut(erased=visitor_id, **counts)


@router.get("/sightings")
def list_sightings(
    service: ServiceDep,
    user: CurrentUser,
    since: Annotated[BoundedTime | None, Query(description="only those stored after this (created_at)")] = None,
    camera_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[SightingOut]:
    """The newest sightings first (the live page polls this with `since`)."""
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        rows = queries.latest_sightings(s, since=since, camera_id=camera_id, limit=limit, site_ids=ids)
        names = queries.Names.load(s, queries.site_ids(s, user.sites))
        labels = queries.visitor_labels(s, (r.visitor_id for r in rows))
    return [SightingOut.of(r, names, labels.get(r.visitor_id, "")) for r in rows]


@router.get("/visits")
def list_visits(
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID | None = None,
    since: Annotated[BoundedTime | None, Query(description="visits that started at or after this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[VisitOut]:
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        rows = queries.visits_of(s, visitor_id=visitor_id, since=since, limit=limit, site_ids=ids)
        names = queries.Names.load(s, queries.site_ids(s, user.sites))
    return [VisitOut.of(v, names) for v in rows]


@router.get("/loyal")
def loyal(
    service: ServiceDep,
    user: CurrentUser,
    min_visits: Annotated[int | None, Query(ge=1, le=1000, description="visits before today")] = None,
    window_days: Annotated[int | None, Query(ge=1, le=3650)] = None,
    site: Annotated[str | None, Query(max_length=64)] = None,
    as_of: Annotated[
        BoundedDate | None, Query(description="the day (YYYY-MM-DD); default today in the site's zone")
    ] = None,
    sort: queries.LoyalSort = "-arrival",
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> LoyalPageOut:
    """Loyal customers: seen on `as_of` and with at least `min_visits` visits before it in `window_days`.
    A site manager's list is of one of their sites (`site`, default their first).

    A visit belongs to the local day on which it starts: the site's zone for one site, head office's zone
    (`loyal.timezone`) for all sites, where a person counts at most one visit per day."""
    cfg = service.config.loyal
    min_visits, window_days = min_visits or cfg.min_visits, window_days or cfg.window_days
    site = scoped_site(user, site or "") or None
    with service.session() as s:
        page = queries.loyal_customers(
            s,
            min_visits=min_visits,
            window_days=window_days,
            as_of=as_of,
            timezone=cfg.timezone,
            site=site or None,
            sort=sort,
            offset=offset,
            limit=limit,
        )
        names = queries.Names.load(s, queries.site_ids(s, user.sites))
    items = [
        LoyalOut(
            visitor=VisitorOut.of(r.visitor, names, r.reference),
            site=r.site,
            arrived_today=r.arrived_today,
            visits_before=r.visits_before,
            visits_7d=r.visits_7d,
            visits_window=r.visits_window,
            frequency=queries.frequency_text(r.visits_7d, r.visits_window, window_days),
            today_crop_url=queries.crop_url(r.today.crop_path) if r.today else None,
        )
        for r in page.rows
    ]
    return LoyalPageOut(
        items=items,
        total=page.total,
        day=page.day,
        min_visits=min_visits,
        window_days=window_days,
        offset=offset,
        limit=limit,
        zone=page.zone,
        all_sites=page.all_sites,
    )


@router.get("/sites")
def list_sites(request: Request, service: ServiceDep, user: CurrentUser) -> list[SiteOut]:
    """Sites with their devices (status from heartbeats, counters) and cameras."""
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        rows = queries.sites_overview(s, request.app.state.live_urls, service.config.loyal.timezone, site_ids=ids)
    return [
        SiteOut(
            id=r.site.id,
            name=r.site.name,
            timezone=r.zone,
            today=r.today,
            visits_today=r.visits_today,
            sightings_today=r.sightings_today,
            devices=[_device_out(d) for d in r.devices],
        )
        for r in rows
    ]


@router.get("/devices")
def list_devices(request: Request, service: ServiceDep, user: CurrentUser) -> list[DeviceOut]:
    return [d for site in list_sites(request, service, user) for d in site.devices]


def _device_out(d: queries.DeviceRow) -> DeviceOut:
    dev = d.device
    cameras = [
        CameraOut(
            id=c.camera.id,
            name=c.camera.name,
            last_seen=c.camera.last_seen,
            sightings_today=c.sightings_today,
            live_url=f"/live/camera/{c.camera.id}.mjpg" if c.live_url else None,
        )
        for c in d.cameras
    ]
    return DeviceOut(
        id=dev.id,
        site=d.site.name,
        name=dev.name,
        status=d.status,
        state=dev.state,
        version=dev.version,
        last_seen=dev.last_seen,
        status_at=dev.status_at,
        observations=dev.observations,
        rejected=dev.rejected,
        stats=dict(dev.stats or {}),
        cameras=cameras,
    )


# --- analytics -------------------------------------------------------------------------------------------------


class DayOut(BaseModel):
    day: date
    visitors: int
    new: int
    returning: int
    visits: int


class WeekReturnOut(BaseModel):
    week: date
    new: int
    returned: int
    rate: float | None
    complete: bool = Field(description="false while the 30 days after the week's end have not all passed")


class AnalyticsOut(BaseModel):
    first: date
    last: date
    site: str | None
    timezone: str
    visits: int
    unique_visitors: int
    new_visitors: int
    median_dwell_s: float | None
    return_rate: float | None = Field(description="returned / new over the weeks of the range")
    days: list[DayOut]
    frequency: dict[str, int] = Field(description="visits in the range per visitor (1, 2, 3-5, 6+) -> visitors")
    arrivals: list[list[int]] = Field(description="[weekday Mon..Sun][hour 0..23] -> visits started")
    weeks: list[WeekReturnOut]


@router.get("/analytics")
def get_analytics(
    service: ServiceDep,
    user: CurrentUser,
    start: Annotated[BoundedDate | None, Query(description="first local day (default: 27 days before end)")] = None,
    end: Annotated[BoundedDate | None, Query(description="last local day, included (default: today)")] = None,
    site: Annotated[str, Query(max_length=64, description="one site; empty: all (a site manager's: theirs)")] = "",
) -> AnalyticsOut:
    """The Analytics page's figures: customers only (staff and excluded visitors are left out)."""
    with service.session() as s:
        ids, tz, first, last = analytics_window(s, user, site, start, end, service.config.loyal.timezone)
        a = queries.analytics(s, first, last, timezone=tz, site_ids=ids)
    return AnalyticsOut(
        first=a.first,
        last=a.last,
        site=site or None,
        timezone=a.zone,
        visits=a.visits,
        unique_visitors=a.visitors,
        new_visitors=a.new_visitors,
        median_dwell_s=a.median_dwell_s,
        return_rate=a.return_rate,
        days=[DayOut(**d.__dict__) for d in a.days],
        frequency=a.frequency,
        arrivals=a.heatmap,
        weeks=[
            WeekReturnOut(week=w.week, new=w.new, returned=w.returned, rate=w.rate, complete=w.complete)
            for w in a.weeks
        ],
    )

"""The head-office pages (Jinja, server-rendered; a little vanilla JS in static/app.js).

    /live                         cameras' live views (proxied from the edges) and the newest crops (polling)
    /loyal                        loyal customers: seen today and at least X visits before today in a window
    /visitors                     every visitor, searchable; merge selected
    /visitors/{id}                timeline, crops, frequency chart, label/notes, merge, split, not this person, erase
    /sites                        sites and devices: status from heartbeats, last seen, counters
    /analytics                    per site or all: visitors per day, new vs returning, frequency, arrivals, dwell,
                                  return rate (server-side SVG charts with their numbers as tables and CSV)
    /exports/{loyal,visits,analytics}.csv   streamed CSV (audit-logged)
    /crops/{ab}/{hex}.jpg         crop files (only CropStore names; everything else is 404)
    /live/camera/{id}.mjpg|.jpg   the edge's live view relayed by central (login required here, none on the edge)

Every route needs a login with the "sites" permission (`auth.ACCESS`); every POST a CSRF token. Site managers see
only their sites: other visitors are not found (404), lists and the live view leave them out. Edits go through
the clusterer, which writes the audit log (label and notes edits are logged here).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import pass_context
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

from revisit.central import charts, queries
from revisit.central.auth import CSRFChecked, CurrentUser, ServiceDep, can, flash, templates
from revisit.central.bounds import BoundedDate, bounded_date
from revisit.central.clustering import ClusterError
from revisit.central.store import VISITOR_STATUSES as STATUSES
from revisit.central.store import (
    AuditLog,
    Sighting,
    Site,
    StoreError,
    Visitor,
    site_zone,
    utcnow,
    zone_info,
)
from revisit.shared.errors import NotFound

log = logging.getLogger(__name__)

router = APIRouter(dependencies=[CSRFChecked], include_in_schema=False)

LOYAL_PAGE_SIZE = 24
VISITORS_PAGE_SIZE = 48
GALLERY_PAGE_SIZE = 60
LIVE_CROPS = 30
MAX_LIVE_STREAMS = 16  # relayed MJPEG streams at once (each holds a connection to an edge)


# --- template helpers --------------------------------------------------------------------------------------


def _zone(request: Request) -> ZoneInfo:
    return zone_info(request.app.state.service.config.loyal.timezone)


@pass_context
def _localtime(context: Any, value: datetime | None, fmt: str = "%Y-%m-%d %H:%M", zone: str | None = None) -> str:
    """`value` in `zone` (a site's), else head office's zone."""
    if not value:
        return ""
    return value.astimezone(zone_info(zone) if zone else _zone(context["request"])).strftime(fmt)


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = max(0, int((utcnow() - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


@pass_context
def _demo_banner(context: Any) -> bool:
    """True when the app serves a database seeded by `revisit demo` (the banner marks demo data)."""
    return bool(getattr(context["request"].app.state, "demo_data", False))


templates.env.filters.update(localtime=_localtime, ago=_ago)
templates.env.globals.update(demo_banner=_demo_banner)
templates.env.globals.update(crop_url=queries.crop_url, short_id=queries.short_id, visitor_name=queries.visitor_name)


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _live_urls(request: Request) -> Mapping[str, str]:
    return request.app.state.live_urls


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# --- pages ---------------------------------------------------------------------------------------------------


@router.get("/")
def home(user: CurrentUser) -> Response:
    return _back("/events" if user.role == "event_staff" else "/loyal")


@router.get("/live")
def live(request: Request, service: ServiceDep, user: CurrentUser) -> Response:
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        sites = queries.sites_overview(s, _live_urls(request), service.config.loyal.timezone, site_ids=ids)
        crops = queries.latest_sightings(s, limit=LIVE_CROPS, site_ids=ids)
        names = queries.Names.load(s, ids)
        labels = queries.visitor_labels(s, (c.visitor_id for c in crops))
    since = crops[0].created_at.isoformat() if crops else ""
    context = {"sites": sites, "crops": crops, "names": names, "labels": labels, "since": since}
    return _render(request, "live.html", context)


@router.get("/loyal")
def loyal(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    min_visits: Annotated[int | None, Query(ge=1, le=1000)] = None,
    window_days: Annotated[int | None, Query(ge=1, le=3650)] = None,
    site: Annotated[str, Query(max_length=64)] = "",
    as_of: Annotated[str, Query(max_length=10, description="YYYY-MM-DD; default today in the site's zone")] = "",
    sort: queries.LoyalSort = "-arrival",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    cfg = service.config.loyal
    min_visits = min_visits or cfg.min_visits
    window_days = window_days or cfg.window_days
    site = scoped_site(user, site)
    try:
        day = bounded_date(date.fromisoformat(as_of)) if as_of else None
    except ValueError:
        raise HTTPException(422, "as_of: a date as YYYY-MM-DD, 1970..2200") from None
    with service.session() as s:
        result = queries.loyal_customers(
            s,
            min_visits=min_visits,
            window_days=window_days,
            as_of=day,
            timezone=cfg.timezone,
            site=site or None,
            sort=sort,
            offset=(page - 1) * LOYAL_PAGE_SIZE,
            limit=LOYAL_PAGE_SIZE,
        )
        sites = [n for n in s.exec(select(Site.name).order_by(Site.name)) if user.sees_site(n)]
    pages = max(1, -(-result.total // LOYAL_PAGE_SIZE))
    query = {"min_visits": min_visits, "window_days": window_days, "site": site, "as_of": as_of, "sort": sort}
    context = {
        "result": result,
        "sites": sites,
        "query": query,
        "sorts": queries.LOYAL_SORTS,
        "page": page,
        "pages": pages,
        "frequency": queries.frequency_text,
        "head_office_zone": cfg.timezone,
    }
    return _render(request, "loyal.html", context)


@router.get("/visitors")
def visitors(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    q: Annotated[str, Query(max_length=200)] = "",
    sort: queries.VisitorSort = "-last_seen",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    unassigned: bool = False,
) -> Response:
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        result = queries.list_visitors(
            s,
            q=q,
            sort=sort,
            offset=(page - 1) * VISITORS_PAGE_SIZE,
            limit=VISITORS_PAGE_SIZE,
            site_ids=ids,
            unassigned=unassigned,
        )
        names = queries.Names.load(s, ids)
    pages = max(1, -(-result.total // VISITORS_PAGE_SIZE))
    context = {
        "result": result,
        "names": names,
        "q": q,
        "sort": sort,
        "unassigned": unassigned,
        "sorts": queries.VISITOR_SORTS,
        "page": page,
        "pages": pages,
    }
    return _render(request, "visitors.html", context)


@router.post("/visitors/merge")
def merge_selected(
    request: Request, service: ServiceDep, user: CurrentUser, visitor_ids: Annotated[list[uuid.UUID], Form()]
) -> Response:
    """Merge the selected visitors into the one seen first (it keeps its id, label and history)."""
    ids = list(dict.fromkeys(visitor_ids))
    if len(ids) < 2:
        flash(request, "Select at least two visitors to merge.", "error")
        return _back("/visitors")
    with service.session() as s:
        scope = queries.site_ids(s, user.sites)
        found = (s.get(Visitor, i) for i in ids)
        rows = [v for v in found if v is not None and queries.visitor_visible(s, v.id, scope)]
    if len(rows) < 2:
        raise HTTPException(404, "visitor not found")
    target, *others = sorted(rows, key=lambda v: v.first_seen)
    try:
        for other in others:
            service.clusterer.merge(target.id, other.id, actor=user.actor)
    except ClusterError as exc:
        flash(request, str(exc), "error")
        return _back("/visitors")
    flash(request, f"Merged {len(others)} visitor(s) into {queries.visitor_name(target)}.")
    return _back(f"/visitors/{target.id}")


@router.get("/visitors/{visitor_id}")
def visitor(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    tz = service.config.loyal.timezone
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        detail = queries.visitor_detail(
            s, visitor_id, offset=(page - 1) * GALLERY_PAGE_SIZE, limit=GALLERY_PAGE_SIZE, site_ids=ids
        )
        if detail is None:
            raise HTTPException(404, "no such visitor (merged or erased?)")
        counts = queries.visit_frequency(s, visitor_id, days=30, timezone=tz, site_ids=ids)
        weekly = queries.visits_per_week(s, visitor_id, weeks=12, timezone=tz, site_ids=ids)
        visited = queries.sites_visited(s, visitor_id, site_ids=ids)
    try:
        similar = queries.similar_visitors(service, detail.visitor, site_ids=ids)
    except Exception:  # merge suggestions are optional: the page works without the vector index
        log.warning("merge suggestions for %s failed", visitor_id, exc_info=True)
        similar = []
    pages = max(1, -(-detail.sighting_total // GALLERY_PAGE_SIZE))
    context = {
        "d": detail,
        "v": detail.visitor,
        "bars": queries.frequency_bars(counts),
        "similar": similar,
        "page": page,
        "pages": pages,
        "visits_30d": sum(n for _, n in counts),
        "weekly": weekly,
        "weekly_chart": charts.bars(
            [d.strftime("%d %b") for d, _ in weekly],
            [("visits", [n for _, n in weekly])],
            label="visits per week, last 12 weeks",
            cls="weekly",
            height=140,
            max_ticks=6,
        ),
        "visited": visited,
        "statuses": STATUSES,
    }
    return _render(request, "visitor.html", context)


@router.post("/visitors/status")
def status_selected(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    status: Annotated[str, Form(max_length=16)],
    visitor_ids: Annotated[list[uuid.UUID], Form(max_length=10_000)] = [],  # noqa: B006 - FastAPI copies defaults
) -> Response:
    """Mark the selected visitors as staff, excluded or customers again (the visitors grid)."""
    if not visitor_ids:
        flash(request, "Select visitors first.", "error")
        return _back("/visitors")
    for vid in visitor_ids:
        visible_or_404(service, user, vid)
    try:
        n = service.clusterer.set_status(visitor_ids, status, actor=user.actor)
    except ClusterError as exc:
        flash(request, str(exc), "error")
    else:
        flash(request, f"{n} visitor(s) marked {status}.")
    return _back(_visitors_referer(request))


@router.post("/visitors/{visitor_id}/status")
def set_status(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    status: Annotated[str, Form(max_length=16)],
) -> Response:
    visible_or_404(service, user, visitor_id)
    message = (
        "Marked as a customer again."
        if status == "customer"
        else (f"Marked as {status}: left out of the loyal list and the analytics.")
    )
    _edit(request, lambda: service.clusterer.set_status([visitor_id], status, actor=user.actor), message)
    return _back(f"/visitors/{visitor_id}")


@router.post("/visitors/{visitor_id}/details")
def save_details(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    label: Annotated[str, Form(max_length=200)] = "",
    notes: Annotated[str, Form(max_length=10_000)] = "",
) -> Response:
    visible_or_404(service, user, visitor_id)
    if _edit(request, lambda: service.clusterer.update_visitor(visitor_id, label=label, notes=notes), "Saved."):
        audit_details(service, user.actor, visitor_id, label, notes)
    return _back(f"/visitors/{visitor_id}")


@router.post("/visitors/{visitor_id}/merge")
def merge(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    other: Annotated[str, Form(max_length=100)],
) -> Response:
    """Merge `other` (a visitor id) into this visitor."""
    visible_or_404(service, user, visitor_id)
    try:
        other_id = uuid.UUID(other.strip())
    except ValueError:
        flash(request, f"Not a visitor id: {other[:40]!r}", "error")
        return _back(f"/visitors/{visitor_id}")
    visible_or_404(service, user, other_id)
    _edit(
        request,
        lambda: service.clusterer.merge(visitor_id, other_id, actor=user.actor),
        f"Visitor {queries.short_id(other_id)} merged into this one.",
    )
    return _back(f"/visitors/{visitor_id}")


@router.post("/visitors/{visitor_id}/split")
def split(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    sighting_ids: Annotated[list[uuid.UUID], Form(max_length=10_000)] = [],  # noqa: B006 - FastAPI copies defaults
) -> Response:
    if not sighting_ids:
        flash(request, "Select the sightings to split off first.", "error")
        return _back(f"/visitors/{visitor_id}")
    visible_or_404(service, user, visitor_id)
    with service.session() as s:
        owners = queries.sighting_owners(s, sighting_ids, queries.site_ids(s, user.sites))
    if owners != {visitor_id}:
        flash(request, "Only this visitor's sightings can be split off here.", "error")
        return _back(f"/visitors/{visitor_id}")
    new = _edit(request, lambda: service.clusterer.split(sighting_ids, actor=user.actor), "Split into a new visitor.")
    return _back(f"/visitors/{new.id}" if isinstance(new, Visitor) else f"/visitors/{visitor_id}")


@router.post("/sightings/{sighting_id}/not-this-person")
def not_this_person(request: Request, service: ServiceDep, user: CurrentUser, sighting_id: uuid.UUID) -> Response:
    with service.session() as s:
        row = s.get(Sighting, sighting_id)
        scope = queries.site_ids(s, user.sites)
    if row is None or (scope is not None and row.site_id not in scope):
        raise HTTPException(404, "no such sighting")
    _edit(
        request,
        lambda: service.clusterer.not_this_person(sighting_id, actor=user.actor),
        "Moved to a new visitor; it will not be matched to this one again.",
    )
    return _back(f"/visitors/{row.visitor_id}")


@router.post("/visitors/{visitor_id}/erase")
def erase(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    visitor_id: uuid.UUID,
    confirm: Annotated[str, Form(max_length=10)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    if confirm != "yes":
        flash(request, "Tick the confirmation box to erase this visitor.", "error")
        return _back(f"/visitors/{visitor_id}")
    visible_or_404(service, user, visitor_id)
    counts = service.clusterer.erase_visitor(visitor_id, actor=user.actor, reason=reason)
    log.info("visitor %s erased by %s: %s", visitor_id, user, counts)
    flash(
        request,
        f"Visitor {queries.short_id(visitor_id)} erased: {counts['sightings']} sightings, "
        f"{counts['crops']} crops, {counts['visits']} visits deleted.",
    )
    return _back("/visitors")


@router.get("/sites")
def sites(request: Request, service: ServiceDep, user: CurrentUser) -> Response:
    with service.session() as s:
        ids = queries.site_ids(s, user.sites)
        rows = queries.sites_overview(s, _live_urls(request), service.config.loyal.timezone, site_ids=ids)
    context = {
        "sites": rows,
        "configured": set(service.config.sites),
        "default_zone": service.config.loyal.timezone,
        "can_set_zone": can(user, "admin"),
    }
    return _render(request, "sites.html", context)


@router.post("/sites/{site_id}/timezone")
def set_site_timezone(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    site_id: uuid.UUID,
    timezone: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Set a site's time zone (empty: follow head office's); a zone set in the configuration wins."""
    name = timezone.strip()
    try:
        if name:
            zone_info(name)
    except StoreError as exc:
        flash(request, str(exc), "error")
        return _back("/sites")
    with service.store.begin() as s:
        site = s.get(Site, site_id)
        if site is None:
            raise HTTPException(404, "no such site")
        if site.name in service.config.sites:
            flash(request, f"{site.name}: its time zone is set in the configuration", "error")
            return _back("/sites")
        old, site.timezone = site.timezone, name or None
        s.add(AuditLog(actor=user.actor, action="site_timezone", details={"site": site.name, "from": old, "to": name}))
    flash(request, f"{site.name}: time zone {name or 'of head office (' + service.config.loyal.timezone + ')'}.")
    return _back("/sites")


# --- analytics and exports ----------------------------------------------------------------------------------------

DEFAULT_RANGE_DAYS = 28


def analytics_range(start: date | None, end: date | None, timezone: str) -> tuple[date, date]:
    """The [first, last] local days asked for: by default the 4 weeks ending today; 422 when reversed or longer
    than a year."""
    last = end or utcnow().astimezone(ZoneInfo(timezone)).date()
    first = start or last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first > last:
        raise HTTPException(422, "the range starts after it ends")
    if (last - first).days + 1 > queries.MAX_RANGE_DAYS:
        raise HTTPException(422, f"at most {queries.MAX_RANGE_DAYS} days at once")
    return first, last


def analytics_scope(session: Any, user: Any, site: str) -> set[uuid.UUID] | None:
    """The site ids the figures cover: one site (404 when not the user's), else all the user may see."""
    ids = queries.site_ids(session, user.sites)
    if not site:
        return ids
    row = session.exec(select(Site).where(Site.name == site)).first()
    if row is None or (ids is not None and row.id not in ids):
        raise HTTPException(404, "no such site")
    return {row.id}


def analytics_zone(session: Any, site: str, default: str) -> str:
    """The zone whose days the figures use: one site's own zone where sites have one, else head office's."""
    if not site:
        return default
    row = session.exec(select(Site).where(Site.name == site)).first()
    return site_zone(row, default) if row else default


def analytics_window(
    session: Any, user: Any, site: str, start: date | None, end: date | None, default_zone: str
) -> tuple[set[uuid.UUID] | None, str, date, date]:
    """What an analytics figure covers: the site ids, the zone of its days and its [first, last] local days."""
    ids = analytics_scope(session, user, site)
    tz = analytics_zone(session, site, default_zone)
    first, last = analytics_range(start, end, tz)
    return ids, tz, first, last


def _sites_of(session: Any, user: Any) -> list[str]:
    return [n for n in session.exec(select(Site.name).order_by(Site.name)) if user.sees_site(n)]


@router.get("/analytics")
def analytics_page(
    request: Request,
    service: ServiceDep,
    user: CurrentUser,
    start: BoundedDate | None = None,
    end: BoundedDate | None = None,
    site: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    with service.session() as s:
        ids, tz, first, last = analytics_window(s, user, site, start, end, service.config.loyal.timezone)
        a = queries.analytics(s, first, last, timezone=tz, site_ids=ids)
        sites = _sites_of(s, user)
    day_labels = [d.day.strftime("%d %b") for d in a.days]
    context = {
        "a": a,
        "sites": sites,
        "query": {"start": first.isoformat(), "end": last.isoformat(), "site": site},
        "weekdays": queries.WEEKDAYS,
        "daily_chart": charts.bars(
            day_labels,
            [("new", [d.new for d in a.days]), ("returning", [d.returning for d in a.days])],
            label="unique visitors per day, new and returning",
            cls="daily",
        ),
        "frequency_chart": charts.bars(
            [f"{b} visit{'s' if b != '1' else ''}" for b in a.frequency],
            [("visitors", list(a.frequency.values()))],
            label="visitors by number of visits in the range",
            cls="frequency",
            width=420,
            height=180,
        ),
        "heatmap": charts.heatmap(
            a.heatmap, queries.WEEKDAYS, [f"{h:02d}" for h in range(24)], label="arrivals by weekday and hour"
        ),
    }
    return _render(request, "analytics.html", context)


def _csv_response(service: Any, user: Any, what: str, details: dict[str, Any], rows: Any) -> StreamingResponse:
    """A streamed CSV download; the export is written to the audit log (who, what, range) before it starts."""
    with service.store.begin() as s:
        s.add(AuditLog(actor=user.actor, action="export", details={"what": what, **details}))
    name = "-".join(["revisit", what, *(str(v) for v in details.values() if v)]).replace("/", "_")[:120]
    headers = {"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"}
    body = queries.csv_stream(service.session, rows)
    return StreamingResponse(body, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/exports/analytics.csv")
def export_analytics(
    service: ServiceDep,
    user: CurrentUser,
    start: BoundedDate | None = None,
    end: BoundedDate | None = None,
    site: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    with service.session() as s:
        ids, tz, first, last = analytics_window(s, user, site, start, end, service.config.loyal.timezone)

    def rows(session: Any) -> Any:
        return queries.analytics_rows(queries.analytics(session, first, last, timezone=tz, site_ids=ids))

    details = {"start": first.isoformat(), "end": last.isoformat(), "site": site}
    return _csv_response(service, user, "analytics", details, rows)


@router.get("/exports/visits.csv")
def export_visits(
    service: ServiceDep,
    user: CurrentUser,
    start: BoundedDate | None = None,
    end: BoundedDate | None = None,
    site: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Every visit (staff and excluded ones too, with their status) starting in the range."""
    with service.session() as s:
        ids, tz, first, last = analytics_window(s, user, site, start, end, service.config.loyal.timezone)
    zone = ZoneInfo(tz)
    lo = datetime.combine(first, datetime.min.time(), zone)
    hi = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone)
    details = {"start": first.isoformat(), "end": last.isoformat(), "site": site}
    return _csv_response(
        service, user, "visits", details, lambda session: queries.visits_rows(session, lo, hi, ids, tz)
    )


@router.get("/exports/loyal.csv")
def export_loyal(
    service: ServiceDep,
    user: CurrentUser,
    min_visits: Annotated[int | None, Query(ge=1, le=1000)] = None,
    window_days: Annotated[int | None, Query(ge=1, le=3650)] = None,
    site: Annotated[str, Query(max_length=64)] = "",
    as_of: Annotated[str, Query(max_length=10, description="YYYY-MM-DD; default today in the site's zone")] = "",
    sort: queries.LoyalSort = "-arrival",
) -> Response:
    """The loyal list of a day (default today), as on the page with the same filters."""
    cfg = service.config.loyal
    min_visits, window_days = min_visits or cfg.min_visits, window_days or cfg.window_days
    site = scoped_site(user, site)
    try:
        day = bounded_date(date.fromisoformat(as_of)) if as_of else None
    except ValueError:
        raise HTTPException(422, "as_of: a date as YYYY-MM-DD, 1970..2200") from None

    def rows(session: Any) -> Any:
        def page(offset: int, limit: int) -> Any:
            return queries.loyal_customers(
                session,
                min_visits=min_visits,
                window_days=window_days,
                as_of=day,
                timezone=cfg.timezone,
                site=site or None,
                sort=sort,
                offset=offset,
                limit=limit,
            )

        return queries.loyal_rows(page)

    details = {"site": site, "as_of": as_of, "min_visits": min_visits, "window_days": window_days}
    return _csv_response(service, user, "loyal", details, rows)


# --- files -----------------------------------------------------------------------------------------------------


@router.get("/crops/{path:path}")
def crop(path: str, service: ServiceDep, user: CurrentUser) -> FileResponse:
    """A stored crop; only names the CropStore makes resolve (`ab/<32 hex>.jpg` under its root); site managers
    only those of their sites."""
    try:
        file = service.crops.path(path).resolve()
    except StoreError:
        raise HTTPException(404, "not found") from None
    if user.sites is not None:
        with service.session() as s:
            if not queries.crop_visible(s, path, queries.site_ids(s, user.sites)):
                raise HTTPException(404, "not found")
    if not file.is_relative_to(service.crops.root) or not file.is_file():
        raise HTTPException(404, "not found")
    return FileResponse(file, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=600"})


@router.get("/live/camera/{camera_id}.mjpg")
async def live_mjpeg(request: Request, service: ServiceDep, user: CurrentUser, camera_id: uuid.UUID) -> Response:
    return await _relay(request, service, user, camera_id, "mjpg")


@router.get("/live/camera/{camera_id}.jpg")
async def live_snapshot(request: Request, service: ServiceDep, user: CurrentUser, camera_id: uuid.UUID) -> Response:
    return await _relay(request, service, user, camera_id, "jpg")


async def _relay(
    request: Request, service: ServiceDep, user: Any, camera_id: uuid.UUID, ext: Literal["mjpg", "jpg"]
) -> Response:
    """Relay the edge's live view: the browser needs no route to the site network, and the edge's
    unauthenticated view is only reachable through central's login (site managers: their sites' cameras)."""

    def lookup() -> tuple[Any, str] | None:
        with service.session() as s:
            return queries.camera_source(s, _live_urls(request), camera_id, queries.site_ids(s, user.sites))

    found = await run_in_threadpool(lookup)
    if found is None:
        raise HTTPException(404, "no live view configured for this camera")
    camera, base = found
    streams: asyncio.Semaphore = request.app.state.live_streams
    if streams.locked():
        raise HTTPException(503, "too many live views open")
    await streams.acquire()
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0), follow_redirects=False)
    try:
        upstream = await client.send(
            client.build_request("GET", queries.camera_live_url(base, camera.name, ext)), stream=True
        )
    except httpx.HTTPError as exc:
        await client.aclose()
        streams.release()
        raise HTTPException(502, f"edge live view not reachable: {type(exc).__name__}") from None
    if upstream.status_code != 200:
        await upstream.aclose()
        await client.aclose()
        streams.release()
        raise HTTPException(502, f"edge live view answered {upstream.status_code}")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            pass  # the edge went away: end the stream; the page shows it as not reachable
        finally:
            await upstream.aclose()
            await client.aclose()
            streams.release()

    media = upstream.headers.get("content-type", "image/jpeg")
    return StreamingResponse(body(), media_type=media, headers={"Cache-Control": "no-store"})


# --- helpers ---------------------------------------------------------------------------------------------------


def scoped_site(user: Any, site: str) -> str:
    """The loyal list's site filter for this user: a site manager's own (their first when none is chosen);
    another site is not theirs to see (404)."""
    if user.sites is None:
        return site
    if not site:
        return min(user.sites) if user.sites else "\0none"
    if site not in user.sites:
        raise HTTPException(404, "no such site")
    return site


def _visitors_referer(request: Request) -> str:
    """Back to the visitors grid page the form was on (same host only), else the first page."""
    from urllib.parse import urlsplit

    ref = urlsplit(request.headers.get("referer", ""))
    if ref.netloc == request.url.netloc and ref.path == "/visitors":
        return "/visitors" + (f"?{ref.query}" if ref.query else "")
    return "/visitors"


def visible_or_404(service: Any, user: Any, visitor_id: uuid.UUID) -> None:
    """404 unless the visitor exists and (for a site manager) was seen at one of their sites."""
    with service.session() as s:
        if not queries.visitor_visible(s, visitor_id, queries.site_ids(s, user.sites)):
            raise HTTPException(404, "no such visitor")


def audit_details(service: Any, actor: str, visitor_id: uuid.UUID, label: str | None, notes: str | None) -> None:
    """Label and notes edits in the audit log (the clusterer logs merges, splits and erasures itself)."""
    details: dict[str, Any] = {}
    if label is not None:
        details["label"] = label
    if notes is not None:
        details["notes_chars"] = len(notes)
    with service.store.begin() as s:
        s.add(AuditLog(actor=actor, action="edit", visitor_id=visitor_id, details=details))


def _edit(request: Request, action: Any, message: str) -> Any:
    """Run a clusterer edit; its refusal (ClusterError) becomes an error message on the next page."""
    try:
        result = action()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except ClusterError as exc:
        flash(request, str(exc), "error")
        return None
    flash(request, message)
    return result if result is not None else True

"""The event kiosk's web routes: staff pages, the public kiosk, and the specification's API.

Staff (login and CSRF from `auth`; the "events" permission: admins and event staff):
    GET  /events                         events, and a form to create one
    POST /events                         create (name, date, expiry days)
    GET  /events/{id}                    code, drag-and-drop upload (XHR, progress per file and overall),
                                         processing status (processing / done / failed with reason, faces), orders
    GET  /events/{id}/status             that status as JSON (the page polls it)
    POST /events/{id}/photos             upload one or more files (multipart `files`)
    POST /events/{id}/delete             delete the event: photos, thumbnails, vectors and rows
    POST /events/{id}/settings           the event's minimum similarity (guests cannot search below it)
    GET  /events/{id}/photos/{pid}/thumb a thumbnail for the status view
    POST /api/v1/events                  JSON {name, date?, expiry_days?} -> the event with its code
    POST /api/v1/photos/upload           multipart: event_id or event_code, files
    GET  /api/v1/events/{id}/photos      processing status;  DELETE /api/v1/events/{id}
    PATCH /api/v1/events/{id}            JSON {min_threshold}: the event's floor for guests' searches

Public (rate limited per client address and per event; no login):
    GET  /kiosk                          the full-screen kiosk: code -> webcam -> results
    GET  /api/v1/events/{code}           a live event by its code
    POST /api/v1/search/face             JSON {event_id or event_code, face_image (base64), threshold?, limit?}
                                         -> {matches_found, matches: [{photo_id, filename, similarity, thumbnail_url,
                                         image_url, download_url, token}], notice?}; 422 with guidance when the selfie
                                         has no usable face; 429 when rate limited
    GET  /kiosk/photo/{token}/{thumb|view|download}   only photos a search returned
    POST /api/v1/orders                  order photos (`order_routes`; the orders page and exports are there too)

Handlers are plain `def` (FastAPI runs them in its thread pool, so database work never blocks the event loop).
Those that read a JSON body take it from the `JsonBody` dependency (awaited on the loop, bounded, never echoed).
Uploads, the face search and guests' orders stay `async`: they stream the body themselves (multipart files,
a rate limit checked before a selfie is read) and hand every database step to the thread pool.

Browsers open the webcam (getUserMedia) only in a secure context: serve the kiosk over HTTPS (the reverse
proxy) or from localhost on the kiosk machine itself.

Photo URLs carry a signed, short-lived token naming the event and the photo (`revisit.central.kiosk.tokens`):
photo ids alone open nothing, and a token of one event never opens another event's photo.
`similarity` and `threshold` are on the specification's (cos + 1) / 2 scale (see `search`).

Privacy: a guest's `threshold` below the event's floor (set by staff; default `[kiosk] threshold_floor`, 0.68) is
raised to it, and `limit` is capped at `[kiosk] max_results` (100): a selfie cannot list the whole event. Expiry is
checked on every access, not only by the hourly job: once an event has ended its photo links answer 410, uploads
and searches are refused (410), its code is not found, and the expiry job is woken to delete it at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from sqlmodel import func, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from revisit.central.auth import CSRFChecked, CurrentUser, client_key, flash, templates
from revisit.central.kiosk.events import EventError, normalize_code
from revisit.central.kiosk.models import Event, Photo
from revisit.central.kiosk.photos import sanitize_filename
from revisit.central.kiosk.search import MAX_SELFIES, SelfieRejected
from revisit.central.kiosk.service import Kiosk
from revisit.central.store import AuditLog, local_day, utcnow
from revisit.shared.errors import RevisitError

log = logging.getLogger(__name__)

MAX_SEARCH_BODY = 12 * 1024 * 1024  # a base64 selfie of up to ~8 MB
MAX_FILES_PER_REQUEST = 200


_build_lock = threading.Lock()


def get_kiosk(request: Request) -> Kiosk:
    """The app's Kiosk, built on first use from `app.state.service` (503 when the face engine cannot load)."""
    state = request.app.state
    kiosk = getattr(state, "kiosk", None)
    if kiosk is not None:
        return kiosk
    with _build_lock:
        kiosk = getattr(state, "kiosk", None)
        if kiosk is None:
            try:
                kiosk = Kiosk.from_service(state.service).start()
            except RevisitError as exc:
                log.error("event kiosk unavailable: %s", exc)
                raise HTTPException(503, f"the event kiosk is unavailable: {exc}") from None
            state.kiosk = kiosk
    return kiosk


KioskDep = Annotated[Kiosk, Depends(get_kiosk)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the kiosk with the app when events exist (photos left processing resume; expired events go);
    otherwise it starts on first use. Stops its threads with the app."""
    service = getattr(app.state, "service", None)
    if service is not None and getattr(app.state, "kiosk", None) is None:
        try:
            with service.session() as s:
                has_events = s.exec(select(func.count()).select_from(Event)).one() > 0
            if has_events:
                app.state.kiosk = await run_in_threadpool(lambda: Kiosk.from_service(service).start())
        except Exception:  # the pages must come up even when the kiosk cannot
            log.exception("event kiosk not started; it will be tried again on first use")
    try:
        yield
    finally:
        kiosk = getattr(app.state, "kiosk", None)
        if kiosk is not None:
            await run_in_threadpool(kiosk.close)
            app.state.kiosk = None


# --- helpers -------------------------------------------------------------------------------------------------


def too_many(wait: float, what: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"too many {what}; try again in {wait:.0f} s"},
        status_code=429,
        headers={"Retry-After": str(int(wait) + 1)},
    )


def parse_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        return None


def resolve_event(kiosk: Kiosk, event_id: Any = None, code: Any = None, *, live: bool = True) -> Event | None:
    """An event by id or code; with `live`, an expired one is refused (410) and codes find only live events."""
    if event_id not in (None, ""):
        eid = parse_uuid(event_id)
        event = kiosk.events.get(eid) if eid else None
        if event is not None and live:
            live_or_410(kiosk, event)
        return event
    if isinstance(code, str) and code:
        return kiosk.events.by_code(code)
    return None


def event_json(event: Event, photos: int | None = None) -> dict[str, Any]:
    out = {
        "event_id": str(event.id),
        "code": event.code,
        "name": event.name,
        "date": event.date.isoformat(),
        "expires_at": event.expires_at.isoformat(),
        "kiosk_url": f"/kiosk?code={event.code}",
    }
    if photos is not None:
        out["photos"] = photos
    return out


def decode_base64_image(text: Any) -> bytes:
    """The bytes of a base64 image (a data: URL prefix is allowed); ValueError with a short reason."""
    if not isinstance(text, str) or not text:
        raise ValueError("face_image is required: the selfie as base64 (JPEG or PNG)")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("face_image is not valid base64") from None


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The JSON object of the body, parsed here (never echoed back in an error: it may hold a selfie)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise HTTPException(413, f"request too large (limit {limit // 2**20} MB)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request too large (limit {limit // 2**20} MB)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return data


def JsonBody(limit: int) -> Any:  # noqa: N802 - used like FastAPI's Body()
    """A dependency: the request's JSON object (`read_json`, at most `limit` bytes)."""

    async def body(request: Request) -> dict[str, Any]:
        return await read_json(request, limit)

    return Depends(body)


def check_upload_size(request: Request, kiosk: KioskDep) -> None:
    """Refuse a request body over the limit before anything parses (and spools) it: runs before the CSRF check."""
    limit = kiosk.events.files.max_bytes * MAX_FILES_PER_REQUEST
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "uploads need a Content-Length")
    if not length.isdigit() or int(length) > limit:
        raise HTTPException(413, f"request too large (limit {limit // 2**20} MB)")


async def store_uploads(kiosk: Kiosk, event_id: uuid.UUID, files: list[UploadFile]) -> tuple[list, list]:
    if len(files) > MAX_FILES_PER_REQUEST:
        raise HTTPException(413, f"too many files in one request (at most {MAX_FILES_PER_REQUEST})")
    max_bytes = kiosk.events.files.max_bytes
    uploaded, rejected = [], []
    for file in files:
        data = await file.read(max_bytes + 1)
        await file.close()
        if len(data) > max_bytes:
            rejected.append(
                {
                    "filename": sanitize_filename(file.filename),
                    "error": f"file too large (limit {max_bytes / 2**20:.0f} MB)",
                }
            )
            continue
        try:
            result = await run_in_threadpool(kiosk.upload, event_id, file.filename or "", data)
        except EventError as exc:
            raise HTTPException(404, str(exc)) from None
        if result.photo is None:
            rejected.append({"filename": result.filename, "error": result.error})
        else:
            uploaded.append({"photo_id": str(result.photo.id), "filename": result.filename, "status": "processing"})
    return uploaded, rejected


def upload_response(event_id: uuid.UUID, uploaded: list, rejected: list) -> JSONResponse:
    status = 201 if uploaded else 400
    body: dict[str, Any] = {"event_id": str(event_id), "uploaded": uploaded, "rejected": rejected}
    if not uploaded and not rejected:
        body["detail"] = "no files: send them as multipart field 'files'"
    elif not uploaded:
        body["detail"] = "; ".join(f"{r['filename']}: {r['error']}" for r in rejected)[:1000]
    return JSONResponse(body, status_code=status)


def _event_or_404(kiosk: Kiosk, event_id: uuid.UUID) -> Event:
    event = kiosk.events.get(event_id)
    if event is None:
        raise HTTPException(404, "no such event")
    return event


def live_or_410(kiosk: Kiosk, event: Event) -> Event:
    if kiosk.expired(event):
        raise HTTPException(410, "this event has ended: its photos are being deleted")
    return event


def audit(kiosk: Kiosk, actor: str, action: str, **details: Any) -> None:
    """Staff changes to events in the central audit log."""
    with kiosk.events.store.begin() as s:
        s.add(AuditLog(actor=actor[:64], action=action, details={k: str(v) for k, v in details.items()}))


def _photo_file(kiosk: Kiosk, photo: Photo, kind: str) -> Path:
    files = kiosk.events.files
    path = (
        files.thumb(photo.event_id, photo.thumb_name)
        if kind == "thumb"
        else files.original(photo.event_id, photo.stored_name)
    )
    if not path.is_file():
        raise HTTPException(404, "photo file missing")
    return path


PRIVATE = {"Cache-Control": "private, max-age=600"}
MEDIA = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp", "tif": "image/tiff"}


def _json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """OpenAPI of a JSON body parsed by hand (so a selfie is never echoed in a validation error)."""
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# --- staff pages ---------------------------------------------------------------------------------------------

staff = APIRouter(dependencies=[CSRFChecked], include_in_schema=False)
# uploads: the size is checked before the CSRF check, which may parse the form
uploads = APIRouter(dependencies=[Depends(check_upload_size), CSRFChecked])


@staff.get("/events")
def events_page(request: Request, kiosk: KioskDep) -> Response:
    return templates.TemplateResponse(
        request,
        "kiosk/events.html",
        {
            "summaries": kiosk.events.list_events(),
            "today": local_day(utcnow(), kiosk.timezone).isoformat(),
            "order_counts": kiosk.orders.counts(),
            "expiry_days": int(kiosk.config.expiry_days),
        },
    )


@staff.post("/events")
def create_event_form(
    request: Request,
    kiosk: KioskDep,
    user: CurrentUser,
    name: Annotated[str, Form(max_length=200)],
    day: Annotated[date | None, Form(alias="date")] = None,
    expiry_days: Annotated[float | None, Form(gt=0, le=3650)] = None,
) -> Response:
    try:
        event = _create(kiosk, name, day, expiry_days)
    except EventError as exc:
        flash(request, str(exc), "error")
        return RedirectResponse("/events", status_code=303)
    audit(kiosk, user.actor, "event_add", event=event.id, name=event.name)
    flash(request, f"Event “{event.name}” created: guests enter the code {event.code} at the kiosk.", "ok")
    return RedirectResponse(f"/events/{event.id}", status_code=303)


def _create(kiosk: Kiosk, name: str, day: date | None, expiry_days: float | None) -> Event:
    now = utcnow()
    expires = now + timedelta(days=expiry_days or kiosk.config.expiry_days)
    return kiosk.events.create_event(name, day or local_day(now, kiosk.timezone), expires_at=expires, now=now)


@staff.get("/events/{event_id}")
def event_page(request: Request, event_id: uuid.UUID, kiosk: KioskDep) -> Response:
    event = _event_or_404(kiosk, event_id)
    return templates.TemplateResponse(
        request,
        "kiosk/event.html",
        {
            "event": event,
            "status": kiosk.events.photo_status(event_id),
            "order_counts": kiosk.orders.counts().get(event_id, {"total": 0}),
            "photos": {p.id: p for p in kiosk.events.photos(event_id)},
            "max_upload_mb": kiosk.events.files.max_bytes / 2**20,
            "ended": kiosk.expired(event),
            "floor": kiosk.floor(event_id),
            "default_floor": kiosk.config.threshold_floor,
            "max_results": kiosk.config.max_results,
        },
    )


@staff.post("/events/{event_id}/settings")
def event_settings_form(
    request: Request,
    event_id: uuid.UUID,
    kiosk: KioskDep,
    user: CurrentUser,
    min_threshold: Annotated[float, Form(ge=0.5, lt=1)],
) -> Response:
    live_or_410(kiosk, _event_or_404(kiosk, event_id))
    kiosk.events.set_min_threshold(event_id, min_threshold, user.actor)
    audit(kiosk, user.actor, "event_settings", event=event_id, min_threshold=min_threshold)
    flash(request, f"Guests' searches now use a similarity of at least {min_threshold:.2f}.", "ok")
    return RedirectResponse(f"/events/{event_id}", status_code=303)


@staff.get("/events/{event_id}/status")
def event_status(event_id: uuid.UUID, kiosk: KioskDep) -> dict[str, Any]:
    _event_or_404(kiosk, event_id)
    return {**kiosk.events.photo_status(event_id), "backlog": kiosk.worker.backlog()}


@uploads.post("/events/{event_id}/photos", include_in_schema=False)
async def upload_photos(request: Request, event_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser) -> JSONResponse:
    await run_in_threadpool(lambda: live_or_410(kiosk, _event_or_404(kiosk, event_id)))
    form = await request.form(max_files=MAX_FILES_PER_REQUEST)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    uploaded, rejected = await store_uploads(kiosk, event_id, files)
    await run_in_threadpool(
        audit, kiosk, user.actor, "event_upload", event=event_id, uploaded=len(uploaded), rejected=len(rejected)
    )
    return upload_response(event_id, uploaded, rejected)


@staff.post("/events/{event_id}/delete")
def delete_event_form(request: Request, event_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser) -> Response:
    event = _event_or_404(kiosk, event_id)
    kiosk.events.delete_event(event_id)
    audit(kiosk, user.actor, "event_delete", event=event_id, name=event.name)
    flash(request, f"Event “{event.name}” deleted with its photos.", "ok")
    return RedirectResponse("/events", status_code=303)


@staff.get("/events/{event_id}/photos/{photo_id}/thumb")
def staff_thumb(event_id: uuid.UUID, photo_id: uuid.UUID, kiosk: KioskDep) -> Response:
    live_or_410(kiosk, _event_or_404(kiosk, event_id))
    photo = kiosk.events.photo(event_id, photo_id)
    if photo is None:
        raise HTTPException(404, "no such photo in this event")
    return FileResponse(_photo_file(kiosk, photo, "thumb"), media_type="image/jpeg", headers=PRIVATE)


# --- staff API -----------------------------------------------------------------------------------------------

staff_api = APIRouter(prefix="/api/v1", tags=["event kiosk"], dependencies=[CSRFChecked])


@staff_api.post(
    "/events",
    status_code=201,
    openapi_extra=_json_body(
        {
            "name": {"type": "string", "maxLength": 200},
            "date": {"type": "string", "format": "date"},
            "expiry_days": {"type": "number", "exclusiveMinimum": 0, "maximum": 3650, "default": 30},
        },
        ["name"],
    ),
)
def api_create_event(
    kiosk: KioskDep, user: CurrentUser, body: Annotated[dict[str, Any], JsonBody(64 * 1024)]
) -> dict[str, Any]:
    """Create an event: JSON `{name, date?: YYYY-MM-DD, expiry_days?}`; the answer has its kiosk `code`."""
    name = body.get("name")
    if not isinstance(name, str):
        raise HTTPException(422, "name is required")
    try:
        day = date.fromisoformat(body["date"]) if body.get("date") else None
        expiry = float(body["expiry_days"]) if body.get("expiry_days") is not None else None
        if expiry is not None and not 0 < expiry <= 3650:
            raise ValueError("expiry_days must be in (0, 3650]")
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, f"bad date or expiry_days: {exc}") from None
    try:
        event = _create(kiosk, name, day, expiry)
    except EventError as exc:
        raise HTTPException(422, str(exc)) from None
    audit(kiosk, user.actor, "event_add", event=event.id, name=event.name)
    return event_json(event, 0)


@uploads.post("/api/v1/photos/upload", tags=["event kiosk"])
async def api_upload(request: Request, kiosk: KioskDep, user: CurrentUser) -> JSONResponse:
    """Multipart: `event_id` or `event_code`, and one or more `files` (or `file`). 410 once the event has ended."""
    form = await request.form(max_files=MAX_FILES_PER_REQUEST)
    event_id, code = form.get("event_id"), form.get("event_code") or form.get("code")
    event = await run_in_threadpool(resolve_event, kiosk, event_id, code if isinstance(code, str) else None)
    if event is None:
        raise HTTPException(404, "no such event (give event_id or event_code)")
    files = [f for key in ("files", "file") for f in form.getlist(key) if isinstance(f, UploadFile)]
    uploaded, rejected = await store_uploads(kiosk, event.id, files)
    await run_in_threadpool(
        audit, kiosk, user.actor, "event_upload", event=event.id, uploaded=len(uploaded), rejected=len(rejected)
    )
    return upload_response(event.id, uploaded, rejected)


@staff_api.get("/events/{event_id}/photos")
def api_event_photos(event_id: uuid.UUID, kiosk: KioskDep) -> dict[str, Any]:
    """The processing status of each photo: processing, done (faces found) or failed (reason)."""
    event = _event_or_404(kiosk, event_id)
    out = {**event_json(event), **kiosk.events.photo_status(event_id)}
    return out | {"min_threshold": kiosk.floor(event_id), "ended": kiosk.expired(event)}


@staff_api.patch(
    "/events/{event_id}",
    openapi_extra=_json_body(
        {
            "min_threshold": {
                "type": "number",
                "minimum": 0.5,
                "exclusiveMaximum": 1,
                "description": "guests' searches of this event use at least this (cos + 1) / 2 similarity",
            },
        },
        ["min_threshold"],
    ),
)
def api_event_settings(
    event_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser, body: Annotated[dict[str, Any], JsonBody(16 * 1024)]
) -> dict:
    """Set the event's floor for guests' searches: JSON `{min_threshold}` on the (cos+1)/2 scale, 0.5..<1."""
    value = body.get("min_threshold")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.5 <= value < 1:
        raise HTTPException(422, "min_threshold is on the (cos + 1) / 2 scale: a number from 0.5 to below 1")
    event = live_or_410(kiosk, _event_or_404(kiosk, event_id))
    kiosk.events.set_min_threshold(event_id, float(value), user.actor)
    audit(kiosk, user.actor, "event_settings", event=event_id, min_threshold=value)
    return {**event_json(event), "min_threshold": float(value)}


@staff_api.delete("/events/{event_id}")
def api_delete_event(event_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser) -> dict[str, Any]:
    """Delete the event with its photos, thumbnails, faces, vectors and orders."""
    if not kiosk.events.delete_event(event_id):
        raise HTTPException(404, "no such event")
    audit(kiosk, user.actor, "event_delete", event=event_id)
    return {"deleted": str(event_id)}


# --- public: the kiosk -----------------------------------------------------------------------------------

public = APIRouter(tags=["event kiosk"])


@public.get("/kiosk", include_in_schema=False)
def kiosk_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "kiosk/kiosk.html", {})


@public.get("/api/v1/events/{code}")
def api_event(code: str, request: Request, kiosk: KioskDep) -> Response:
    """A live event by the code guests type (rate limited per client: codes are not to be guessed)."""
    wait = kiosk.client_lookup.take(client_key(request))
    if wait:
        return too_many(wait, "look-ups")
    event = kiosk.events.by_code(code) if normalize_code(code) else None
    if event is None:
        raise HTTPException(404, "no event with that code (check the code, or the event may have ended)")
    with kiosk.events.store.session() as s:
        n = s.exec(
            select(func.count()).select_from(Photo).where(Photo.event_id == event.id, Photo.status == "done")
        ).one()
    return JSONResponse(event_json(event, int(n)))


SEARCH_BODY = _json_body(
    {
        "event_id": {"type": "string", "format": "uuid"},
        "event_code": {"type": "string", "example": "ABCD2345"},
        "face_image": {"type": "string", "description": "the selfie, JPEG or PNG, base64 (a data: URL is accepted)"},
        "face_images": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": 3,
            "description": "instead of face_image: 1-3 selfies of the same guest (other angles), merged",
        },
        "threshold": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "(cos + 1) / 2; cosine = 2 * threshold - 1; default: the kiosk's (0.68); never below "
            "the event's floor (raised to it)",
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": 1000,
            "default": 100,
            "description": "capped at the kiosk's max_results (100)",
        },
    },
    [],
)


@public.post("/api/v1/search/face", openapi_extra=SEARCH_BODY)
async def api_search(request: Request, kiosk: KioskDep) -> Response:
    """Find an event's photos of the person in a selfie. JSON `{event_id | event_code, face_image: base64,
    threshold?: 0..1 on the (cos+1)/2 scale, limit?}`; or `face_images: [base64, ...]` (up to 3 selfies of the
    guest from other angles, merged: `search.MULTI_MERGE`). Selfies are processed in memory and never stored.
    The threshold is raised to the event's floor and the limit capped; the answer says which were used."""
    wait = kiosk.client_search.take(client_key(request))
    if wait:
        return too_many(wait, "searches")
    body = await read_json(request, MAX_SEARCH_BODY)
    event = await run_in_threadpool(
        resolve_event, kiosk, body.get("event_id"), body.get("event_code") or body.get("code")
    )
    if event is None:
        raise HTTPException(404, "no event with that id or code (or it has ended)")
    wait = kiosk.event_search.take(str(event.id))
    if wait:
        return too_many(wait, "searches for this event")
    threshold = body.get("threshold", kiosk.search.threshold)
    limit = body.get("limit", kiosk.config.max_results)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise HTTPException(422, "threshold is on the (cos + 1) / 2 scale: a number from 0 to 1")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise HTTPException(422, "limit must be an integer from 1 to 1000")
    threshold = max(float(threshold), await run_in_threadpool(kiosk.floor, event.id))
    limit = min(limit, kiosk.config.max_results)
    many = body.pop("face_images", None)
    try:
        if many is None:
            images = [decode_base64_image(body.pop("face_image", None))]
        elif not isinstance(many, list) or not 1 <= len(many) <= MAX_SELFIES:
            raise ValueError(f"face_images is a list of 1 to {MAX_SELFIES} selfies (base64)")
        else:
            images = [decode_base64_image(text) for text in many]
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    del body, many
    try:
        result = await run_in_threadpool(kiosk.search.search_many, event.id, images, float(threshold), limit)
    except SelfieRejected as exc:
        return JSONResponse(
            {"detail": exc.message, "reason": exc.reason, "matches_found": 0, "matches": []}, status_code=422
        )
    finally:
        del images
    return JSONResponse(
        {"event_id": str(event.id), **kiosk.match_json(event.id, result), "limit": limit, "selfies": result.selfies},
        headers={"Cache-Control": "no-store"},
    )


@public.get("/kiosk/photo/{token}/{kind}", include_in_schema=False)
def kiosk_photo(token: str, kind: str, kiosk: KioskDep) -> Response:
    if kind not in ("thumb", "view", "download"):
        raise HTTPException(404, "not found")
    ids = kiosk.tokens.verify(token)
    event = kiosk.events.get(ids[0]) if ids else None
    if event is not None:
        live_or_410(kiosk, event)
    photo = kiosk.events.photo(*ids) if ids and event else None
    if photo is None or photo.status != "done":
        raise HTTPException(404, "this photo link is not valid (it may have expired): search again")
    path = _photo_file(kiosk, photo, kind)
    if kind == "thumb":
        return FileResponse(path, media_type="image/jpeg", headers=PRIVATE)
    media = MEDIA.get(path.suffix.lstrip("."), "application/octet-stream")
    if kind == "view":
        return FileResponse(path, media_type=media, headers=PRIVATE)
    name = Path(photo.filename).stem + path.suffix
    return FileResponse(path, media_type=media, filename=name, headers=PRIVATE)


router = APIRouter(lifespan=lifespan)
router.include_router(staff)
router.include_router(uploads)
router.include_router(staff_api)
router.include_router(public)

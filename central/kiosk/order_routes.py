"""The kiosk's order routes (`revisit.central.kiosk.orders` has the operations), and the guest-phone QR code.

Staff (the "events" permission; forms carry the CSRF token like the other pages):
    GET  /events/{id}/orders                       the orders: guest, contact, photos, status, notes
    POST /events/{id}/orders/{oid}                 status (new / ready / delivered) and notes
    POST /events/{id}/orders/{oid}/erase           the guest's erasure: the order goes (the photos stay)
    GET  /events/{id}/orders.csv                   CSV export (?status= to filter)
    GET  /events/{id}/orders.zip                   the ordered originals, one folder per order, streamed
                                                   (?status= or ?order= to narrow it)
    GET  /events/{id}/qr.svg                       a QR code of the guest page with the code filled in
    GET  /events/{id}/poster                       a printable poster with that QR code
    GET  /api/v1/events/{id}/orders                the orders as JSON;  PATCH / DELETE /api/v1/events/{id}/orders/{oid}

Public:
    POST /api/v1/orders      JSON {tokens: [..] (or token), name?, contact? (or email)} -> {reference, ...}
"""

from __future__ import annotations

import io
import uuid
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from revisit.central.auth import CSRFChecked, CurrentUser, client_key, flash, templates
from revisit.central.kiosk.events import EventError
from revisit.central.kiosk.orders import STATUSES, order_json, orders_csv, zip_entries, zip_stream
from revisit.central.kiosk.routes import (
    JsonBody,
    KioskDep,
    _event_or_404,
    _json_body,
    audit,
    live_or_410,
    read_json,
    too_many,
)
from revisit.central.store import utcnow

staff = APIRouter(dependencies=[CSRFChecked], include_in_schema=False)
staff_api = APIRouter(prefix="/api/v1", tags=["event kiosk"], dependencies=[CSRFChecked])
public = APIRouter(tags=["event kiosk"])
NO_STORE = {"Cache-Control": "no-store"}


def _status(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value not in STATUSES:
        raise HTTPException(422, f"status is one of {', '.join(STATUSES)}")
    return value


def guest_url(request: Request, code: str) -> str:
    """The guest page with the event code filled in, on the address staff reached this service at (behind the
    reverse proxy: its public HTTPS address, with --proxy-headers)."""
    return str(request.base_url).rstrip("/") + f"/kiosk?code={code}"


# --- staff pages -------------------------------------------------------------------------------------------


@staff.get("/events/{event_id}/orders")
def orders_page(request: Request, event_id: uuid.UUID, kiosk: KioskDep, status: str | None = None) -> Response:
    event = _event_or_404(kiosk, event_id)
    views = kiosk.orders.list(event_id, _status(status))
    counts = kiosk.orders.counts().get(event_id, {"total": 0})
    return templates.TemplateResponse(
        request,
        "kiosk/orders.html",
        {
            "event": event,
            "views": views,
            "statuses": STATUSES,
            "status": status or "",
            "counts": counts,
            "ended": kiosk.expired(event),
        },
        headers=NO_STORE,
    )


@staff.post("/events/{event_id}/orders/{order_id}")
def order_update_form(
    request: Request,
    event_id: uuid.UUID,
    order_id: uuid.UUID,
    kiosk: KioskDep,
    user: CurrentUser,
    status: Annotated[str, Form()],
    notes: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _event_or_404(kiosk, event_id)
    before = kiosk.orders.get(event_id, order_id)
    if before is None:
        raise HTTPException(404, "no such order in this event")
    try:
        order = kiosk.orders.update(event_id, order_id, status=_status(status), notes=notes, actor=user.actor)
    except EventError as exc:
        flash(request, str(exc), "error")
        return RedirectResponse(f"/events/{event_id}/orders", status_code=303)
    audit(
        kiosk,
        user.actor,
        "order_update",
        event=event_id,
        order=before.reference,
        status=f"{before.order.status}->{order.status}",
        notes_changed=before.order.notes != order.notes,
    )
    flash(request, f"Order {before.reference}: {order.status}.", "ok")
    return RedirectResponse(f"/events/{event_id}/orders#o-{order_id}", status_code=303)


@staff.post("/events/{event_id}/orders/{order_id}/erase")
def order_erase_form(
    request: Request, event_id: uuid.UUID, order_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser
) -> Response:
    _event_or_404(kiosk, event_id)
    view = kiosk.orders.get(event_id, order_id)
    if view is None or kiosk.orders.erase(event_id, order_id) is None:
        raise HTTPException(404, "no such order in this event")
    audit(kiosk, user.actor, "order_erase", event=event_id, order=view.reference)
    flash(request, f"Order {view.reference} erased with the guest's name and contact.", "ok")
    return RedirectResponse(f"/events/{event_id}/orders", status_code=303)


def _stamp() -> str:
    return utcnow().strftime("%Y%m%d-%H%M")


@staff.get("/events/{event_id}/orders.csv")
def orders_csv_export(event_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser, status: str | None = None) -> Response:
    event = _event_or_404(kiosk, event_id)
    views = kiosk.orders.list(event_id, _status(status))
    audit(kiosk, user.actor, "order_export", event=event_id, format="csv", orders=len(views), status=status or "all")
    return Response(
        orders_csv(views),
        media_type="text/csv; charset=utf-8",
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="orders-{event.code}-{_stamp()}.csv"'},
    )


@staff.get("/events/{event_id}/orders.zip")
def orders_zip(
    event_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser, status: str | None = None, order: uuid.UUID | None = None
) -> Response:
    event = live_or_410(kiosk, _event_or_404(kiosk, event_id))
    if order is not None:
        view = kiosk.orders.get(event_id, order)
        if view is None:
            raise HTTPException(404, "no such order in this event")
        views = [view]
    else:
        views = kiosk.orders.list(event_id, _status(status))
    files = kiosk.events.files

    def original(photo: Any) -> Any:
        path = files.original(photo.event_id, photo.stored_name)
        return path if path.is_file() else None

    entries = zip_entries(views, original)
    if not entries:
        raise HTTPException(404, "no ordered photos to download")
    audit(
        kiosk,
        user.actor,
        "order_export",
        event=event_id,
        format="zip",
        orders=len(views),
        photos=len(entries),
        status=status or "all",
        order=views[0].reference if order else "",
    )
    name = f"orders-{event.code}-{views[0].order.reference if order else _stamp()}.zip"
    return StreamingResponse(
        zip_stream(entries),
        media_type="application/zip",
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'},
    )


@staff.get("/events/{event_id}/qr.svg")
def event_qr(request: Request, event_id: uuid.UUID, kiosk: KioskDep) -> Response:
    event = _event_or_404(kiosk, event_id)
    out = io.BytesIO()
    segno.make(guest_url(request, event.code), error="m").save(
        out, kind="svg", scale=8, border=4, title=f"{event.name}: find your photos"
    )
    return Response(out.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=300"})


@staff.get("/events/{event_id}/poster")
def event_poster(request: Request, event_id: uuid.UUID, kiosk: KioskDep) -> Response:
    event = _event_or_404(kiosk, event_id)
    return templates.TemplateResponse(
        request, "kiosk/poster.html", {"event": event, "guest_url": guest_url(request, event.code)}
    )


# --- staff API ---------------------------------------------------------------------------------------------


@staff_api.get("/events/{event_id}/orders")
def api_orders(event_id: uuid.UUID, kiosk: KioskDep, status: str | None = None) -> JSONResponse:
    """The event's orders, oldest first (`?status=new|ready|delivered` to filter)."""
    _event_or_404(kiosk, event_id)
    views = kiosk.orders.list(event_id, _status(status))
    return JSONResponse({"event_id": str(event_id), "orders": [order_json(v) for v in views]}, headers=NO_STORE)


@staff_api.patch(
    "/events/{event_id}/orders/{order_id}",
    openapi_extra=_json_body(
        {
            "status": {"type": "string", "enum": list(STATUSES)},
            "notes": {"type": "string", "maxLength": 2000},
        },
        [],
    ),
)
def api_order_update(
    event_id: uuid.UUID,
    order_id: uuid.UUID,
    kiosk: KioskDep,
    user: CurrentUser,
    body: Annotated[dict[str, Any], JsonBody(16 * 1024)],
) -> JSONResponse:
    """Change an order's status and/or notes: JSON `{status?, notes?}`."""
    status, notes = body.get("status"), body.get("notes")
    if status is not None and status not in STATUSES:
        raise HTTPException(422, f"status is one of {', '.join(STATUSES)}")
    if notes is not None and not isinstance(notes, str):
        raise HTTPException(422, "notes are text")
    _event_or_404(kiosk, event_id)
    before = kiosk.orders.get(event_id, order_id)
    if before is None:
        raise HTTPException(404, "no such order in this event")
    try:
        kiosk.orders.update(event_id, order_id, status=status, notes=notes, actor=user.actor)
    except EventError as exc:
        raise HTTPException(422, str(exc)) from None
    view = kiosk.orders.get(event_id, order_id)
    assert view is not None
    changed = before.order.notes != view.order.notes
    audit(
        kiosk,
        user.actor,
        "order_update",
        event=event_id,
        order=view.reference,
        status=f"{before.order.status}->{view.order.status}",
        notes_changed=changed,
    )
    return JSONResponse(order_json(view), headers=NO_STORE)


@staff_api.delete("/events/{event_id}/orders/{order_id}")
def api_order_erase(event_id: uuid.UUID, order_id: uuid.UUID, kiosk: KioskDep, user: CurrentUser) -> dict:
    """Erase an order (the guest's name and contact); the photos stay in the event."""
    view = kiosk.orders.get(event_id, order_id)
    if view is None or kiosk.orders.erase(event_id, order_id) is None:
        raise HTTPException(404, "no such order in this event")
    audit(kiosk, user.actor, "order_erase", event=event_id, order=view.reference)
    return {"erased": str(order_id), "reference": view.reference}


# --- public: a guest's order --------------------------------------------------------------------------------


@public.post(
    "/api/v1/orders",
    status_code=201,
    openapi_extra=_json_body(
        {
            "tokens": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": 100,
                "description": "matches' tokens from /api/v1/search/face (all of one event)",
            },
            "token": {"type": "string", "description": "one match's token (the older form)"},
            "name": {"type": "string", "maxLength": 200},
            "contact": {"type": "string", "maxLength": 254, "description": "e-mail or phone number"},
            "email": {"type": "string", "maxLength": 254, "description": "the older name of contact"},
        },
        [],
    ),
)
async def api_order(request: Request, kiosk: KioskDep) -> Response:
    """Order photos a search returned: JSON `{tokens: [...], name?, contact?}` (or `{token, name?, email?}`).
    The answer has the order `reference` to show to the photographer."""
    wait = kiosk.client_lookup.take("order:" + client_key(request))
    if wait:
        return too_many(wait, "orders")
    body = await read_json(request, 64 * 1024)
    tokens = body.get("tokens")
    if tokens is None:
        tokens = [body.get("token")] if body.get("token") is not None else []
    if not isinstance(tokens, list) or not tokens or len(tokens) > 100:
        raise HTTPException(422, "tokens: a list of 1 to 100 photo tokens from a search")
    ids = [kiosk.tokens.verify(str(t)) for t in tokens]
    if any(i is None for i in ids):
        raise HTTPException(404, "a photo link is not valid (it may have expired): search again")
    event_ids = {i[0] for i in ids if i}
    if len(event_ids) != 1:
        raise HTTPException(422, "the photos of one order belong to one event")
    event = await run_in_threadpool(kiosk.events.get, event_ids.pop())
    if event is None:
        raise HTTPException(404, "this photo link is not valid (it may have expired): search again")
    await run_in_threadpool(live_or_410, kiosk, event)
    name, contact = body.get("name") or "", body.get("contact") or body.get("email") or ""
    if not isinstance(name, str) or not isinstance(contact, str):
        raise HTTPException(422, "name and contact are text")
    try:
        view = await run_in_threadpool(kiosk.orders.create, event.id, [i[1] for i in ids if i], name, contact)
    except EventError as exc:
        raise HTTPException(422, str(exc)) from None
    out = {
        "order_id": str(view.order.id),
        "reference": view.reference,
        "photos": len(view.photos),
        "photo_id": str(view.photos[0].id),
        "status": view.order.status,
    }
    return JSONResponse(out, status_code=201, headers=NO_STORE)


router = APIRouter()
router.include_router(staff)
router.include_router(staff_api)
router.include_router(public)

"""The central web app: `create_app(service)` builds the FastAPI application on an opened CentralService.

    /login, /logout, /account       auth.py (argon2 passwords, server-side sessions, CSRF, login rate limit)
    /live, /loyal, /visitors, /sites, /crops/..., /live/camera/...      pages.py (login required)
    /api/v1/...                     api.py (the same data as JSON; session or API token; OpenAPI at /docs)
    /events, /kiosk, ...            kiosk/routes.py, kiosk/order_routes.py (the event kiosk)
    /admin/users, /admin/audit      admin.py (users, API tokens, the audit log)

Every route passes one guard (`auth.authorize`, a dependency of the whole app) that applies the route's rule in
`auth.ACCESS`; the app refuses to start when a route has none. Request bodies are bounded (`BodyLimits`).
    /healthz                        200 while the database answers and ingest stores (503 otherwise), service.health()
    /metrics                        Prometheus text: ingest outcomes and rejections by reason, table sizes, devices
    /static/...                     CSS and JS

The app does not start or stop the service; the caller does (`revisit central run`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlmodel import func, select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from revisit.central import admin, api, auth, pages, queries
from revisit.central.auth import (
    Accounts,
    FailureWindow,
    LoginRequired,
    bootstrap_accounts,
    load_secret,
    login_redirect,
    templates,
    unruled_routes,
)
from revisit.central.bounds import BodyLimits
from revisit.central.kiosk import order_routes as kiosk_orders
from revisit.central.kiosk import routes as kiosk
from revisit.central.service import CentralService
from revisit.central.store import DeadLetter, Device, Sighting, Visit, Visitor

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "revisit_session"
# multipart, limited by kiosk.routes.check_upload_size
UPLOAD_PATHS = (r"^/events/[^/]+/photos$", r"^/api/v1/photos/upload$")
LARGE_BODY_PATHS = {"/api/v1/search/face": 12 * 1024 * 1024}  # a base64 selfie (kiosk.routes.MAX_SEARCH_BODY)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
NO_CSP_PATHS = ("/docs", "/openapi.json")  # Swagger UI loads its script and styles from a CDN


def create_app(service: CentralService, *, live_urls: Mapping[str, str] | None = None) -> FastAPI:
    """The web app of an opened service. `live_urls` maps "site/device" (or "device") to the base URL of that
    edge's live view (e.g. "http://10.1.2.3:8090"), which central relays to the Live page; none: no live views."""
    cfg = service.config
    app = FastAPI(
        title="Revisit central",
        summary="Recurring visitors across sites: visitors, sightings, visits, loyal customers, devices.",
        docs_url="/docs",
        redoc_url=None,
        dependencies=[auth.Guard],
    )
    app.state.service = service
    web = cfg.web
    idle, absolute = timedelta(minutes=web.session_idle_min), timedelta(hours=web.session_max_hours)
    app.state.accounts = accounts = Accounts(service.store, idle=idle, absolute=absolute)
    app.state.generated_password = bootstrap_accounts(cfg, accounts)
    app.state.login_limiter = FailureWindow()
    app.state.live_urls = {str(k): str(v) for k, v in (live_urls or {}).items()}
    app.state.live_streams = asyncio.Semaphore(pages.MAX_LIVE_STREAMS)

    app.add_middleware(
        SessionMiddleware,
        secret_key=load_secret(cfg),
        session_cookie=SESSION_COOKIE,
        max_age=int(absolute.total_seconds()),
        same_site="lax",
        https_only=cfg.production,  # the cookie gets `Secure`; it is always HttpOnly
    )
    app.state.body_refusals = refusals = Counter()
    app.add_middleware(
        BodyLimits,
        max_bytes=web.max_json_bytes,
        max_depth=web.max_json_depth,
        exempt=UPLOAD_PATHS,
        larger=LARGE_BODY_PATHS,
        refused=refusals,
    )
    app.add_middleware(SecurityHeaders, hsts=cfg.production)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(kiosk.router)
    app.include_router(kiosk_orders.router)
    app.include_router(admin.router)

    registry = CollectorRegistry()
    registry.register(CentralCollector(service))
    registry.register(RefusalCollector(refusals))

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        """200 while the database answers and ingest can store; the body is the service's health (MQTT, broker,
        counters, ingest backlog and oldest unstored message age, store errors)."""
        health: dict[str, Any] = dict(service.health())
        try:
            with service.session() as s:
                s.exec(text("SELECT 1"))  # type: ignore[call-overload]
                health["dead_letters_waiting"] = s.exec(select(func.count()).select_from(DeadLetter)).one()
            health["database"] = "ok"
        except Exception as exc:  # any failure of the database is the answer here
            health["database"] = f"error: {type(exc).__name__}"
        health["ok"] = health["database"] == "ok" and health.get("ingest", {}).get("store_ok", True)
        return JSONResponse(health, status_code=200 if health["ok"] else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "login required"}, status_code=401)
        return login_redirect(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
        if not wants_html:
            return await http_exception_handler(request, exc)
        context = {"status": exc.status_code, "detail": exc.detail}
        return templates.TemplateResponse(
            request, "error.html", context, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    missing = unruled_routes(app)
    if missing:  # every route needs a rule in auth.ACCESS
        raise RuntimeError(f"routes without an access rule: {', '.join(missing)}")
    return app


class SecurityHeaders:
    """Adds the usual browser hardening headers to every response (pure ASGI: streams pass through)."""

    def __init__(self, app: ASGIApp, hsts: bool = False):
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = not scope["path"].startswith(NO_CSP_PATHS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in self._headers(csp):
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self, csp: bool) -> Iterator[tuple[bytes, bytes]]:
        yield b"x-content-type-options", b"nosniff"
        yield b"x-frame-options", b"DENY"
        yield b"referrer-policy", b"same-origin"
        if csp:
            yield b"content-security-policy", CSP.encode()
        if self.hsts:
            yield b"strict-transport-security", b"max-age=31536000"


class RefusalCollector(Collector):
    """Request bodies refused by `bounds.BodyLimits`, by reason (size, depth)."""

    def __init__(self, refused: Counter[str]):
        self.refused = refused

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily("revisit_central_http_refused", "request bodies refused", labels=["reason"])
        for reason in ("size", "depth"):
            family.add_metric([reason], self.refused.get(reason, 0))
        yield family


class CentralCollector(Collector):
    """Metrics read at scrape time from the ingest counters and the database."""

    def __init__(self, service: CentralService):
        self.service = service

    def collect(self) -> Iterator[Any]:
        counts = self.service.counters.snapshot()
        outcomes = CounterMetricFamily("revisit_central_messages", "MQTT messages by outcome", labels=["outcome"])
        rejected = CounterMetricFamily("revisit_central_rejected", "rejected messages by reason", labels=["reason"])
        for key, n in sorted(counts.items()):
            if key.startswith("rejected."):
                rejected.add_metric([key.split(".", 1)[1]], n)
            else:
                outcomes.add_metric([key], n)
        yield outcomes
        yield rejected
        health = self.service.health()
        yield GaugeMetricFamily("revisit_central_mqtt_connected", "1 while subscribed", value=health["mqtt_connected"])
        ingest = health.get("ingest", {})
        yield GaugeMetricFamily(
            "revisit_central_ingest_backlog", "messages received, not yet stored", value=ingest.get("backlog", 0)
        )
        yield GaugeMetricFamily(
            "revisit_central_ingest_oldest_unstored_seconds",
            "age of the oldest unstored message",
            value=ingest.get("oldest_unstored_s", 0.0),
        )
        yield GaugeMetricFamily("revisit_central_store_ok", "0 while storing fails", value=ingest.get("store_ok", True))
        yield CounterMetricFamily(
            "revisit_central_store_errors", "failed store attempts (retried)", value=ingest.get("store_errors", 0)
        )
        try:
            with self.service.session() as s:
                tables = (("visitors", Visitor), ("sightings", Sighting), ("visits", Visit))
                sizes = {name: s.exec(select(func.count()).select_from(model)).one() for name, model in tables}
                devices = list(s.exec(select(Device)))
        except Exception:  # the database is down: /healthz says so; keep the counters above
            log.warning("metrics: database not readable", exc_info=True)
            return
        for name, n in sizes.items():
            yield GaugeMetricFamily(f"revisit_central_{name}", f"{name} stored", value=n)
        by_status = GaugeMetricFamily("revisit_central_devices", "devices by status", labels=["status"])
        states = [queries.device_status(d) for d in devices]
        for status in ("online", "stale", "offline", "unknown"):
            by_status.add_metric([status], states.count(status))
        yield by_status

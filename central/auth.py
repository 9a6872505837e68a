"""Login, sessions, roles, CSRF, and the one guard every route of the web app passes (`authorize`).

Who: a session (the signed cookie holds a random session id; the `web_session` table decides whether it is still
alive, see `revisit.central.users`) or an API token (`Authorization: Bearer rvt_...`). What: `ACCESS` names the
permission each route needs ("public", "login", "sites", "events", "admin"), `PERMISSIONS` what each role has.
`authorize` is a dependency of the whole app (`web.create_app`): it looks up the matched route's rule, so no
handler checks roles itself, and `create_app` refuses to start when a route has no rule. Site managers also see
only their sites: handlers filter their queries by `Principal.sites` (`queries.site_ids`).

Every state-changing request (POST, PUT, PATCH, DELETE) of a session must carry the session's CSRF token as the
`csrf_token` form field or the `X-CSRF-Token` header (`verify_csrf`); token requests carry no cookie and need none.

For other routers:

    router = APIRouter(dependencies=[CSRFChecked])            # and a rule per route in ACCESS
    @router.get("/events")
    def events(request: Request, user: CurrentUser, service: ServiceDep) -> Response:
        return templates.TemplateResponse(request, "events.html", {...})   # extends "base.html"; {{ csrf_token() }}

`revisit central passwd` (`passwd_command`) prints a hash for `admin.password_hash`; `revisit central users ...`
manages accounts.
"""

from __future__ import annotations

import getpass
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from revisit.central.config import MIN_SECRET_CHARS, SECRET_FILE, CentralConfig
from revisit.central.service import CentralService
from revisit.central.users import (
    ROLES,
    AccountError,
    Accounts,
    Principal,
    check_password,
    hash_password,
    verify_password,
)
from revisit.shared.errors import RevisitError

log = logging.getLogger(__name__)

__all__ = ["ROLES", "Accounts", "Principal", "hash_password", "verify_password"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_ATTEMPTS = 5  # failed logins per client per LOGIN_WINDOW_S before 429
LOGIN_WINDOW_S = 60.0


class AuthConfigError(RevisitError):
    """The configured admin password hash or secret cannot be used."""


def passwd_command(prompt: Callable[[str], str] = getpass.getpass) -> int:
    """`revisit central passwd`: read a password twice without echo; print its hash for admin.password_hash."""
    password = read_new_password(prompt)
    if password is None:
        return 2
    print(hash_password(password))
    return 0


def read_new_password(prompt: Callable[[str], str] = getpass.getpass, what: str = "New admin password: ") -> str | None:
    password = prompt(what)
    try:
        check_password(password)
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if prompt("Again: ") != password:
        print("error: the passwords differ", file=sys.stderr)
        return None
    return password


# --- the secret ------------------------------------------------------------------------------------------------


def load_secret(config: CentralConfig) -> str:
    """The configured secret_key; else (development) the random one in <data_dir>/secret_key, made on first use
    with mode 0600. Production mode refuses a missing or short secret in the configuration already."""
    if config.secret_key is not None:
        secret = config.secret_key.get_secret_value()
        if len(secret) < MIN_SECRET_CHARS and config.production:
            raise AuthConfigError(f"secret_key needs at least {MIN_SECRET_CHARS} characters")
        return secret
    if config.production:
        raise AuthConfigError("production mode needs secret_key (or $REVISIT_SECRET_KEY)")
    path = Path(config.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if len(secret) < MIN_SECRET_CHARS:
            raise AuthConfigError(f"{path} holds no usable secret (delete it to make a new one)") from None
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
            log.warning("%s was readable by others: made 0600", path)
        return secret
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.warning(
        "no secret_key configured: generated a random one in %s (kept for this data directory; set "
        "secret_key or $REVISIT_SECRET_KEY in production)",
        path,
    )
    return secret


def bootstrap_accounts(config: CentralConfig, accounts: Accounts) -> str | None:
    """Ensure the [admin] account of the configuration; returns a generated password (development, no users)."""
    admin = config.admin
    configured = admin.password_hash.get_secret_value() if admin.password_hash is not None else None
    if configured is not None and not configured.startswith("$argon2"):
        raise AuthConfigError("admin.password_hash must be an argon2 hash (`revisit central passwd`)")
    plain = None if configured is not None else admin.password()
    if configured is None and plain is None and config.production and accounts.count() == 0:
        raise AuthConfigError("production mode needs admin.password_hash or the admin password variable")
    generated = accounts.ensure_admin(admin.username, configured, plain)
    if generated:
        log.warning(
            "no admin password configured and no users yet: created %r with the password %s (change it with "
            "`revisit central users passwd %s`)",
            admin.username,
            generated,
            admin.username,
        )
    return generated


# --- login rate limit ----------------------------------------------------------------------------------------


class FailureWindow:
    """At most `attempts` failures per key in a sliding `window_s`; bounded memory (oldest keys dropped)."""

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window_s: float = LOGIN_WINDOW_S, max_keys: int = 10_000):
        self.attempts, self.window_s, self.max_keys = attempts, window_s, max_keys
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until `key` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            fails = self._fails.get(key)
            if fails is None:
                return 0.0
            while fails and fails[0] <= now - self.window_s:
                fails.popleft()
            return fails[0] + self.window_s - now if len(fails) >= self.attempts else 0.0

    def fail(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._fails.setdefault(key, deque(maxlen=self.attempts)).append(now)
            self._fails.move_to_end(key)
            while len(self._fails) > self.max_keys:
                self._fails.popitem(last=False)

    def reset(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


# --- roles and the guard ---------------------------------------------------------------------------------------

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"sites", "events", "admin"}),
    "head_office": frozenset({"sites"}),
    "site_manager": frozenset({"sites"}),  # only their sites: the handlers filter by Principal.sites
    "event_staff": frozenset({"events"}),
}
LEVELS = frozenset({"public", "login", "sites", "events", "admin"})

# "METHOD path" of every route -> what it needs. public: anyone; login: any user or token; else a permission.
ACCESS: dict[str, str] = {
    # auth and accounts
    "GET /login": "public",
    "POST /login": "public",
    "POST /logout": "login",
    "GET /account": "login",
    "POST /account/password": "login",
    "GET /api/v1/me": "login",
    # operations and API docs
    "GET /healthz": "public",
    "GET /metrics": "public",
    "GET /openapi.json": "public",
    "GET /docs": "public",
    "GET /docs/oauth2-redirect": "public",
    "GET /static": "public",  # a mount (CSS, JS): no guard runs there
    # visitors, loyal customers, live view, sites (site managers: theirs only)
    "GET /": "login",
    "GET /live": "sites",
    "GET /loyal": "sites",
    "GET /visitors": "sites",
    "POST /visitors/merge": "sites",
    "GET /visitors/{visitor_id}": "sites",
    "POST /visitors/{visitor_id}/details": "sites",
    "POST /visitors/{visitor_id}/merge": "sites",
    "POST /visitors/{visitor_id}/split": "sites",
    "POST /visitors/{visitor_id}/erase": "sites",
    "POST /sightings/{sighting_id}/not-this-person": "sites",
    "GET /sites": "sites",
    "POST /visitors/status": "sites",
    "POST /visitors/{visitor_id}/status": "sites",
    "GET /analytics": "sites",
    "GET /exports/analytics.csv": "sites",
    "GET /exports/visits.csv": "sites",
    "GET /exports/loyal.csv": "sites",
    "GET /api/v1/analytics": "sites",
    "POST /sites/{site_id}/timezone": "admin",  # a chain-wide setting
    "GET /crops/{path:path}": "sites",
    "GET /live/camera/{camera_id}.mjpg": "sites",
    "GET /live/camera/{camera_id}.jpg": "sites",
    "GET /api/v1/visitors": "sites",
    "GET /api/v1/visitors/{visitor_id}": "sites",
    "PATCH /api/v1/visitors/{visitor_id}": "sites",
    "DELETE /api/v1/visitors/{visitor_id}": "sites",
    "POST /api/v1/visitors/{visitor_id}/merge": "sites",
    "POST /api/v1/visitors/{visitor_id}/split": "sites",
    "POST /api/v1/sightings/{sighting_id}/not-this-person": "sites",
    "GET /api/v1/sightings": "sites",
    "GET /api/v1/visits": "sites",
    "GET /api/v1/loyal": "sites",
    "GET /api/v1/sites": "sites",
    "GET /api/v1/devices": "sites",
    # the event kiosk: staff
    "GET /events": "events",
    "POST /events": "events",
    "GET /events/{event_id}": "events",
    "GET /events/{event_id}/status": "events",
    "POST /events/{event_id}/photos": "events",
    "POST /events/{event_id}/settings": "events",
    "POST /events/{event_id}/delete": "events",
    "GET /events/{event_id}/photos/{photo_id}/thumb": "events",
    "POST /api/v1/events": "events",
    "PATCH /api/v1/events/{event_id}": "events",
    "DELETE /api/v1/events/{event_id}": "events",
    "GET /api/v1/events/{event_id}/photos": "events",
    "POST /api/v1/photos/upload": "events",
    "GET /events/{event_id}/orders": "events",
    "POST /events/{event_id}/orders/{order_id}": "events",
    "POST /events/{event_id}/orders/{order_id}/erase": "events",
    "GET /events/{event_id}/orders.csv": "events",
    "GET /events/{event_id}/orders.zip": "events",
    "GET /events/{event_id}/qr.svg": "events",
    "GET /events/{event_id}/poster": "events",
    "GET /api/v1/events/{event_id}/orders": "events",
    "PATCH /api/v1/events/{event_id}/orders/{order_id}": "events",
    "DELETE /api/v1/events/{event_id}/orders/{order_id}": "events",
    # the event kiosk: guests
    "GET /kiosk": "public",
    "GET /api/v1/events/{code}": "public",
    "POST /api/v1/search/face": "public",
    "GET /kiosk/photo/{token}/{kind}": "public",
    "POST /api/v1/orders": "public",
    # administration
    "GET /admin/users": "admin",
    "POST /admin/users": "admin",
    "POST /admin/users/{username}/password": "admin",
    "POST /admin/users/{username}/role": "admin",
    "POST /admin/users/{username}/remove": "admin",
    "POST /admin/tokens": "admin",
    "POST /admin/tokens/{token_id}/revoke": "admin",
    "GET /admin/audit": "admin",
    "GET /api/v1/users": "admin",
    "GET /api/v1/audit": "admin",
}


def route_keys(route: Any, prefix: str = "") -> list[str]:
    """The ACCESS keys of a route ("GET /path" for each method; HEAD is checked as GET)."""
    methods = sorted(m for m in (getattr(route, "methods", None) or ()) if m != "HEAD") or ["GET"]
    return [f"{m} {prefix}{route.path}" for m in methods]


def app_route_keys(routes: Any, prefix: str = "") -> list[str]:
    """Every "METHOD path" the app serves (newer FastAPI keeps included routers nested: walked here)."""
    keys = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            more = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            keys += app_route_keys(inner.routes, prefix + more)
        elif hasattr(route, "path"):
            keys += route_keys(route, prefix)
    return keys


def unruled_routes(app: Any) -> list[str]:
    """Routes of the app without a rule in ACCESS (create_app refuses to start with any)."""
    return [k for k in app_route_keys(app.routes) if k not in ACCESS]


def get_service(request: Request) -> CentralService:
    return request.app.state.service


def get_accounts(request: Request) -> Accounts:
    return request.app.state.accounts


ServiceDep = Annotated[CentralService, Depends(get_service)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


class LoginRequired(Exception):
    """Raised by the guard; `web.create_app` turns it into a redirect to /login (pages) or 401 (/api)."""


def _principal(request: Request) -> Principal | None:
    """The token or session user of this request (cached on request.state)."""
    if "principal" in request.state._state:
        return request.state.principal
    accounts = get_accounts(request)
    principal = None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":  # other schemes (a proxy's Basic login) are not ours: ignored
        principal = accounts.token_principal(value.strip())
        if principal is None:
            raise HTTPException(401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"})
    elif isinstance(sid := request.session.get("sid"), str):
        principal = accounts.session_principal(sid)
        if principal is None:  # ended, idle or too old: forget it (and its CSRF token)
            request.session.clear()
    request.state.principal = principal
    return principal


def authorize(request: Request) -> Principal | None:
    """The guard of every route: the route's rule in ACCESS against the request's principal (401/redirect
    without a login, 403 without the permission). Unknown routes are refused."""
    route = request.scope.get("route")
    method = "GET" if request.method == "HEAD" else request.method
    rule = ACCESS.get(f"{method} {getattr(route, 'path', '')}")
    if rule is None:
        log.error("no access rule for %s %s: refused", method, getattr(route, "path", request.url.path))
        raise HTTPException(403, "no access rule for this route")
    principal = _principal(request)
    if rule == "public":
        return principal
    if principal is None:
        raise LoginRequired()
    if rule != "login" and rule not in PERMISSIONS.get(principal.role, frozenset()):
        raise HTTPException(403, f"your role ({principal.role}) may not use this")
    return principal


def require_principal(principal: Annotated[Principal | None, Depends(authorize)]) -> Principal:
    if principal is None:
        raise LoginRequired()
    return principal


CurrentUser = Annotated[Principal, Depends(require_principal)]
Guard = Depends(authorize)


def current_user(request: Request) -> Principal | None:
    """The principal the guard found for this request (None: anonymous, or the guard did not run)."""
    return request.state._state.get("principal")


def can(principal: Principal | None, permission: str) -> bool:
    return principal is not None and permission in PERMISSIONS.get(principal.role, frozenset())


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def verify_csrf(request: Request, principal: Annotated[Principal | None, Depends(authorize)]) -> None:
    """403 unless a state-changing request of a browser session carries its CSRF token (form field or header).
    Token requests carry no cookie: nothing to forge."""
    if request.method in SAFE_METHODS or (principal is not None and principal.kind == "token"):
        return
    expected = request.session.get("csrf")
    sent: Any = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = (await request.form()).get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")


CSRFChecked = Depends(verify_csrf)


def flash(request: Request, message: str, kind: str = "info") -> None:
    """A message shown once on the next page."""
    # assigned, not appended in place: the session middleware only saves what was set
    request.session["flash"] = [*request.session.get("flash", [])[-9:], [kind, message[:500]]]


def safe_next(target: str | None, default: str = "/") -> str:
    """A local path to go to after login; anything else (other hosts, schemes) becomes `default`."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


# --- templates ---------------------------------------------------------------------------------------------


@pass_context
def _csrf_global(context: Any) -> str:
    return csrf_token(context["request"])


@pass_context
def _flashes_global(context: Any) -> list[list[str]]:
    return context["request"].session.pop("flash", [])


@pass_context
def _user_global(context: Any) -> Principal | None:
    return current_user(context["request"])


@pass_context
def _can_global(context: Any, permission: str) -> bool:
    return can(current_user(context["request"]), permission)


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals.update(
    csrf_token=_csrf_global, pop_flashes=_flashes_global, current_user=_user_global, can=_can_global
)


# --- login / logout ----------------------------------------------------------------------------------------

router = APIRouter(tags=["auth"], dependencies=[CSRFChecked])


def client_key(request: Request) -> str:
    """The client address that rate limits key on (logins here, the kiosk's searches and look-ups)."""
    return request.client.host if request.client else "unknown"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    if current_user(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return templates.TemplateResponse(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    accounts: AccountsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002 - the form field's name
) -> Response:
    limiter: FailureWindow = request.app.state.login_limiter
    key = client_key(request)
    wait = limiter.retry_after(key)
    if wait > 0:
        log.warning("login rate limit hit by %s", key)
        context = {"next": safe_next(next), "error": f"Too many attempts; try again in {wait:.0f} s."}
        response = templates.TemplateResponse(request, "login.html", context, status_code=429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    user = accounts.authenticate(username, password)
    if user is None:
        limiter.fail(key)
        log.info("failed login for %r from %s", username[:64], key)
        context = {"next": safe_next(next), "error": "Wrong user name or password."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    limiter.reset(key)
    accounts.purge_sessions()  # sessions left to time out are deleted here (a used one is checked on use)
    old = request.session.get("sid")
    if isinstance(old, str):
        accounts.end_session(old)
    request.session.clear()  # a fresh session (and CSRF token) on login
    request.session.update(sid=accounts.start_session(user, key), login_at=int(time.time()))
    csrf_token(request)
    log.info("login of %r (%s) from %s", user.username, user.role, key)
    target = safe_next(next)
    if target == "/" and user.role == "event_staff":
        target = "/events"
    return RedirectResponse(target, status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, accounts: AccountsDep) -> Response:
    sid = request.session.get("sid")
    if isinstance(sid, str):
        accounts.end_session(sid)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/account", include_in_schema=False)
def account_page(request: Request, user: CurrentUser) -> Response:
    return templates.TemplateResponse(request, "account.html", {"user": user})


@router.post("/account/password", include_in_schema=False)
def change_own_password(
    request: Request,
    accounts: AccountsDep,
    user: CurrentUser,
    current: Annotated[str, Form(max_length=1024)],
    new: Annotated[str, Form(max_length=1024)],
    again: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Every session of the user ends; this browser gets a new one."""
    if user.kind != "session":
        raise HTTPException(403, "API tokens have no password")
    row = accounts.authenticate(user.name, current)
    if row is None:
        flash(request, "The current password is wrong.", "error")
        return RedirectResponse("/account", status_code=303)
    if new != again:
        flash(request, "The new passwords differ.", "error")
        return RedirectResponse("/account", status_code=303)
    try:
        accounts.set_password(user.name, new, actor=user.actor)
    except AccountError as exc:
        flash(request, str(exc), "error")
        return RedirectResponse("/account", status_code=303)
    request.session.clear()
    request.session.update(sid=accounts.start_session(row, client_key(request)), login_at=int(time.time()))
    csrf_token(request)
    flash(request, "Password changed; your other sessions have ended.", "ok")
    return RedirectResponse("/account", status_code=303)


def login_redirect(request: Request) -> RedirectResponse:
    """To the login form, and back to this page after it (for a form post: back to the page it came from)."""
    if request.method in SAFE_METHODS:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = referer.netloc == request.url.netloc
        target = referer.path + (f"?{referer.query}" if referer.query else "") if same_site else "/"
    return RedirectResponse(f"/login?next={quote(safe_next(target), safe='')}", status_code=303)

"""Login, sessions, CSRF, and the request dependencies the pages, the API and the kiosk share.

Sessions are Starlette's signed cookie (see `web.create_app`): it holds the user name, a fingerprint of the
user's password hash (changing the password ends every session), the CSRF token and flash messages.
Passwords are argon2id hashes (argon2-cffi); a plain password from the environment is hashed at start-up
and only the hash is kept. Every state-changing request (POST, PUT, PATCH, DELETE) must carry the
session's CSRF token as the `csrf_token` form field or the `X-CSRF-Token` header (`verify_csrf`).

For other routers (the kiosk):

    router = APIRouter(dependencies=[Depends(require_user), CSRFChecked])   # login (303 to /login, 401 on /api)
    @router.get("/events")
    def events(request: Request, user: CurrentUser, service: ServiceDep) -> Response:
        return templates.TemplateResponse(request, "events.html", {...})   # extends "base.html"; {{ csrf_token() }}

`revisit central passwd` (`passwd_command`) prints the hash to put in `admin.password_hash`.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import hmac
import logging
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from revisit.central.config import CentralConfig
from revisit.central.service import CentralService
from revisit.shared.errors import RevisitError

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_ATTEMPTS = 5  # failed logins per client per LOGIN_WINDOW_S before 429
LOGIN_WINDOW_S = 60.0

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters


class AuthConfigError(RevisitError):
    """The configured admin password hash cannot be used."""


def hash_password(password: str) -> str:
    """An argon2id hash for `admin.password_hash` in the central configuration."""
    return _hasher.hash(password)


def passwd_command(prompt: Callable[[str], str] = getpass.getpass) -> int:
    """`revisit central passwd`: read a password twice without echo; print its hash for admin.password_hash."""
    password = prompt("New admin password: ")
    if len(password) < 12:
        print("error: use at least 12 characters", file=sys.stderr)
        return 2
    if prompt("Again: ") != password:
        print("error: the passwords differ", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# --- users ---------------------------------------------------------------------------------------------------


@dataclass
class Users:
    """The accounts that may log in (today: the one admin account of the configuration)."""

    hashes: dict[str, str]
    generated_password: str | None = None  # set when none was configured (development only)

    @classmethod
    def from_config(cls, config: CentralConfig) -> Users:
        admin = config.admin
        generated = None
        if admin.password_hash is not None:
            stored = admin.password_hash.get_secret_value()
            if not stored.startswith("$argon2"):
                raise AuthConfigError("admin.password_hash must be an argon2 hash (revisit.central.auth.hash_password)")
        elif (plain := admin.password()) is not None:
            stored = hash_password(plain)
        elif config.production:  # the configuration refuses this already; never fall through to a random one
            raise AuthConfigError("production mode needs admin.password_hash or the admin password variable")
        else:
            generated = secrets.token_urlsafe(12)
            stored = hash_password(generated)
            log.warning(
                "no admin password configured (admin.password_hash or $%s): this run's password for %r is %s",
                admin.password_env,
                admin.username,
                generated,
            )
        return cls({admin.username: stored}, generated)

    def authenticate(self, username: str, password: str) -> bool:
        stored = self.hashes.get(username)
        if stored is None:
            verify_password(_dummy_hash(), password)  # same work for unknown names: no user enumeration by timing
            return False
        return verify_password(stored, password)

    def fingerprint(self, username: str) -> str | None:
        """A short digest of the user's hash, kept in the session: a new password invalidates old sessions."""
        stored = self.hashes.get(username)
        return hashlib.sha256(stored.encode()).hexdigest()[:16] if stored else None


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


# --- login rate limit ----------------------------------------------------------------------------------------


class RateLimiter:
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


# --- request state -------------------------------------------------------------------------------------------


def get_service(request: Request) -> CentralService:
    return request.app.state.service


def get_users(request: Request) -> Users:
    return request.app.state.users


ServiceDep = Annotated[CentralService, Depends(get_service)]
UsersDep = Annotated[Users, Depends(get_users)]


class LoginRequired(Exception):
    """Raised by `require_user`; `web.create_app` turns it into a redirect to /login (pages) or 401 (/api)."""


def current_user(request: Request) -> str | None:
    """The logged-in user of this request's session, or None."""
    user = request.session.get("user")
    if not isinstance(user, str):
        return None
    fingerprint = get_users(request).fingerprint(user)
    if fingerprint is None or not hmac.compare_digest(fingerprint, str(request.session.get("pwf", ""))):
        return None
    return user


async def require_user(request: Request) -> str:
    user = current_user(request)
    if user is None:
        raise LoginRequired()
    return user


CurrentUser = Annotated[str, Depends(require_user)]


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def verify_csrf(request: Request) -> None:
    """403 unless a state-changing request carries this session's CSRF token (form field or header)."""
    if request.method in SAFE_METHODS:
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
def _user_global(context: Any) -> str | None:
    return current_user(context["request"])


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals.update(csrf_token=_csrf_global, pop_flashes=_flashes_global, current_user=_user_global)


# --- login / logout ----------------------------------------------------------------------------------------

router = APIRouter(tags=["auth"], dependencies=[CSRFChecked])


def _client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    if current_user(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return templates.TemplateResponse(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    users: UsersDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002 - the form field's name
) -> Response:
    limiter: RateLimiter = request.app.state.login_limiter
    key = _client_key(request)
    wait = limiter.retry_after(key)
    if wait > 0:
        log.warning("login rate limit hit by %s", key)
        context = {"next": safe_next(next), "error": f"Too many attempts; try again in {wait:.0f} s."}
        response = templates.TemplateResponse(request, "login.html", context, status_code=429)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if not users.authenticate(username, password):
        limiter.fail(key)
        log.info("failed login for %r from %s", username[:64], key)
        context = {"next": safe_next(next), "error": "Wrong user name or password."}
        return templates.TemplateResponse(request, "login.html", context, status_code=401)
    limiter.reset(key)
    request.session.clear()  # a fresh session (and CSRF token) on login
    request.session.update(user=username, pwf=users.fingerprint(username), login_at=int(time.time()))
    csrf_token(request)
    log.info("login of %r from %s", username, key)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


def login_redirect(request: Request) -> RedirectResponse:
    """To the login form, and back to this page after it (for a form post: back to the page it came from)."""
    if request.method in SAFE_METHODS:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        referer = urlsplit(request.headers.get("referer", ""))
        same_site = referer.netloc == request.url.netloc
        target = referer.path + (f"?{referer.query}" if referer.query else "") if same_site else "/"
    return RedirectResponse(f"/login?next={quote(safe_next(target), safe='')}", status_code=303)

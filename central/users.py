"""Accounts of the central web app: users with roles, server-side sessions, API tokens, and the audit log.

Roles (what each may do is `auth.PERMISSIONS`; which route needs what is `auth.ACCESS`):

    admin         everything: users, tokens, the audit log, every site, events
    head_office   visitors, loyal customers, live view, sites and devices of every site
    site_manager  the same, only for the sites named in the account (others' visitors are not found)
    event_staff   the event kiosk's staff pages and API only

Sessions live in the `web_session` table: the signed cookie holds a random session id and the table its SHA-256,
so logging out, changing a password or removing a user ends sessions at once; a session also ends when unused for
`web.session_idle_min` or `web.session_max_hours` after its login. API tokens (`Authorization: Bearer rvt_...`) are
random, shown once, stored as SHA-256, carry a role and sites, and end when revoked.

The `[admin]` account of the configuration is ensured on every start (created, or its password updated when the
configured one changed), so a configuration with only `admin.password_hash` keeps working.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from revisit.central.store import ApiToken, AuditLog, Store, User, WebSession, utcnow
from revisit.shared.errors import NotFound, RevisitError
from revisit.shared.schema import is_ident

log = logging.getLogger(__name__)

ROLES = ("admin", "head_office", "site_manager", "event_staff")
Role = Literal["admin", "head_office", "site_manager", "event_staff"]
ROLE_NAMES = {
    "admin": "Administrator (users, tokens, audit, everything)",
    "head_office": "Head office (all sites)",
    "site_manager": "Site manager (only their sites)",
    "event_staff": "Event staff (events and kiosk only)",
}
MIN_PASSWORD = 12
TOKEN_PREFIX = "rvt_"
TOUCH_EVERY = timedelta(seconds=60)  # a session's last use is written at most this often
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_hasher = PasswordHasher()  # argon2id, the library's current recommended parameters


class AccountError(RevisitError):
    """A user or token operation that cannot be done (unknown user, weak password, bad role)."""


class UnknownUser(AccountError, NotFound):
    """No user of that name."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"use a password of at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccountError("password too long (1024 characters at most)")


def check_scope(role: str, sites: Iterable[str]) -> list[str]:
    """The role checked and the site list it keeps (only site managers have one; it must not be empty)."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    names = sorted({s.strip() for s in sites if s and s.strip()})
    bad = [s for s in names if not is_ident(s)]
    if bad:
        raise AccountError(f"not a site id: {bad[0][:64]!r}")
    if role == "site_manager":
        if not names:
            raise AccountError("a site manager needs at least one site")
        return names
    return []


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a logged-in user or an API token, with its role and sites (None: all sites)."""

    name: str
    role: str
    sites: frozenset[str] | None
    kind: Literal["session", "token"] = "session"
    user_id: uuid.UUID | None = None

    @property
    def actor(self) -> str:
        """The name written to the audit log."""
        return self.name[:64]

    def __str__(self) -> str:
        return self.name

    def sees_site(self, site: str) -> bool:
        return self.sites is None or site in self.sites


def principal_of(role: str, sites: list[str], name: str, kind: Literal["session", "token"], user_id=None):
    scoped = frozenset(sites) if role == "site_manager" else None
    return Principal(name, role, scoped, kind, user_id)


class Accounts:
    """Users, sessions, tokens and the audit log in the central database."""

    def __init__(self, store: Store, idle: timedelta = timedelta(hours=1), absolute: timedelta = timedelta(hours=12)):
        self.store = store
        self.idle = idle
        self.absolute = absolute

    # --- users ---

    def user(self, username: str) -> User | None:
        with self.store.session() as s:
            return s.exec(select(User).where(User.username == username)).first()

    def users(self) -> list[User]:
        with self.store.session() as s:
            return list(s.exec(select(User).order_by(User.username)))

    def count(self) -> int:
        with self.store.session() as s:
            return int(s.exec(select(func.count()).select_from(User)).one())

    def add_user(self, username: str, password: str, role: str, sites: Iterable[str] = (), *, actor: str = "") -> User:
        if not _USERNAME.match(username or ""):
            raise AccountError("user names are 1-64 letters, digits and . _ @ - (starting with a letter or digit)")
        check_password(password)
        kept = check_scope(role, sites)
        user = User(username=username, password_hash=hash_password(password), role=role, sites=kept)
        try:
            with self.store.begin() as s:
                s.add(user)
                s.add(AuditLog(actor=actor, action="user_add", details={"user": username, "role": role, "sites": kept}))
        except IntegrityError:
            raise AccountError(f"user {username!r} exists already") from None
        log.info("user %r added (%s) by %r", username, role, actor)
        return user

    def set_password(self, username: str, password: str, *, actor: str = "") -> None:
        """A new password; every session of the user ends."""
        check_password(password)
        new = hash_password(password)
        with self.store.begin() as s:
            user = self._get(s, username)
            user.password_hash, user.password_changed_at = new, utcnow()
            s.add(user)
            s.exec(delete(WebSession).where(WebSession.user_id == user.id))  # type: ignore[call-overload]
            s.add(AuditLog(actor=actor, action="user_passwd", details={"user": username}))
        log.info("password of %r changed by %r; its sessions ended", username, actor)

    def set_role(self, username: str, role: str, sites: Iterable[str] = (), *, actor: str = "") -> None:
        kept = check_scope(role, sites)
        with self.store.begin() as s:
            user = self._get(s, username)
            if user.role == "admin" and role != "admin" and self._admins(s) <= 1:
                raise AccountError("the last administrator keeps the admin role")
            user.role, user.sites = role, kept
            s.add(user)
            s.add(AuditLog(actor=actor, action="user_role", details={"user": username, "role": role, "sites": kept}))

    def remove_user(self, username: str, *, actor: str = "") -> None:
        """Delete the user; their sessions end at once."""
        with self.store.begin() as s:
            user = self._get(s, username)
            if user.role == "admin" and self._admins(s) <= 1:
                raise AccountError("the last administrator cannot be removed")
            s.exec(delete(WebSession).where(WebSession.user_id == user.id))  # type: ignore[call-overload]
            s.delete(user)
            s.add(AuditLog(actor=actor, action="user_remove", details={"user": username}))
        log.info("user %r removed by %r", username, actor)

    def authenticate(self, username: str, password: str) -> User | None:
        user = self.user(username) if _USERNAME.match(username or "") else None
        if user is None:
            verify_password(_dummy_hash(), password)  # the same work for unknown names: no enumeration by timing
            return None
        return user if verify_password(user.password_hash, password) else None

    def ensure_admin(self, username: str, configured_hash: str | None, plain: str | None) -> str | None:
        """The configuration's admin account exists with the admin role and the configured password (applied
        again only when the configuration changed, so a password changed on the pages survives a restart).
        With no admin password configured and no user at all, one is generated and returned (development)."""
        generated = None
        with self.store.begin() as s:
            user = s.exec(select(User).where(User.username == username)).first()
            if configured_hash is None and plain is None:
                if user is not None or s.exec(select(func.count()).select_from(User)).one() > 0:
                    return None
                generated = secrets.token_urlsafe(12)
                applied, source = hash_password(generated), None
            elif configured_hash is not None:
                if user is not None and user.config_hash == configured_hash:
                    applied, source = None, None
                else:
                    applied = source = configured_hash
            else:
                assert plain is not None
                same = user is not None and user.config_hash and verify_password(user.config_hash, plain)
                applied = source = None if same else hash_password(plain)
            if user is None:
                user = User(username=username, password_hash=applied or "", role="admin", config_hash=source)
                s.add(user)
                s.add(AuditLog(actor="config", action="user_add", details={"user": username, "role": "admin"}))
                log.info("admin account %r created from the configuration", username)
            else:
                if applied is not None:
                    user.password_hash, user.config_hash, user.password_changed_at = applied, source, utcnow()
                    s.exec(delete(WebSession).where(WebSession.user_id == user.id))  # type: ignore[call-overload]
                    s.add(AuditLog(actor="config", action="user_passwd", details={"user": username}))
                    log.info("password of %r set from the configuration; its sessions ended", username)
                if user.role != "admin":
                    user.role, user.sites = "admin", []
                s.add(user)
        return generated

    def _get(self, s: Any, username: str) -> User:
        user = s.exec(select(User).where(User.username == username)).first()
        if user is None:
            raise UnknownUser(f"no user {username!r}")
        return user

    def _admins(self, s: Any) -> int:
        return int(s.exec(select(func.count()).select_from(User).where(User.role == "admin")).one())

    # --- sessions ---

    def start_session(self, user: User, client: str = "") -> str:
        """A new session of the user; returns the raw id for the cookie (the table keeps its SHA-256)."""
        raw = secrets.token_urlsafe(32)
        with self.store.begin() as s:
            s.add(WebSession(id=_digest(raw), user_id=user.id, client=client[:64]))
        return raw

    def session_principal(self, raw: str, now: datetime | None = None) -> Principal | None:
        """The user of a live session; an idle or too old session is deleted and gives None."""
        if not isinstance(raw, str) or not 20 <= len(raw) <= 100:
            return None
        now = now or utcnow()
        key = _digest(raw)
        with self.store.session() as s:
            row = s.exec(select(WebSession, User).join(User).where(WebSession.id == key)).first()
        if row is None:
            return None
        session, user = row
        if now - session.last_seen_at > self.idle or now - session.created_at > self.absolute:
            self.end_session(raw)
            return None
        if now - session.last_seen_at > TOUCH_EVERY:
            with self.store.begin() as s:
                s.exec(
                    WebSession.__table__.update()  # type: ignore[attr-defined]
                    .where(WebSession.__table__.c.id == key)  # type: ignore[attr-defined]
                    .values(last_seen_at=now)
                )
        return principal_of(user.role, list(user.sites or []), user.username, "session", user.id)

    def end_session(self, raw: str) -> None:
        if isinstance(raw, str) and raw:
            with self.store.begin() as s:
                s.exec(delete(WebSession).where(WebSession.id == _digest(raw)))  # type: ignore[call-overload]

    def sessions(self, username: str) -> int:
        with self.store.session() as s:
            user = self._get(s, username)
            stmt = select(func.count()).select_from(WebSession).where(WebSession.user_id == user.id)
            return int(s.exec(stmt).one())

    def purge_sessions(self, now: datetime | None = None) -> int:
        """Delete sessions past their idle or absolute timeout (also done lazily on use)."""
        now = now or utcnow()
        with self.store.begin() as s:
            idle = col(WebSession.last_seen_at) < now - self.idle
            old = col(WebSession.created_at) < now - self.absolute
            result = s.exec(delete(WebSession).where(idle | old))  # type: ignore[call-overload]
            return int(result.rowcount or 0)

    # --- API tokens ---

    def create_token(self, name: str, role: str, sites: Iterable[str] = (), *, actor: str = "") -> tuple[str, ApiToken]:
        """A new token: (the token, shown once and never stored, its row)."""
        name = " ".join((name or "").split())
        if not 1 <= len(name) <= 64:
            raise AccountError("a token needs a name of 1-64 characters")
        kept = check_scope(role, sites)
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(name=name, token_hash=_digest(raw), hint=raw[:10], role=role, sites=kept, created_by=actor)
        with self.store.begin() as s:
            s.add(token)
            s.add(
                AuditLog(
                    actor=actor,
                    action="token_add",
                    details={"token": name, "id": str(token.id), "role": role, "sites": kept},
                )
            )
        return raw, token

    def revoke_token(self, token_id: uuid.UUID, *, actor: str = "") -> bool:
        with self.store.begin() as s:
            token = s.get(ApiToken, token_id)
            if token is None or token.revoked_at is not None:
                return False
            token.revoked_at = utcnow()
            s.add(token)
            s.add(AuditLog(actor=actor, action="token_revoke", details={"token": token.name, "id": str(token.id)}))
        return True

    def tokens(self) -> list[ApiToken]:
        with self.store.session() as s:
            return list(s.exec(select(ApiToken).order_by(col(ApiToken.created_at).desc())))

    def token_principal(self, raw: str, now: datetime | None = None) -> Principal | None:
        if not isinstance(raw, str) or not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
            return None
        now = now or utcnow()
        with self.store.session() as s:
            token = s.exec(select(ApiToken).where(ApiToken.token_hash == _digest(raw))).first()
        if token is None or token.revoked_at is not None:
            return None
        if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
            with self.store.begin() as s:
                s.exec(
                    ApiToken.__table__.update()  # type: ignore[attr-defined]
                    .where(ApiToken.__table__.c.id == token.id)  # type: ignore[attr-defined]
                    .values(last_used_at=now)
                )
        return principal_of(token.role, list(token.sites or []), f"token:{token.name}", "token")

    # --- audit log ---

    def audit(self, actor: str, action: str, details: dict | None = None, visitor_id: uuid.UUID | None = None) -> None:
        with self.store.begin() as s:
            s.add(AuditLog(actor=actor[:64], action=action[:32], visitor_id=visitor_id, details=details or {}))

    def audit_page(
        self, *, actor: str = "", action: str = "", offset: int = 0, limit: int = 50
    ) -> tuple[list[AuditLog], int]:
        """Newest first, filtered by actor and action (exact); (rows, total)."""
        stmt = select(AuditLog)
        if actor:
            stmt = stmt.where(AuditLog.actor == actor)
        if action:
            stmt = stmt.where(AuditLog.action == action)
        with self.store.session() as s:
            total = s.exec(select(func.count()).select_from(stmt.subquery())).one()
            rows = s.exec(stmt.order_by(col(AuditLog.at).desc(), AuditLog.id).offset(offset).limit(limit))
            return list(rows), int(total)

    def audit_facets(self) -> tuple[list[str], list[str]]:
        """The actors and actions present, for the audit page's filters."""
        with self.store.session() as s:
            actors = list(s.exec(select(AuditLog.actor).distinct().order_by(AuditLog.actor).limit(500)))
            actions = list(s.exec(select(AuditLog.action).distinct().order_by(AuditLog.action).limit(200)))
        return actors, actions

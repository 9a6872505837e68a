"""Administration pages and API (the "admin" permission; rules in `auth.ACCESS`).

    GET  /admin/users                       users (role, sites, sessions) and API tokens, with forms
    POST /admin/users                       add a user (username, password, role, sites)
    POST /admin/users/{name}/password       set a password (the user's sessions end)
    POST /admin/users/{name}/role           change role and sites
    POST /admin/users/{name}/remove         remove (the user's sessions end)
    POST /admin/tokens                      a new API token, shown once on the answer page
    POST /admin/tokens/{id}/revoke          revoke a token (at once)
    GET  /admin/audit                       the audit log: newest first, paged, filter by user and action
    GET  /api/v1/users, /api/v1/audit       the same as JSON

Every change here is written to the audit log with the admin's name.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from revisit.central.auth import ROLES, AccountError, AccountsDep, CSRFChecked, CurrentUser, flash, templates
from revisit.central.bounds import Offset
from revisit.central.users import ROLE_NAMES
from revisit.shared.errors import NotFound

pages = APIRouter(dependencies=[CSRFChecked], include_in_schema=False)
api = APIRouter(prefix="/api/v1", tags=["administration"], dependencies=[CSRFChecked])

AUDIT_PAGE_SIZE = 50


def _sites(text: str) -> list[str]:
    return [s for s in text.replace(",", " ").split() if s]


def _back(path: str = "/admin/users") -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _users_page(request: Request, accounts: Any, new_token: str | None = None, status_code: int = 200) -> Response:
    users = accounts.users()
    sessions = {u.username: accounts.sessions(u.username) for u in users}
    context = {
        "users": users,
        "sessions": sessions,
        "tokens": accounts.tokens(),
        "roles": ROLE_NAMES,
        "new_token": new_token,
    }
    return templates.TemplateResponse(request, "admin_users.html", context, status_code=status_code)


@pages.get("/admin/users")
def users_page(request: Request, accounts: AccountsDep) -> Response:
    return _users_page(request, accounts)


@pages.post("/admin/users")
def add_user(
    request: Request,
    accounts: AccountsDep,
    user: CurrentUser,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[str, Form(max_length=16)],
    sites: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    try:
        accounts.add_user(username.strip(), password, role, _sites(sites), actor=user.actor)
    except AccountError as exc:
        flash(request, str(exc), "error")
        return _back()
    flash(request, f"User {username.strip()} added ({ROLE_NAMES.get(role, role)}).", "ok")
    return _back()


def _change(request: Request, action: Any, message: str) -> Response:
    try:
        action()
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except AccountError as exc:
        flash(request, str(exc), "error")
        return _back()
    flash(request, message, "ok")
    return _back()


@pages.post("/admin/users/{username}/password")
def set_password(
    request: Request,
    accounts: AccountsDep,
    user: CurrentUser,
    username: str,
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    action = lambda: accounts.set_password(username, password, actor=user.actor)  # noqa: E731
    return _change(request, action, f"Password of {username} set; their sessions have ended.")


@pages.post("/admin/users/{username}/role")
def set_role(
    request: Request,
    accounts: AccountsDep,
    user: CurrentUser,
    username: str,
    role: Annotated[str, Form(max_length=16)],
    sites: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    action = lambda: accounts.set_role(username, role, _sites(sites), actor=user.actor)  # noqa: E731
    return _change(request, action, f"{username} is now {ROLE_NAMES.get(role, role)}.")


@pages.post("/admin/users/{username}/remove")
def remove_user(request: Request, accounts: AccountsDep, user: CurrentUser, username: str) -> Response:
    if username == user.name:
        flash(request, "You cannot remove your own account.", "error")
        return _back()
    action = lambda: accounts.remove_user(username, actor=user.actor)  # noqa: E731
    return _change(request, action, f"User {username} removed; their sessions have ended.")


@pages.post("/admin/tokens")
def add_token(
    request: Request,
    accounts: AccountsDep,
    user: CurrentUser,
    name: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=16)],
    sites: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    """The token is in this answer only (never stored, never in a redirect or the session cookie)."""
    try:
        raw, _ = accounts.create_token(name, role, _sites(sites), actor=user.actor)
    except AccountError as exc:
        flash(request, str(exc), "error")
        return _back()
    response = _users_page(request, accounts, new_token=raw, status_code=201)
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.post("/admin/tokens/{token_id}/revoke")
def revoke_token(request: Request, accounts: AccountsDep, user: CurrentUser, token_id: uuid.UUID) -> Response:
    if not accounts.revoke_token(token_id, actor=user.actor):
        raise HTTPException(404, "no such token (or revoked already)")
    flash(request, "Token revoked.", "ok")
    return _back()


@pages.get("/admin/audit")
def audit_page(
    request: Request,
    accounts: AccountsDep,
    actor: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=32)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    rows, total = accounts.audit_page(
        actor=actor, action=action, offset=(page - 1) * AUDIT_PAGE_SIZE, limit=AUDIT_PAGE_SIZE
    )
    actors, actions = accounts.audit_facets()
    context = {
        "rows": rows,
        "total": total,
        "actor": actor,
        "action": action,
        "actors": actors,
        "actions": actions,
        "page": page,
        "pages": max(1, -(-total // AUDIT_PAGE_SIZE)),
    }
    return templates.TemplateResponse(request, "admin_audit.html", context)


# --- API -------------------------------------------------------------------------------------------------------


class UserOut(BaseModel):
    username: str
    role: str
    sites: list[str]
    created_at: datetime
    password_changed_at: datetime


class AuditOut(BaseModel):
    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    visitor_id: uuid.UUID | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditOut]
    total: int
    offset: int
    limit: int


@api.get("/users")
def api_users(accounts: AccountsDep) -> list[UserOut]:
    """Users and their roles (admins only)."""
    return [
        UserOut(
            username=u.username,
            role=u.role,
            sites=list(u.sites or []),
            created_at=u.created_at,
            password_changed_at=u.password_changed_at,
        )
        for u in accounts.users()
    ]


@api.get("/audit")
def api_audit(
    accounts: AccountsDep,
    actor: Annotated[str, Query(max_length=64)] = "",
    action: Annotated[str, Query(max_length=32)] = "",
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """The audit log, newest first (admins only)."""
    rows, total = accounts.audit_page(actor=actor, action=action, offset=offset, limit=limit)
    items = [
        AuditOut(
            id=r.id, at=r.at, actor=r.actor, action=r.action, visitor_id=r.visitor_id, details=dict(r.details or {})
        )
        for r in rows
    ]
    return AuditPage(items=items, total=total, offset=offset, limit=limit)


router = APIRouter()
router.include_router(pages)
router.include_router(api)
assert set(ROLE_NAMES) == set(ROLES)

"""Who may use which route: the role x route table over every route of the app, API tokens, and the users CLI.

The table below is written independently of `auth.ACCESS`: a route added to the app without a line here fails
`test_the_table_covers_every_route`, and a rule that differs from the table fails `test_role_x_route`.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from revisit.central.auth import ACCESS, app_route_keys
from revisit.central.web import create_app
from tests.central.webapp import PASSWORD, csrf_from, login, open_service, web_config

# roles: A admin, H head office, S site manager, E event staff; "*": anyone, no login; "AHSE": any login
TABLE: dict[str, str] = {
    "GET /login": "*",
    "POST /login": "*",
    "POST /logout": "AHSE",
    "GET /account": "AHSE",
    "POST /account/password": "AHSE",
    "GET /api/v1/me": "AHSE",
    "GET /healthz": "*",
    "GET /metrics": "*",
    "GET /openapi.json": "*",
    "GET /docs": "*",
    "GET /docs/oauth2-redirect": "*",
    "GET /static": "*",
    "GET /": "AHSE",
    "GET /live": "AHS",
    "GET /loyal": "AHS",
    "GET /visitors": "AHS",
    "POST /visitors/merge": "AHS",
    "GET /visitors/{visitor_id}": "AHS",
    "POST /visitors/{visitor_id}/details": "AHS",
    "POST /visitors/{visitor_id}/merge": "AHS",
    "POST /visitors/{visitor_id}/split": "AHS",
    "POST /visitors/{visitor_id}/erase": "AHS",
    "POST /sightings/{sighting_id}/not-this-person": "AHS",
    "GET /sites": "AHS",
    "POST /visitors/status": "AHS",
    "POST /visitors/{visitor_id}/status": "AHS",
    "GET /analytics": "AHS",
    "GET /exports/analytics.csv": "AHS",
    "GET /exports/visits.csv": "AHS",
    "GET /exports/loyal.csv": "AHS",
    "GET /api/v1/analytics": "AHS",
    "POST /sites/{site_id}/timezone": "A",
    "GET /crops/{path:path}": "AHS",
    "GET /live/camera/{camera_id}.mjpg": "AHS",
    "GET /live/camera/{camera_id}.jpg": "AHS",
    "GET /api/v1/visitors": "AHS",
    "GET /api/v1/visitors/{visitor_id}": "AHS",
    "PATCH /api/v1/visitors/{visitor_id}": "AHS",
    "DELETE /api/v1/visitors/{visitor_id}": "AHS",
    "POST /api/v1/visitors/{visitor_id}/merge": "AHS",
    "POST /api/v1/visitors/{visitor_id}/split": "AHS",
    "POST /api/v1/sightings/{sighting_id}/not-this-person": "AHS",
    "GET /api/v1/sightings": "AHS",
    "GET /api/v1/visits": "AHS",
    "GET /api/v1/loyal": "AHS",
    "GET /api/v1/sites": "AHS",
    "GET /api/v1/devices": "AHS",
    "GET /events": "AE",
    "POST /events": "AE",
    "GET /events/{event_id}": "AE",
    "GET /events/{event_id}/status": "AE",
    "POST /events/{event_id}/photos": "AE",
    "POST /events/{event_id}/settings": "AE",
    "POST /events/{event_id}/delete": "AE",
    "GET /events/{event_id}/photos/{photo_id}/thumb": "AE",
    "POST /api/v1/events": "AE",
    "PATCH /api/v1/events/{event_id}": "AE",
    "DELETE /api/v1/events/{event_id}": "AE",
    "GET /api/v1/events/{event_id}/photos": "AE",
    "POST /api/v1/photos/upload": "AE",
    "GET /events/{event_id}/orders": "AE",
    "POST /events/{event_id}/orders/{order_id}": "AE",
    "POST /events/{event_id}/orders/{order_id}/erase": "AE",
    "GET /events/{event_id}/orders.csv": "AE",
    "GET /events/{event_id}/orders.zip": "AE",
    "GET /events/{event_id}/qr.svg": "AE",
    "GET /events/{event_id}/poster": "AE",
    "GET /api/v1/events/{event_id}/orders": "AE",
    "PATCH /api/v1/events/{event_id}/orders/{order_id}": "AE",
    "DELETE /api/v1/events/{event_id}/orders/{order_id}": "AE",
    "GET /kiosk": "*",
    "GET /api/v1/events/{code}": "*",
    "POST /api/v1/search/face": "*",
    "GET /kiosk/photo/{token}/{kind}": "*",
    "POST /api/v1/orders": "*",
    "GET /admin/users": "A",
    "POST /admin/users": "A",
    "POST /admin/users/{username}/password": "A",
    "POST /admin/users/{username}/role": "A",
    "POST /admin/users/{username}/remove": "A",
    "POST /admin/tokens": "A",
    "POST /admin/tokens/{token_id}/revoke": "A",
    "GET /admin/audit": "A",
    "GET /api/v1/users": "A",
    "GET /api/v1/audit": "A",
}
ROLES = {"A": "admin", "H": "head_office", "S": "site_manager", "E": "event_staff"}
FILL = {
    "{visitor_id}": str(uuid.uuid4()),
    "{sighting_id}": str(uuid.uuid4()),
    "{camera_id}": str(uuid.uuid4()),
    "{event_id}": str(uuid.uuid4()),
    "{photo_id}": str(uuid.uuid4()),
    "{token_id}": str(uuid.uuid4()),
    "{path:path}": "ab/" + "a" * 32 + ".jpg",
    "{code}": "ZZZZ2345",
    "{token}": "x" * 64,
    "{kind}": "thumb",
    "{username}": "nobody",
    "{site_id}": str(uuid.uuid4()),
    "{order_id}": str(uuid.uuid4()),
}


def concrete(path: str) -> str:
    if path == "/static":
        return "/static/app.css"
    for key, value in FILL.items():
        path = path.replace(key, value)
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    service = open_service(web_config(tmp_path_factory.mktemp("access")))
    app = create_app(service)
    for code, role in ROLES.items():
        if role != "admin":
            app.state.accounts.add_user(f"user-{code}", PASSWORD, role, ["s1"] if role == "site_manager" else [])
    yield app
    service.stop()


def _client(app, code: str | None) -> TestClient:
    client = TestClient(app)
    if code is not None:
        client.headers["X-CSRF-Token"] = login(client, "admin" if code == "A" else f"user-{code}")
    else:  # an anonymous browser has a session with a CSRF token too (the login form's)
        client.headers["X-CSRF-Token"] = csrf_from(client.get("/login").text)
    return client


def test_the_table_covers_every_route(app):
    served = set(app_route_keys(app.routes))
    assert served == set(TABLE), f"routes without a line in TABLE: {served - set(TABLE)}; gone: {set(TABLE) - served}"
    assert set(ACCESS) == served


def _denied_for_anonymous(response, path: str) -> bool:
    if path.startswith("/api/"):
        return response.status_code == 401
    return response.status_code == 303 and response.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("who", [None, "A", "H", "S", "E"], ids=["anonymous", *ROLES.values()])
def test_role_x_route(app, who):
    """Each role against each route: allowed routes never answer 401/403 or send to the login page; the others
    answer 403 (a login without the permission) or 401/303 to /login (no login)."""
    client = _client(app, who)
    wrong = []
    for key in sorted(TABLE, key=lambda k: k == "POST /logout"):  # logging out last
        method, path = key.split(" ", 1)
        url = concrete(path)
        r = client.request(method, url, follow_redirects=False)
        allowed = TABLE[key] == "*" or (who is not None and who in TABLE[key])
        if allowed:
            ok = r.status_code not in (401, 403) and not _denied_for_anonymous(r, path) and r.status_code < 500
            kiosk_down = r.status_code == 503 and "event kiosk is unavailable" in r.text  # no models here: fine
            ok = ok or kiosk_down
        elif who is None:
            ok = _denied_for_anonymous(r, path)
        else:
            ok = r.status_code == 403
        if not ok:
            wrong.append(f"{key} as {who}: {r.status_code}")
    assert not wrong, "\n".join(wrong)


def test_an_unknown_route_rule_is_refused_at_start(tmp_path):
    service = open_service(web_config(tmp_path))
    try:
        app = create_app(service)

        @app.get("/new-page")
        def new_page() -> dict:
            return {}

        from revisit.central.auth import unruled_routes

        assert unruled_routes(app) == ["GET /new-page"]
        with TestClient(app) as client:
            login(client)
            assert client.get("/new-page").status_code == 403  # the guard refuses what it has no rule for
    finally:
        service.stop()


# --- API tokens --------------------------------------------------------------------------------------------------


def test_api_tokens(app):
    accounts = app.state.accounts
    raw, token = accounts.create_token("bi-export", "head_office", actor="admin")
    assert raw.startswith("rvt_") and len(raw) > 40
    assert raw not in token.token_hash and token.hint == raw[:10]
    anon = TestClient(app)
    bearer = {"Authorization": f"Bearer {raw}"}
    me = anon.get("/api/v1/me", headers=bearer).json()
    assert me == {"user": "token:bi-export", "role": "head_office", "sites": None, "csrf_token": None}
    assert anon.get("/api/v1/visitors", headers=bearer).status_code == 200
    assert anon.get("/api/v1/users", headers=bearer).status_code == 403  # its role's rights only
    assert anon.get("/events", headers=bearer).status_code == 403
    # writes with a token need no CSRF token (no cookie to forge)
    assert anon.patch(f"/api/v1/visitors/{uuid.uuid4()}", json={"label": "x"}, headers=bearer).status_code == 404
    for bad in ("Bearer rvt_" + "x" * 43, "Bearer ", f"bearer {raw}x"):
        r = anon.get("/api/v1/visitors", headers={"Authorization": bad})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", bad
    assert anon.get("/kiosk", headers={"Authorization": "Bearer nope"}).status_code == 401
    # another scheme (a proxy's Basic login in front of the app) is not a token: the session decides
    assert anon.get("/kiosk", headers={"Authorization": "Basic YTpi"}).status_code == 200
    assert anon.get("/api/v1/visitors", headers={"Authorization": "Basic YTpi"}).json() == {"detail": "login required"}
    assert accounts.revoke_token(token.id, actor="admin")
    assert anon.get("/api/v1/visitors", headers=bearer).status_code == 401  # revoked: at once
    assert not accounts.revoke_token(token.id)
    staff_raw, _ = accounts.create_token("photographer", "event_staff")
    assert anon.get("/api/v1/visitors", headers={"Authorization": f"Bearer {staff_raw}"}).status_code == 403


def test_admin_makes_and_revokes_a_token_on_the_users_page(app):
    client = _client(app, "A")
    token = client.headers["X-CSRF-Token"]
    r = client.post(
        "/admin/tokens", data={"name": "till-sync", "role": "site_manager", "sites": "s1, s2", "csrf_token": token}
    )
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    raw = r.text.split('aria-label="the new token"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert raw.startswith("rvt_")
    me = TestClient(app).get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).json()
    assert (me["role"], me["sites"]) == ("site_manager", ["s1", "s2"])
    page = client.get("/admin/users").text
    assert "till-sync" in page and raw not in page  # shown once only
    (row,) = [t for t in app.state.accounts.tokens() if t.name == "till-sync"]
    r = client.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert TestClient(app).get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 401
    audit = client.get("/api/v1/audit", params={"action": "token_revoke"}).json()
    assert audit["total"] >= 1 and audit["items"][0]["actor"] == "admin"


# --- the users page and the audit page ---------------------------------------------------------------------------


def test_admin_manages_users_and_reads_the_audit_log(app):
    client = _client(app, "A")
    token = client.headers["X-CSRF-Token"]
    form = {
        "username": "manager-2",
        "password": "a long enough password",
        "role": "site_manager",
        "sites": "s2",
        "csrf_token": token,
    }
    assert client.post("/admin/users", data=form, follow_redirects=False).status_code == 303
    assert app.state.accounts.user("manager-2").sites == ["s2"]
    r = client.post("/admin/users", data=form | {"username": "manager-3", "sites": ""})  # a manager needs a site
    assert "needs at least one site" in r.text and app.state.accounts.user("manager-3") is None
    r = client.post("/admin/users", data=form | {"username": "weak", "password": "short"})
    assert "at least 12 characters" in r.text and app.state.accounts.user("weak") is None
    other = _client(app, None)
    login(other, "manager-2", "a long enough password")
    assert other.get("/api/v1/me").json()["sites"] == ["s2"]
    r = client.post("/admin/users/manager-2/role", data={"role": "head_office", "csrf_token": token})
    assert r.status_code == 200 and other.get("/api/v1/me").json()["role"] == "head_office"  # at once
    r = client.post("/admin/users/manager-2/remove", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and app.state.accounts.user("manager-2") is None
    assert other.get("/api/v1/me").status_code == 401  # removal ends the session at once
    assert client.post("/admin/users/nobody/remove", data={"csrf_token": token}).status_code == 404
    r = client.post("/admin/users/admin/remove", data={"csrf_token": token})
    assert "cannot remove your own" in r.text and app.state.accounts.user("admin") is not None

    page = client.get("/admin/audit", params={"actor": "admin", "action": "user_remove"})
    assert page.status_code == 200 and 'data-action="user_remove"' in page.text and "manager-2" in page.text
    body = client.get("/api/v1/audit", params={"actor": "admin"}).json()
    assert {"user_add", "user_role", "user_remove"} <= {i["action"] for i in body["items"]}
    assert all(i["actor"] == "admin" for i in body["items"])
    assert client.get("/api/v1/audit", params={"offset": 10**7 + 1}).status_code == 422
    users = client.get("/api/v1/users").json()
    assert {u["username"] for u in users} >= {"admin", "user-H", "user-S", "user-E"}


def test_the_last_admin_stays(tmp_path):
    from revisit.central.store import Store
    from revisit.central.users import AccountError, Accounts
    from revisit.shared.errors import NotFound

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.create_all()
    accounts = Accounts(store)
    accounts.add_user("root", "a long enough password", "admin")
    with pytest.raises(AccountError, match="last administrator"):
        accounts.remove_user("root")
    with pytest.raises(AccountError, match="last administrator"):
        accounts.set_role("root", "head_office")
    with pytest.raises(AccountError, match="unknown role"):
        accounts.add_user("x1", "a long enough password", "superuser")
    with pytest.raises(AccountError, match="exists already"):
        accounts.add_user("root", "a long enough password", "admin")
    for change in (lambda: accounts.remove_user("nobody"), lambda: accounts.set_role("nobody", "admin")):
        with pytest.raises(NotFound, match="no user 'nobody'"):  # a 404 on the web, by its type
            change()
    store.dispose()


# --- CLI -------------------------------------------------------------------------------------------------------------


def test_users_cli(tmp_path, monkeypatch, capsys):
    from revisit.cli import main

    config = tmp_path / "central.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nproduction = true\n')  # no secrets needed here
    monkeypatch.delenv("REVISIT_SECRET_KEY", raising=False)
    monkeypatch.delenv("REVISIT_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("REVISIT_NEW_PASSWORD", "a long enough password")
    run = lambda *args: main(["central", "users", *args, "--config", str(config)])  # noqa: E731
    assert run("add", "alice", "--role", "site_manager", "--sites", "s1,s2") == 0
    assert run("add", "bob", "--role", "event_staff") == 0
    assert run("add", "alice", "--role", "admin") == 1  # exists
    assert run("add", "carol", "--role", "site_manager") == 1  # no site
    capsys.readouterr()
    assert run("list") == 0
    listed = capsys.readouterr().out
    assert "alice\tsite_manager\ts1,s2" in listed and "bob\tevent_staff\t-" in listed
    monkeypatch.setenv("REVISIT_NEW_PASSWORD", "another long password")
    assert run("passwd", "alice") == 0
    assert run("remove", "bob") == 0 and run("remove", "bob") == 1
    from revisit.central.store import Store
    from revisit.central.users import Accounts

    store = Store(f"sqlite:///{tmp_path / 'data' / 'revisit.db'}")
    accounts = Accounts(store)
    assert accounts.authenticate("alice", "another long password") is not None
    assert [u.username for u in accounts.users()] == ["alice"]
    store.dispose()


@pytest.mark.parametrize(
    "who, shown, hidden",
    [
        ("A", ["/live", "/events", "/admin/users", "/admin/audit"], []),
        ("H", ["/live", "/loyal", "/visitors", "/sites"], ["/events", "/admin/users"]),
        ("S", ["/live", "/visitors"], ["/events", "/admin/users", "/admin/audit"]),
        ("E", ["/events"], ["/live", "/loyal", "/visitors", "/sites", "/admin/users"]),
    ],
)
def test_the_menu_shows_what_the_role_may_use(app, who, shown, hidden):
    html = _client(app, who).get("/account").text
    nav = html.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    for href in shown:
        assert f'href="{href}"' in nav, href
    for href in hidden:
        assert f'href="{href}"' not in nav, href


def test_event_staff_land_on_events_after_login(app):
    client = TestClient(app)
    token = csrf_from(client.get("/login").text)
    r = client.post(
        "/login", data={"username": "user-E", "password": PASSWORD, "csrf_token": token}, follow_redirects=False
    )
    assert r.headers["location"] == "/events"
    assert client.get("/", follow_redirects=False).headers["location"] == "/events"

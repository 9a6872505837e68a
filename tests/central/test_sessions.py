"""Server-side sessions (logout, password change, removal and timeouts end them at once), the [admin] account
of the configuration, and the secret made once per data directory."""

from __future__ import annotations

import logging
import stat
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from revisit.central.auth import AuthConfigError, load_secret
from revisit.central.config import CentralConfig
from revisit.central.store import Store, WebSession, utcnow
from revisit.central.users import Accounts
from revisit.central.web import SESSION_COOKIE, create_app
from tests.central.webapp import PASSWORD, PASSWORD_HASH, USER, csrf_from, login, open_service, web_config

OTHER = "another long password"


@pytest.fixture
def app(tmp_path):
    service = open_service(web_config(tmp_path))
    app = create_app(service)
    app.state.accounts.add_user("manager", PASSWORD, "site_manager", ["s1"])
    yield app
    service.stop()


def _cookie(client: TestClient) -> str:
    return client.cookies[SESSION_COOKIE]


def _replay(app, cookie: str) -> TestClient:
    client = TestClient(app)
    client.cookies.set(SESSION_COOKIE, cookie)
    return client


def test_logout_ends_the_session_even_for_a_replayed_cookie(app):
    client = TestClient(app)
    token = login(client)
    cookie = _cookie(client)
    assert _replay(app, cookie).get("/api/v1/me").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    replay = _replay(app, cookie)
    assert replay.get("/api/v1/me").status_code == 401
    r = replay.get("/visitors", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(app):
    laptop, phone = TestClient(app), TestClient(app)
    token = login(laptop)
    login(phone)
    phone_cookie = _cookie(phone)
    form = {"current": PASSWORD, "new": OTHER, "again": OTHER, "csrf_token": token}
    r = laptop.post("/account/password", data=form, follow_redirects=False)
    assert r.status_code == 303
    assert laptop.get("/api/v1/me").status_code == 200  # this browser got a new session
    assert _replay(app, phone_cookie).get("/api/v1/me").status_code == 401
    assert app.state.accounts.sessions(USER) == 1
    token = laptop.get("/api/v1/me").json()["csrf_token"]
    r = laptop.post("/account/password", data=form | {"current": "wrong", "csrf_token": token})
    assert "current password is wrong" in r.text
    app.state.accounts.set_password(USER, PASSWORD)
    assert laptop.get("/api/v1/me").status_code == 401  # set by an admin or the CLI: every session ends


def test_removing_a_user_ends_their_sessions(app):
    client = TestClient(app)
    login(client, "manager")
    cookie = _cookie(client)
    app.state.accounts.remove_user("manager", actor="test")
    assert _replay(app, cookie).get("/api/v1/me").status_code == 401


def test_idle_and_absolute_timeouts(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.create_all()
    accounts = Accounts(store, idle=timedelta(minutes=30), absolute=timedelta(hours=8))
    user = accounts.add_user("u1", PASSWORD, "head_office")
    now = utcnow()
    raw = accounts.start_session(user)
    assert accounts.session_principal(raw, now + timedelta(minutes=29)).name == "u1"
    assert accounts.session_principal(raw, now + timedelta(minutes=58)).name == "u1"  # used at 29: still alive
    assert accounts.session_principal(raw, now + timedelta(minutes=89)) is None  # idle > 30 min
    assert accounts.sessions("u1") == 0  # and deleted
    raw = accounts.start_session(user)
    with store.begin() as s:
        row = s.exec(WebSession.__table__.select()).first()  # type: ignore[attr-defined]
        assert row is not None and raw not in row.id  # only the hash of the cookie's id is stored
    t, ended = now, False
    for _ in range(20):  # used every 29 minutes: never idle, but 8 h after login it ends
        t += timedelta(minutes=29)
        alive = accounts.session_principal(raw, t)
        if t - now > timedelta(hours=8):
            assert alive is None
            ended = True
            break
        assert alive is not None
    assert ended and accounts.sessions("u1") == 0
    assert accounts.purge_sessions() == 0
    accounts.start_session(user)
    assert accounts.purge_sessions(utcnow() + timedelta(hours=9)) == 1
    store.dispose()


def test_session_timeouts_come_from_the_configuration(tmp_path):
    service = open_service(web_config(tmp_path, web={"session_idle_min": 5, "session_max_hours": 1}))
    try:
        app = create_app(service)
        assert app.state.accounts.idle == timedelta(minutes=5)
        assert app.state.accounts.absolute == timedelta(hours=1)
        cookie = TestClient(app).get("/login").headers["set-cookie"].lower()
        assert "max-age=3600" in cookie
    finally:
        service.stop()


def test_the_config_admin_is_ensured_and_a_changed_password_survives_restarts(tmp_path):
    service = open_service(web_config(tmp_path))
    try:
        accounts = create_app(service).state.accounts
        assert accounts.user(USER).role == "admin"
        accounts.set_password(USER, OTHER)  # changed on the pages
        accounts = create_app(service).state.accounts  # a restart with the same configuration
        assert accounts.authenticate(USER, OTHER) and not accounts.authenticate(USER, PASSWORD)
        accounts.set_role(USER, "admin")
        accounts.add_user("second", PASSWORD, "admin")
        accounts.set_role(USER, "head_office")
        accounts = create_app(service).state.accounts
        assert accounts.user(USER).role == "admin"  # the configuration's account is an admin again
    finally:
        service.stop()
    from revisit.central.auth import hash_password

    new_hash = hash_password("the new configured password")
    service = open_service(web_config(tmp_path, admin={"username": USER, "password_hash": new_hash}))
    try:  # a changed admin.password_hash is applied (the documented way to reset it)
        accounts = create_app(service).state.accounts
        assert accounts.authenticate(USER, "the new configured password") and not accounts.authenticate(USER, OTHER)
    finally:
        service.stop()


# --- the secret ------------------------------------------------------------------------------------------------------


def _no_secret(tmp_path, monkeypatch, name: str = "data") -> CentralConfig:
    monkeypatch.delenv("REVISIT_SECRET_KEY", raising=False)
    return CentralConfig.model_validate({"data_dir": str(tmp_path / name), "admin": {"password_hash": PASSWORD_HASH}})


def test_without_a_secret_one_is_made_once_per_data_dir(tmp_path, monkeypatch, caplog):
    config = _no_secret(tmp_path, monkeypatch)
    assert config.secret_key is None
    with caplog.at_level(logging.WARNING, logger="revisit.central.auth"):
        first = load_secret(config)
    assert "generated a random one" in caplog.text and first not in caplog.text
    path = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 48 and first != "change-me"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="revisit.central.auth"):
        assert load_secret(config) == first  # stable across restarts
    assert "generated" not in caplog.text
    assert load_secret(_no_secret(tmp_path, monkeypatch, "other")) != first  # random per data directory
    path.chmod(0o644)
    assert load_secret(config) == first and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    with pytest.raises(AuthConfigError, match="no usable secret"):
        load_secret(config)


def test_a_session_survives_a_restart_with_the_generated_secret(tmp_path, monkeypatch):
    config = _no_secret(tmp_path, monkeypatch)
    service = open_service(config)
    try:
        client = TestClient(create_app(service))
        login(client)
        cookie = _cookie(client)
        restarted = create_app(service)  # a new app reads the same secret file
        assert _replay(restarted, cookie).get("/api/v1/me").json()["user"] == USER
    finally:
        service.stop()


def test_production_refuses_a_missing_secret(monkeypatch):
    from revisit.shared.config import validate
    from revisit.shared.errors import ConfigError

    monkeypatch.delenv("REVISIT_SECRET_KEY", raising=False)
    monkeypatch.setenv("REVISIT_ADMIN_PASSWORD", "a long passphrase")
    with pytest.raises(ConfigError, match="secret_key"):
        validate(CentralConfig, {"production": True})
    with pytest.raises(ConfigError, match="secret_key"):
        validate(CentralConfig, {"production": True, "secret_key": "too short"})


def test_the_login_form_still_needs_its_csrf_token_after_a_replayed_dead_session(app):
    client = TestClient(app)
    token = login(client)
    cookie = _cookie(client)
    client.post("/logout", data={"csrf_token": token})
    replay = _replay(app, cookie)
    r = replay.post("/login", data={"username": USER, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 403  # the dead session's CSRF token went with it
    fresh = csrf_from(replay.get("/login").text)
    r = replay.post(
        "/login", data={"username": USER, "password": PASSWORD, "csrf_token": fresh}, follow_redirects=False
    )
    assert r.status_code == 303

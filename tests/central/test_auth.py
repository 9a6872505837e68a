"""Login, sessions, CSRF and the login rate limit of the central web app (no models needed)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from revisit.central.auth import (
    AuthConfigError,
    FailureWindow,
    bootstrap_accounts,
    hash_password,
    passwd_command,
    safe_next,
    verify_password,
)
from revisit.central.store import Store
from revisit.central.users import Accounts
from revisit.central.web import SESSION_COOKIE, create_app
from tests.central.webapp import PASSWORD, SECRET, USER, csrf_from, login, open_service, web_config

PAGES = ["/", "/live", "/loyal", "/visitors", f"/visitors/{uuid.uuid4()}", "/sites", "/crops/ab/" + "a" * 32 + ".jpg"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    service = open_service(web_config(tmp_path_factory.mktemp("auth")))
    yield service
    service.stop()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as client:
        yield client


def _set_cookie(response) -> str:
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE)]
    assert cookies, "no session cookie set"
    return cookies[-1].lower()


# --- passwords ---------------------------------------------------------------------------------------------


def test_passwords_are_argon2_hashes():
    stored = hash_password("s3cret")
    assert stored.startswith("$argon2id$") and "s3cret" not in stored
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3cret ")
    assert not verify_password("not a hash", "s3cret")


def _accounts(tmp_path) -> Accounts:
    store = Store(f"sqlite:///{tmp_path / 'accounts.db'}")
    store.create_all()
    return Accounts(store)


def test_a_password_from_the_environment_is_kept_only_as_a_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("REVISIT_TEST_ADMIN_PW", "from the environment")
    config = web_config(tmp_path, admin={"username": "boss", "password_env": "REVISIT_TEST_ADMIN_PW"})
    accounts = _accounts(tmp_path)
    assert bootstrap_accounts(config, accounts) is None
    (user,) = accounts.users()
    assert user.username == "boss" and user.role == "admin" and user.password_hash.startswith("$argon2id$")
    assert "from the environment" not in user.password_hash
    assert accounts.authenticate("boss", "from the environment")
    assert not accounts.authenticate("boss", "wrong") and not accounts.authenticate("admin", "from the environment")
    stored = user.password_hash
    bootstrap_accounts(config, accounts)  # the same password at the next start: left as it is
    assert accounts.user("boss").password_hash == stored


def test_passwd_command_prints_a_hash(capsys):
    answers = iter(["a long enough password", "a long enough password"])
    assert passwd_command(lambda _: next(answers)) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("$argon2id$") and verify_password(printed, "a long enough password")
    answers = iter(["a long enough password", "another one entirely"])
    assert passwd_command(lambda _: next(answers)) == 2
    assert passwd_command(lambda _: "short") == 2


def test_a_configured_hash_must_be_argon2(tmp_path):
    config = web_config(tmp_path, admin={"password_hash": "$pbkdf2-sha256$29000$abc$def"})
    with pytest.raises(AuthConfigError, match="argon2"):
        bootstrap_accounts(config, _accounts(tmp_path))


def test_without_a_configured_password_development_generates_one_once(tmp_path, monkeypatch):
    monkeypatch.delenv("REVISIT_ADMIN_PASSWORD", raising=False)
    accounts = _accounts(tmp_path)
    generated = bootstrap_accounts(web_config(tmp_path, admin={}), accounts)
    assert generated and len(generated) >= 16
    assert accounts.authenticate("admin", generated)
    assert bootstrap_accounts(web_config(tmp_path, admin={}), accounts) is None  # users exist: kept
    assert accounts.authenticate("admin", generated)


# --- login required ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_pages_redirect_to_login(client, path):
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/visitors"),
        ("GET", "/api/v1/loyal"),
        ("GET", "/api/v1/sites"),
        ("GET", "/api/v1/me"),
        ("GET", f"/api/v1/visitors/{uuid.uuid4()}"),
        ("DELETE", f"/api/v1/visitors/{uuid.uuid4()}"),
        ("POST", f"/api/v1/visitors/{uuid.uuid4()}/merge"),
    ],
)
def test_api_answers_401_without_login(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 401 and r.json() == {"detail": "login required"}


def test_login_and_logout(client):
    r = client.get("/login?next=/sites")
    assert r.status_code == 200 and 'name="password"' in r.text
    token = csrf_from(r.text)
    wrong = {"username": USER, "password": "nope", "csrf_token": token, "next": "/sites"}
    r = client.post("/login", data=wrong, follow_redirects=False)
    assert r.status_code == 401 and "Wrong user name or password" in r.text
    assert client.get("/api/v1/me").status_code == 401
    r = client.post("/login", data=wrong | {"password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sites"
    me = client.get("/api/v1/me").json()
    assert me["user"] == USER and me["csrf_token"] != token  # a fresh session (and token) on login
    r = client.post("/logout", data={"csrf_token": me["csrf_token"]}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/sites", follow_redirects=False).status_code == 303


def test_a_post_without_login_returns_to_the_page_it_came_from(client):
    vid = uuid.uuid4()
    r = client.post(
        f"/visitors/{vid}/details",
        data={"label": "x"},
        follow_redirects=False,
        headers={"Referer": f"http://testserver/visitors/{vid}?page=2"},
    )
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Fvisitors%2F{vid}%3Fpage%3D2"
    r = client.post("/visitors/merge", follow_redirects=False, headers={"Referer": "https://evil.example/x"})
    assert r.headers["location"] == "/login?next=%2F"


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/loyal?sort=visits", "/loyal?sort=visits"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_login_only_redirects_to_local_paths(target, expected):
    assert safe_next(target) == expected


def test_login_ignores_an_open_redirect(client):
    token = csrf_from(client.get("/login").text)
    data = {"username": USER, "password": PASSWORD, "csrf_token": token, "next": "//evil.example/"}
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_a_new_password_ends_existing_sessions(client):
    login(client)
    assert client.get("/api/v1/me").status_code == 200
    client.app.state.accounts.set_password(USER, "a new password")
    assert client.get("/api/v1/me").status_code == 401
    client.app.state.accounts.set_password(USER, PASSWORD)


@pytest.mark.parametrize("key", ["wrong key", SECRET])
def test_a_forged_session_cookie_is_ignored(client, key):
    from itsdangerous import TimestampSigner

    login(client)
    payload = base64.b64encode(json.dumps({"user": USER, "sid": "x" * 43}).encode())  # no such session
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, TimestampSigner(key).sign(payload).decode())
    assert client.get("/api/v1/me").status_code == 401


# --- CSRF --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token-" + "x" * 30])
def test_login_form_needs_the_csrf_token(client, token):
    client.get("/login")
    data = {"username": USER, "password": PASSWORD}
    if token is not None:
        data["csrf_token"] = token
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 403
    assert client.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize(
    "path, data",
    [
        ("/visitors/{id}/details", {"label": "x"}),
        ("/visitors/{id}/merge", {"other": str(uuid.uuid4())}),
        ("/visitors/{id}/erase", {"confirm": "yes"}),
        ("/visitors/{id}/split", {"sighting_ids": str(uuid.uuid4())}),
        ("/sightings/{id}/not-this-person", {}),
        ("/visitors/merge", {"visitor_ids": [str(uuid.uuid4())] * 2}),
        ("/logout", {}),
    ],
)
def test_forms_without_or_with_a_wrong_csrf_token_are_refused(client, path, data):
    token = login(client)
    url = path.format(id=uuid.uuid4())
    assert client.post(url, data=data, follow_redirects=False).status_code == 403
    assert client.post(url, data=data | {"csrf_token": token[:-2] + "xx"}, follow_redirects=False).status_code == 403
    other = TestClient(client.app)  # another session's valid token does not work here either
    assert client.post(url, data=data | {"csrf_token": login(other)}, follow_redirects=False).status_code == 403
    ok = client.post(url, data=data | {"csrf_token": token}, follow_redirects=False)
    assert ok.status_code in (303, 404)  # past the check: the visitor does not exist, or a redirect


def test_api_writes_need_the_csrf_header(client):
    token = login(client)
    vid = uuid.uuid4()
    assert client.patch(f"/api/v1/visitors/{vid}", json={"label": "x"}).status_code == 403
    assert (
        client.patch(f"/api/v1/visitors/{vid}", json={"label": "x"}, headers={"X-CSRF-Token": "nope"}).status_code
        == 403
    )
    assert client.delete(f"/api/v1/visitors/{vid}").status_code == 403
    r = client.patch(f"/api/v1/visitors/{vid}", json={"label": "x"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 404  # past the check


# --- cookies and headers -----------------------------------------------------------------------------------


def test_session_cookie_is_httponly_and_lax_in_development(client):
    cookie = _set_cookie(client.get("/login"))
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


def test_session_cookie_is_secure_in_production(tmp_path):
    config = web_config(tmp_path, production=True, secret_key="y" * 40)
    service = open_service(config)
    try:
        with TestClient(create_app(service), base_url="https://central.example") as client:
            cookie = _set_cookie(client.get("/login"))
            assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
            login(client)
            r = client.get("/loyal")
            assert r.status_code == 200
            assert r.headers["strict-transport-security"].startswith("max-age=")
    finally:
        service.stop()


def test_security_headers(client):
    r = client.get("/login")
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "strict-transport-security" not in r.headers


# --- rate limit ----------------------------------------------------------------------------------------------


def test_rate_limiter_window():
    limiter = FailureWindow(attempts=3, window_s=60)
    for t in (0, 1, 2):
        assert limiter.retry_after("a", now=t) == 0
        limiter.fail("a", now=t)
    assert limiter.retry_after("a", now=3) == pytest.approx(57)
    assert limiter.retry_after("b", now=3) == 0  # per client
    assert limiter.retry_after("a", now=60.5) == 0  # the first failure left the window
    limiter.reset("a")
    assert limiter.retry_after("a", now=3) == 0


def test_rate_limiter_memory_is_bounded():
    limiter = FailureWindow(attempts=1, window_s=60, max_keys=100)
    for i in range(1000):
        limiter.fail(f"client-{i}", now=0)
    assert len(limiter._fails) == 100 and limiter.retry_after("client-999", now=1) > 0


def test_login_is_rate_limited(client):
    token = csrf_from(client.get("/login").text)
    bad = {"username": USER, "password": "guess", "csrf_token": token}
    for _ in range(5):
        assert client.post("/login", data=bad).status_code == 401
    r = client.post("/login", data=bad | {"password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert client.get("/api/v1/me").status_code == 401  # even the right password waits

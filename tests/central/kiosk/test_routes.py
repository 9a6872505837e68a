"""The kiosk's HTTP side on the real app (`web.create_app`): the specification's API, staff pages with login and
CSRF, bad uploads, rate limits (429), photo links that work only for the photos a search returned, in their event."""

from __future__ import annotations

import base64
import uuid

import pytest
from fastapi.testclient import TestClient

from revisit.central.kiosk.limits import TokenBuckets
from revisit.central.kiosk.search import DEFAULT_THRESHOLD
from revisit.central.kiosk.service import EXPIRY_JOB
from tests.central.conftest import wait_for
from tests.central.kiosk.support import bad_files, dev_people, files_under, kiosk_app, upload_and_wait
from tests.central.webapp import csrf_from, login

pytestmark = [pytest.mark.models, pytest.mark.facedata]


@pytest.fixture(scope="module")
def site(tmp_path_factory, engine, facedata):
    """The app with two events: "party" holds the person's photos among strangers; "other" holds strangers and
    one of her photos."""
    people = dev_people(facedata)
    generous = {"search_per_client_min": 10_000, "lookup_per_client_min": 10_000, "burst": 1000}  # tests set their own
    with kiosk_app(tmp_path_factory.mktemp("kiosk_api"), engine, **generous) as ka:
        events = ka.kiosk.events
        party, other = events.create_event("party"), events.create_event("other")
        party_ids = upload_and_wait(ka.kiosk, party.id, [*people.own[:2], *people.others[:3]])
        other_ids = upload_and_wait(ka.kiosk, other.id, [people.own[2], *people.others[3:5]])
        with TestClient(ka.app) as client:
            yield client, ka, people, (party, party_ids), (other, other_ids)


@pytest.fixture
def staff(site):
    client = site[0]
    token = login(client)
    yield client, token
    client.cookies.clear()


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_event_lookup_by_code_is_public(site):
    client, _, _, (party, ids), _ = site
    r = client.get(f"/api/v1/events/{party.code.lower()}")
    assert r.status_code == 200
    body = r.json()
    assert (body["event_id"], body["code"], body["name"]) == (str(party.id), party.code, "party")
    assert body["photos"] == len(ids)
    assert client.get("/api/v1/events/ZZZZ2345").status_code == 404
    assert client.get("/api/v1/events/not-a-code!").status_code == 404


def test_search_spec_response(site):
    client, ka, people, (party, ids), _ = site
    r = client.post("/api/v1/search/face", json={"event_id": str(party.id), "face_image": b64(people.selfie)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["matches_found"] == len(body["matches"]) == 2
    expected = {str(ids[p]) for p in people.own[:2]}
    assert {m["photo_id"] for m in body["matches"]} == expected
    for m in body["matches"]:
        assert set(m) >= {"photo_id", "filename", "similarity", "thumbnail_url", "image_url", "download_url"}
        assert DEFAULT_THRESHOLD <= m["similarity"] <= 1
        for key in ("thumbnail_url", "image_url", "download_url"):
            assert client.get(m[key]).status_code == 200
    download = client.get(body["matches"][0]["download_url"])
    assert "attachment" in download.headers["content-disposition"]
    assert body["matches"][0]["filename"] in download.headers["content-disposition"]
    # by code, with a data: URL, and a threshold on the (cos+1)/2 scale
    data_url = "data:image/jpeg;base64," + b64(people.selfie)
    r = client.post("/api/v1/search/face", json={"event_code": party.code, "face_image": data_url, "threshold": 0.99})
    assert r.status_code == 200 and r.json()["matches_found"] == 0


@pytest.mark.parametrize(
    ("target", "body", "status", "words"),
    [
        (None, {"face_image": "AAAA"}, 404, "no event"),
        ("missing", {"face_image": "AAAA"}, 404, "no event"),
        (None, {"event_code": "ZZZZ2345", "face_image": "AAAA"}, 404, "no event"),
        ("party", {"face_image": "!!!notbase64"}, 422, "base64"),
        ("party", {"face_image": None}, 422, "face_image is required"),
        ("party", {"face_image": "AAAA", "threshold": 1.5}, 422, "(cos + 1) / 2"),
        ("party", {"face_image": "AAAA", "threshold": "high"}, 422, "(cos + 1) / 2"),
        ("party", {"face_image": base64.b64encode(b"not an image").decode()}, 422, "could not be read"),
    ],
)
def test_search_bad_requests(site, target, body, status, words):
    client, _, _, (party, _), _ = site
    if target is not None:
        body = {"event_id": str(party.id) if target == "party" else str(uuid.uuid4()), **body}
    r = client.post("/api/v1/search/face", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert "AAAA" not in r.text and "notbase64" not in r.text  # the selfie is never echoed back


def test_search_no_face_gives_guidance(site):
    import cv2
    import numpy as np

    client, _, _, (party, _), _ = site
    grey = base64.b64encode(cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1]).decode()
    r = client.post("/api/v1/search/face", json={"event_id": str(party.id), "face_image": grey})
    assert r.status_code == 422
    body = r.json()
    assert (body["reason"], body["matches_found"], body["matches"]) == ("no_face", 0, [])
    assert "No face" in body["detail"]


def test_search_is_rate_limited_per_client_and_per_event(site):
    client, ka, people, (party, _), (other, _) = site
    kiosk = ka.kiosk
    saved = kiosk.client_search, kiosk.event_search
    try:
        kiosk.client_search = TokenBuckets(rate_per_min=1, burst=2)
        body = {"event_id": str(party.id), "face_image": b64(people.selfie)}
        assert [client.post("/api/v1/search/face", json=body).status_code for _ in range(2)] == [200, 200]
        r = client.post("/api/v1/search/face", json=body)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        kiosk.client_search = TokenBuckets(rate_per_min=1000, burst=1000)
        kiosk.event_search = TokenBuckets(rate_per_min=1, burst=1)
        assert client.post("/api/v1/search/face", json=body).status_code == 200
        assert client.post("/api/v1/search/face", json=body).status_code == 429  # this event is busy
        body["event_id"] = str(other.id)
        assert client.post("/api/v1/search/face", json=body).status_code == 200  # another event is not
    finally:
        kiosk.client_search, kiosk.event_search = saved


def test_event_lookups_are_rate_limited(site):
    client, ka, _, (party, _), _ = site
    saved = ka.kiosk.client_lookup
    try:
        ka.kiosk.client_lookup = TokenBuckets(rate_per_min=1, burst=3)
        codes = [client.get("/api/v1/events/ABCD2345").status_code for _ in range(3)]
        assert codes == [404, 404, 404]
        assert client.get(f"/api/v1/events/{party.code}").status_code == 429  # guessing codes is slowed down
    finally:
        ka.kiosk.client_lookup = saved


def test_photos_of_other_events_are_never_reachable(site):
    client, ka, people, (party, party_ids), (other, other_ids) = site
    # searching the other event returns only its own photo of her
    r = client.post("/api/v1/search/face", json={"event_id": str(other.id), "face_image": b64(people.selfie)})
    assert {m["photo_id"] for m in r.json()["matches"]} == {str(other_ids[people.own[2]])}
    # a (validly signed) link naming one event and another event's photo opens nothing
    foreign = ka.kiosk.tokens.sign(party.id, other_ids[people.own[2]])
    assert client.get(f"/kiosk/photo/{foreign}/view").status_code == 404
    # photo ids alone are not links; forged, expired and unknown tokens open nothing
    good = ka.kiosk.tokens.sign(party.id, party_ids[people.own[0]])
    assert client.get(f"/kiosk/photo/{good}/thumb").status_code == 200
    pid = party_ids[people.own[0]]
    assert client.get(f"/kiosk/photo/{pid}/view").status_code == 404
    assert client.get(f"/kiosk/photo/{pid.hex}/download").status_code == 404
    forged = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    assert client.get(f"/kiosk/photo/{forged}/view").status_code == 404
    expired = ka.kiosk.tokens.sign(party.id, pid, now=0)
    assert client.get(f"/kiosk/photo/{expired}/view").status_code == 404
    assert client.get(f"/kiosk/photo/{good}/original").status_code == 404
    # the staff thumbnail checks the event too
    r = client.get(f"/events/{other.id}/photos/{pid}/thumb", follow_redirects=False)
    assert r.status_code == 303  # not logged in: to the login page
    token = login(client)
    assert token
    assert client.get(f"/events/{other.id}/photos/{pid}/thumb").status_code == 404
    assert client.get(f"/events/{party.id}/photos/{pid}/thumb").status_code == 200
    client.cookies.clear()


def test_order_a_photo(site):
    client, ka, people, (party, ids), _ = site
    r = client.post("/api/v1/search/face", json={"event_id": str(party.id), "face_image": b64(people.selfie)})
    match = r.json()["matches"][0]
    r = client.post("/api/v1/orders", json={"token": match["token"], "name": "Ann", "email": "ann@example.com"})
    assert r.status_code == 201 and r.json()["photo_id"] == match["photo_id"]
    assert client.post("/api/v1/orders", json={"token": match["token"]}).status_code == 201  # all optional
    assert client.post("/api/v1/orders", json={"token": match["token"], "email": "nope"}).status_code == 422
    assert client.post("/api/v1/orders", json={"token": "x" * 70}).status_code == 404
    orders = ka.kiosk.orders.list(party.id)
    assert [(v.order.name, v.order.contact) for v in orders][:2] == [("Ann", "ann@example.com"), ("", "")]


def test_staff_endpoints_need_login_and_csrf(site):
    client, _, _, (party, _), _ = site
    assert client.post("/api/v1/events", json={"name": "x"}).status_code == 401
    assert client.post("/api/v1/photos/upload", data={"event_id": str(party.id)}).status_code == 401
    assert client.delete(f"/api/v1/events/{party.id}").status_code == 401
    assert client.get(f"/api/v1/events/{party.id}/photos").status_code == 401
    r = client.get("/events", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    login(client)
    assert client.post("/api/v1/events", json={"name": "x"}).status_code == 403  # no CSRF token
    client.cookies.clear()


def test_create_upload_status_delete_through_the_api(site, staff, facedata):
    client, token = staff
    _, ka, people, _, _ = site
    h = {"X-CSRF-Token": token}
    r = client.post("/api/v1/events", json={"name": "Gala", "date": "2026-06-01", "expiry_days": 7}, headers=h)
    assert r.status_code == 201, r.text
    event = r.json()
    assert event["date"] == "2026-06-01" and len(event["code"]) == 8
    root = ka.kiosk.events.files.root
    before = files_under(root)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in people.own[:2]]
    files += [("files", (name, data, ctype)) for name, data, ctype in bad_files().values()]
    r = client.post("/api/v1/photos/upload", data={"event_code": event["code"]}, files=files, headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["uploaded"]) == 2 and len(body["rejected"]) == len(bad_files())
    assert all(x["error"] for x in body["rejected"])
    assert {x["filename"] for x in body["rejected"]} >= {"passwd", "bomb.png", "empty.jpg"}
    added = set(files_under(root)) - set(before)
    assert len(added) == 4  # two originals and two thumbnails: nothing of the refused files
    assert ka.kiosk.worker.wait_idle(60)
    status = client.get(f"/api/v1/events/{event['event_id']}/photos").json()
    assert (status["total"], status["done"]) == (2, 2) and status["faces"] >= 2
    # only bad files: 400 with the reasons
    r = client.post(
        "/api/v1/photos/upload",
        data={"event_id": event["event_id"]},
        files=[("files", ("x.jpg", b"", "image/jpeg"))],
        headers=h,
    )
    assert r.status_code == 400 and "empty file" in r.json()["detail"]
    r = client.post("/api/v1/photos/upload", data={"event_id": str(uuid.uuid4())}, files=files[:1], headers=h)
    assert r.status_code == 404
    # delete: files, vectors and rows go; the code stops working
    assert client.delete(f"/api/v1/events/{event['event_id']}", headers=h).json() == {"deleted": event["event_id"]}
    assert files_under(root) == before
    assert ka.kiosk.events.vectors.collections(uuid.UUID(event["event_id"])) == []
    assert client.get(f"/api/v1/events/{event['code']}").status_code == 404


def test_upload_over_the_request_limit_is_refused_before_parsing(site, staff):
    client, token = staff
    _, ka, _, (party, _), _ = site
    limit = ka.kiosk.events.files.max_bytes * 200
    headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(limit + 1)}
    for url in (f"/events/{party.id}/photos", "/api/v1/photos/upload"):
        # refused from the header, before the CSRF check would parse the form
        assert client.post(url, content=b"x", headers=headers).status_code == 413
    r = client.post(
        "/api/v1/photos/upload",
        content=b"x",
        headers={"X-CSRF-Token": token, "Content-Length": "1", "Content-Type": "multipart/form-data"},
    )
    assert r.status_code in (400, 404)


def test_staff_pages(site, staff):
    client, token = staff
    _, ka, people, (party, ids), _ = site
    page = client.get("/events")
    assert page.status_code == 200 and party.code in page.text and "Create event" in page.text
    r = client.post(
        "/events",
        data={"name": "Wedding", "date": "2026-07-04", "expiry_days": "3", "csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    event_url = r.headers["location"]
    event_id = uuid.UUID(event_url.rsplit("/", 1)[1])
    page = client.get(event_url)
    assert page.status_code == 200 and "dropzone" in page.text and "Wedding" in page.text
    r = client.post(
        f"/events/{event_id}/photos",
        files=[("files", (people.own[0].name, people.own[0].read_bytes(), "image/jpeg"))],
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 201
    assert ka.kiosk.worker.wait_idle(60)
    status = client.get(f"/events/{event_id}/status").json()
    assert status["done"] == 1 and status["photos"][0]["faces"] >= 1
    assert "badge done" in client.get(event_url).text
    r = client.post(f"/events/{event_id}/delete", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/events"
    assert ka.kiosk.events.get(event_id) is None
    assert client.get(event_url).status_code == 404
    assert client.post(f"/events/{party.id}/delete", data={}).status_code == 403  # no CSRF: refused
    assert ka.kiosk.events.get(party.id) is not None


def test_kiosk_page_is_public(site):
    client = site[0]
    r = client.get("/kiosk")
    assert r.status_code == 200 and "/static/kiosk/kiosk.js" in r.text
    assert client.get("/static/kiosk/kiosk.js").status_code == 200
    assert client.get("/static/kiosk/kiosk.css").status_code == 200


def test_app_starts_the_kiosk_when_events_exist(tmp_path, models_dir, monkeypatch):
    from revisit.central.kiosk.events import Events
    from revisit.central.web import create_app
    from tests.central.webapp import open_service, web_config

    monkeypatch.setenv("REVISIT_MODELS", str(models_dir))
    service = open_service(web_config(tmp_path))
    try:
        with TestClient(create_app(service)) as client:  # no events: nothing is loaded at start
            assert getattr(client.app.state, "kiosk", None) is None
            assert client.get("/api/v1/events/ABCD2345").status_code == 404  # built on first use
            assert client.app.state.kiosk is not None
        assert client.app.state.kiosk is None  # stopped with the app
        events = Events.for_service(service)  # what a retention job would use (no face engine)
        assert events.files.root == (tmp_path / "central" / "events").resolve()
        events.create_event("e")
        with TestClient(create_app(service)) as client:
            assert client.app.state.kiosk is not None  # events exist: started with the app (resume, expiry)
            assert client.app.state.kiosk.worker._thread is not None
            # the expiry job runs on the service's one scheduler (beside retention), at once and then hourly
            scheduler = service.scheduler
            assert client.app.state.kiosk.scheduler is scheduler and scheduler.running
            assert wait_for(lambda: scheduler.job(EXPIRY_JOB).runs >= 1, timeout=20, what="the first expiry run")
        assert scheduler.job(EXPIRY_JOB) is None  # the kiosk's job leaves with the app
    finally:
        service.stop()
    assert not scheduler.running  # stopped (joined) with the service


def test_kiosk_unavailable_without_models(tmp_path, monkeypatch):
    from revisit.central.web import create_app
    from tests.central.webapp import open_service, web_config

    monkeypatch.setenv("REVISIT_MODELS", str(tmp_path / "no-models"))
    service = open_service(web_config(tmp_path))
    try:
        client = TestClient(create_app(service))
        r = client.get("/api/v1/events/ABCD2345")
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]
        assert client.get("/kiosk").status_code == 200  # the page itself still loads
    finally:
        service.stop()

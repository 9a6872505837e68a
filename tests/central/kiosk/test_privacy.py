"""Kiosk privacy on the real app and engine: a guest's threshold never goes below the event's floor, results are
capped, and an ended event is refused at once everywhere (links, orders, uploads, search, code), before the
hourly job runs."""

from __future__ import annotations

import base64
import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from revisit.central.kiosk.models import Event
from revisit.central.kiosk.service import EXPIRY_JOB
from revisit.central.store import AuditLog, utcnow
from tests.central.conftest import wait_for
from tests.central.kiosk.support import dev_people, kiosk_app, png, upload_and_wait
from tests.central.webapp import PASSWORD, login

pytestmark = [pytest.mark.models, pytest.mark.facedata]
CAP = 3


@pytest.fixture(scope="module")
def site(tmp_path_factory, engine, facedata):
    people = dev_people(facedata)
    generous = {"search_per_client_min": 10_000, "lookup_per_client_min": 10_000, "burst": 1000, "max_results": CAP}
    with kiosk_app(tmp_path_factory.mktemp("privacy"), engine, **generous) as ka:
        party = ka.kiosk.events.create_event("party")
        upload_and_wait(ka.kiosk, party.id, [*people.own, people.group, *people.others])
        ka.app.state.accounts.add_user("photographer", PASSWORD, "event_staff")
        with TestClient(ka.app) as client:
            yield client, ka, people, party


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def search(client, event, selfie, **extra):
    return client.post("/api/v1/search/face", json={"event_id": str(event.id), "face_image": b64(selfie), **extra})


def test_a_guest_cannot_search_below_the_floor(site):
    client, ka, people, party = site
    # what the index holds below the floor: nearly every face of the event
    everyone = ka.kiosk.search.search(party.id, people.selfie.read_bytes(), 0.0, 1000)
    assert len(everyone.matches) >= len(people.others)
    r = search(client, party, people.selfie, threshold=0, limit=1000)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == pytest.approx(0.68) and body["limit"] == CAP
    assert 1 <= body["matches_found"] <= CAP
    assert all(m["similarity"] >= 0.68 for m in body["matches"])
    mine = {p.name for p in [*people.own, people.group]}
    assert {m["filename"] for m in body["matches"]} <= mine  # nobody else's photo
    higher = search(client, party, people.selfie, threshold=0.9).json()
    assert higher["threshold"] == pytest.approx(0.9)  # raising it is the guest's choice


def test_staff_set_the_floor_per_event_and_it_is_audited(site):
    client, ka, people, party = site
    staff = TestClient(ka.app)
    staff.headers["X-CSRF-Token"] = login(staff, "photographer")
    assert staff.patch(f"/api/v1/events/{party.id}", json={"min_threshold": 0.3}).status_code == 422
    assert staff.patch(f"/api/v1/events/{party.id}", json={"min_threshold": True}).status_code == 422
    r = staff.patch(f"/api/v1/events/{party.id}", json={"min_threshold": 0.99})
    assert r.status_code == 200 and r.json()["min_threshold"] == 0.99
    try:
        body = search(client, party, people.selfie, threshold=0.5).json()
        assert body["threshold"] == pytest.approx(0.99) and body["matches_found"] == 0
        assert staff.get(f"/api/v1/events/{party.id}/photos").json()["min_threshold"] == 0.99
        page = staff.get(f"/events/{party.id}").text
        assert 'name="min_threshold"' in page and 'value="0.99"' in page
    finally:
        token = staff.headers["X-CSRF-Token"]
        r = staff.post(
            f"/events/{party.id}/settings", data={"min_threshold": "0.68", "csrf_token": token}, follow_redirects=False
        )
        assert r.status_code == 303
    assert search(client, party, people.selfie).json()["matches_found"] >= 1
    with ka.service.session() as s:
        rows = [a for a in s.exec(AuditLog.__table__.select()) if a.action == "event_settings"]  # type: ignore
    assert len(rows) == 2 and {r.actor for r in rows} == {"photographer"}
    # guests cannot set it
    assert TestClient(ka.app).patch(f"/api/v1/events/{party.id}", json={"min_threshold": 0.5}).status_code == 401


def test_an_ended_event_is_refused_everywhere_at_once(site):
    client, ka, people, _ = site
    kiosk = ka.kiosk
    event = kiosk.events.create_event("short")
    upload_and_wait(kiosk, event.id, [people.own[0]])
    found = search(client, event, people.selfie).json()
    assert found["matches_found"] == 1
    match = found["matches"][0]
    assert client.get(match["download_url"]).status_code == 200
    staff = TestClient(ka.app)
    staff.headers["X-CSRF-Token"] = login(staff, "photographer")
    with kiosk.events.store.begin() as s:  # it ends now; the hourly job has not run
        row = s.get(Event, event.id)
        row.expires_at = utcnow() - timedelta(seconds=1)
        s.add(row)
    # hold the scheduler's one thread with another job, so the expiry job waits and every refusal can be seen
    hold, holding = threading.Event(), threading.Event()
    kiosk.scheduler.add("hold", 3600, lambda: (holding.set(), hold.wait(30)), first_in_s=0)
    assert holding.wait(10)
    for url in (match["download_url"], match["image_url"], match["thumbnail_url"]):
        assert client.get(url).status_code == 410, url
    assert client.post("/api/v1/orders", json={"token": match["token"], "name": "Jo"}).status_code == 410
    assert search(client, event, people.selfie).status_code == 410
    assert (
        client.post(
            "/api/v1/search/face", json={"event_code": event.code, "face_image": b64(people.selfie)}
        ).status_code
        == 404
    )
    assert client.get(f"/api/v1/events/{event.code}").status_code == 404
    files = {"files": ("late.png", png(), "image/png")}
    assert staff.post("/api/v1/photos/upload", data={"event_id": str(event.id)}, files=files).status_code == 410
    assert staff.post(f"/events/{event.id}/photos", files=files).status_code == 410
    assert staff.patch(f"/api/v1/events/{event.id}", json={"min_threshold": 0.7}).status_code == 410
    assert kiosk.scheduler.pending(EXPIRY_JOB) and kiosk.events.get(event.id) is not None
    # the expiry job was woken (here: let go): the event and its photos go now, not within the hour
    hold.set()
    kiosk.scheduler.remove("hold")
    wait_for(lambda: kiosk.events.get(event.id) is None, timeout=20, what="the ended event deleted")
    assert not (kiosk.events.files.root / event.id.hex).exists() or not any(
        (kiosk.events.files.root / event.id.hex).rglob("*.*")
    )

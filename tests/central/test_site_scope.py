"""Site managers see only their sites, in pages, API and live view, on a service seeded with real observations:
the loyal person (s1) and their second visitor (s2, scope "site"), two more visitors at s1."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from revisit.central.store import Camera, Sighting, Site, Visit, Visitor
from revisit.central.web import create_app
from tests.central.webapp import PASSWORD, login, seeded_app

pytestmark = [pytest.mark.models, pytest.mark.facedata]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, facedata, engine):
    with seeded_app(tmp_path_factory.mktemp("scope"), facedata, engine) as (client, service, data):
        accounts = client.app.state.accounts
        accounts.add_user("manager-s2", PASSWORD, "site_manager", ["s2"])
        accounts.add_user("office", PASSWORD, "head_office")
        manager = TestClient(client.app)
        manager.headers["X-CSRF-Token"] = login(manager, "manager-s2")
        yield client, manager, service, data


def _crop(service, visitor_id) -> str:
    with service.session() as s:
        path = s.exec(select(Sighting.crop_path).where(Sighting.visitor_id == visitor_id)).first()
    return f"/crops/{path}"


def test_lists_hold_only_their_sites(seeded):
    _, manager, _, data = seeded
    body = manager.get("/api/v1/visitors").json()
    assert body["total"] == 1 and [v["id"] for v in body["items"]] == [str(data.duplicate)]
    assert [s["name"] for s in manager.get("/api/v1/sites").json()] == ["s2"]
    assert [(d["site"], d["name"]) for d in manager.get("/api/v1/devices").json()] == [("s2", "d2")]
    sightings = manager.get("/api/v1/sightings").json()
    assert len(sightings) == 1 and {s["site"] for s in sightings} == {"s2"}
    visits = manager.get("/api/v1/visits").json()
    assert len(visits) == 1 and {v["site"] for v in visits} == {"s2"}
    loyal = next(iter(data.visitors.values()))
    assert manager.get(f"/api/v1/visits?visitor_id={loyal}").json() == []
    html = manager.get("/visitors").text
    assert str(data.duplicate)[:8] in html and str(loyal)[:8] not in html
    sites_html = manager.get("/sites").text
    assert 'data-site="s2"' in sites_html and 'data-site="s1"' not in sites_html


def test_head_office_sees_every_site(seeded):
    client, _, _, data = seeded
    office = TestClient(client.app)
    login(office, "office")
    assert office.get("/api/v1/visitors").json()["total"] == 4
    assert [s["name"] for s in office.get("/api/v1/sites").json()] == ["s1", "s2"]


def test_visitors_seen_only_elsewhere_are_not_found(seeded):
    _, manager, service, data = seeded
    loyal = next(iter(data.visitors.values()))
    assert manager.get(f"/api/v1/visitors/{loyal}").status_code == 404
    assert manager.get(f"/visitors/{loyal}").status_code == 404
    assert manager.get(f"/api/v1/visitors?q={loyal}").json()["total"] == 0
    assert manager.patch(f"/api/v1/visitors/{loyal}", json={"label": "x"}).status_code == 404
    assert manager.delete(f"/api/v1/visitors/{loyal}").status_code == 404
    assert manager.post(f"/api/v1/visitors/{data.duplicate}/merge", json={"other": str(loyal)}).status_code == 404
    token = manager.headers["X-CSRF-Token"]
    assert manager.post(f"/visitors/{loyal}/erase", data={"confirm": "yes", "csrf_token": token}).status_code == 404
    with service.session() as s:
        theirs = s.exec(select(Sighting.id).where(Sighting.visitor_id == loyal)).first()
        assert s.get(Visitor, loyal).label == ""  # nothing changed
    assert manager.post(f"/api/v1/sightings/{theirs}/not-this-person").status_code == 404
    assert manager.get(_crop(service, loyal)).status_code == 404
    # their own visitor: visible, with only their site's visits and sightings
    mine = manager.get(f"/api/v1/visitors/{data.duplicate}").json()
    assert {v["site"] for v in mine["visits"]} == {"s2"} and mine["sightings"]["total"] == 1
    assert manager.get(f"/visitors/{data.duplicate}").status_code == 200
    assert manager.get(_crop(service, data.duplicate)).status_code == 200
    r = manager.patch(f"/api/v1/visitors/{data.duplicate}", json={"label": "regular at s2"})
    assert r.status_code == 200


def test_loyal_list_is_of_their_site(seeded):
    _, manager, _, _ = seeded
    assert manager.get("/api/v1/loyal?site=s1").status_code == 404
    body = manager.get("/api/v1/loyal").json()
    assert body["total"] == 0  # the loyal person's visits are at s1; at s2 they came once
    page = manager.get("/loyal").text
    assert '<option value="s1"' not in page and manager.get("/loyal?site=s1").status_code == 404


def test_live_view_only_of_their_cameras(seeded):
    client, manager, service, data = seeded
    with service.session() as s:
        cams = {site.name: cam.id for cam, site in s.exec(select(Camera, Site).join(Site, Camera.site_id == Site.id))}
    live = manager.get("/live").text
    assert str(cams["s2"]) in live and str(cams["s1"]) not in live
    # a relay to an edge that is down: 502 for their camera, 404 (not found) for another site's
    app = create_app(service, live_urls={"s1/d1": "http://127.0.0.1:9", "s2/d2": "http://127.0.0.1:9"})
    relay = TestClient(app)
    login(relay, "manager-s2")
    assert relay.get(f"/live/camera/{cams['s2']}.jpg").status_code == 502
    assert relay.get(f"/live/camera/{cams['s1']}.jpg").status_code == 404
    assert relay.get(f"/live/camera/{cams['s1']}.mjpg").status_code == 404
    assert relay.get(f"/live/camera/{uuid.uuid4()}.jpg").status_code == 404


def test_a_site_scoped_token(seeded):
    client, _, _, data = seeded
    raw, _ = client.app.state.accounts.create_token("s2-till", "site_manager", ["s2"])
    anon = TestClient(client.app)
    body = anon.get("/api/v1/visitors", headers={"Authorization": f"Bearer {raw}"}).json()
    assert [v["id"] for v in body["items"]] == [str(data.duplicate)]


def test_a_visitor_seen_at_both_sites_shows_a_manager_only_their_part(tmp_path, facedata, engine):
    with seeded_app(tmp_path, facedata, engine) as (client, service, data):
        client.headers["X-CSRF-Token"] = login(client)
        loyal = next(iter(data.visitors.values()))
        assert client.post(f"/api/v1/visitors/{loyal}/merge", json={"other": str(data.duplicate)}).status_code == 200
        client.app.state.accounts.add_user("manager-s2", PASSWORD, "site_manager", ["s2"])
        manager = TestClient(client.app)
        manager.headers["X-CSRF-Token"] = login(manager, "manager-s2")
        body = manager.get(f"/api/v1/visitors/{loyal}").json()
        assert {v["site"] for v in body["visits"]} == {"s2"} and body["sightings"]["total"] == 1
        assert {s["site"] for s in body["sightings"]["items"]} == {"s2"}
        assert body["visitor"]["site"] == ""  # first seen at s1: that name is not theirs to see
        everyone = client.get(f"/api/v1/visitors/{loyal}").json()
        assert everyone["visitor"]["site"] == "s1"
        with service.session() as s:
            rows = list(s.exec(select(Sighting, Site).join(Site).where(Sighting.visitor_id == loyal)))
            visits = s.exec(select(Site.name).join(Visit, Visit.site_id == Site.id).where(Visit.visitor_id == loyal))
            n_visits = Counter(visits)
        at_s1 = [x.id for x, site in rows if site.name == "s1"]
        at_s2 = [x.id for x, site in rows if site.name == "s2"]
        assert len(at_s1) == 4 and len(at_s2) == 1
        # Their numbers are of s2 only: counts, first and last seen (API, list, page); the admin's are of both.
        mine = next(x for x, site in rows if site.name == "s2")
        assert n_visits["s1"] >= 2 and n_visits["s2"] == 1
        v, all_v = body["visitor"], everyone["visitor"]
        assert (v["visit_count"], v["sighting_count"]) == (1, 1)
        assert (all_v["visit_count"], all_v["sighting_count"]) == (n_visits["s1"] + 1, 5)
        assert datetime.fromisoformat(v["first_seen"]) == mine.first_ts
        assert datetime.fromisoformat(v["last_seen"]) == mine.last_ts
        assert datetime.fromisoformat(all_v["first_seen"]) < mine.first_ts
        assert v["reference_crop_url"] in (None, f"/crops/{mine.crop_path}")
        listed = manager.get("/api/v1/visitors", params={"q": str(loyal)}).json()["items"][0]
        assert {k: listed[k] for k in ("visit_count", "sighting_count", "first_seen", "last_seen")} == {
            k: v[k] for k in ("visit_count", "sighting_count", "first_seen", "last_seen")
        }
        assert sum(d["visits"] for d in body["frequency_30d"]) <= 1
        page = manager.get(f"/visitors/{loyal}").text
        assert "1 visit · 1 sighting" in page
        assert f"{n_visits['s1'] + 1} visits · 5 sightings" in client.get(f"/visitors/{loyal}").text
        assert "1 visit · 1 sighting" in manager.get("/visitors").text
        r = manager.post(f"/api/v1/visitors/{loyal}/split", json={"sighting_ids": [str(at_s1[0])]})
        assert r.status_code == 409  # not theirs to move
        assert manager.post(f"/api/v1/sightings/{at_s1[0]}/not-this-person").status_code == 404
        assert manager.get(f"/visitors/{loyal}").status_code == 200
        r = manager.post(f"/api/v1/visitors/{loyal}/split", json={"sighting_ids": [str(at_s2[0])]})
        assert r.status_code == 200 and r.json()["sighting_count"] == 1

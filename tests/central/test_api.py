"""/api/v1 on a service seeded with observations the real face engine made from ../shared photos."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import select

from revisit.central.store import AuditLog, Sighting, Visitor
from tests.central.webapp import login, seeded_app

pytestmark = [pytest.mark.models, pytest.mark.facedata]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, facedata, engine):
    with seeded_app(tmp_path_factory.mktemp("api"), facedata, engine) as (client, service, data):
        login(client)
        yield client, service, data


@pytest.fixture
def fresh(tmp_path, facedata, engine):
    with seeded_app(tmp_path, facedata, engine) as (client, service, data):
        client.headers["X-CSRF-Token"] = login(client)
        yield client, service, data


def test_visitors_list(seeded):
    client, _, data = seeded
    body = client.get("/api/v1/visitors").json()
    assert body["total"] == 4 and body["offset"] == 0 and body["limit"] == 50
    assert {v["id"] for v in body["items"]} == {str(v) for v in [*data.visitors.values(), data.duplicate]}
    first = body["items"][0]
    assert first["reference_crop_url"].startswith("/crops/") and first["url"] == f"/visitors/{first['id']}"
    page = client.get("/api/v1/visitors?sort=-visits&limit=1&offset=1").json()
    assert page["total"] == 4 and len(page["items"]) == 1
    ranked = [v["visit_count"] for v in client.get("/api/v1/visitors?sort=-visits").json()["items"]]
    assert ranked == sorted(ranked, reverse=True) == [4, 2, 2, 1]
    assert client.get(f"/api/v1/visitors?q={data.duplicate}").json()["total"] == 1
    assert client.get("/api/v1/visitors?limit=0").status_code == 422


def test_visitor_detail(seeded):
    client, _, data = seeded
    loyal = next(iter(data.visitors.values()))
    body = client.get(f"/api/v1/visitors/{loyal}").json()
    assert body["visitor"]["visit_count"] == 4 and body["visitor"]["site"] == "s1"
    assert len(body["visits"]) == 4 and all(v["site"] == "s1" for v in body["visits"])
    assert body["sightings"]["total"] == 4 and all(s["crop_url"] for s in body["sightings"]["items"])
    assert {s["camera"] for s in body["sightings"]["items"]} == {"door"}
    assert len(body["frequency_30d"]) == 30 and sum(d["visits"] for d in body["frequency_30d"]) == 4
    assert client.get(f"/api/v1/visitors/{uuid.uuid4()}").status_code == 404
    assert client.get("/api/v1/visitors/not-a-uuid").status_code == 422


def test_sightings_and_visits(seeded):
    client, _, data = seeded
    rows = client.get("/api/v1/sightings").json()
    assert len(rows) == 9
    stamps = [r["created_at"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    assert client.get("/api/v1/sightings", params={"since": stamps[0]}).json() == []  # the live page's cursor
    assert len(client.get("/api/v1/sightings", params={"since": stamps[3]}).json()) == 3
    camera = rows[0]["camera_id"]
    assert all(r["camera_id"] == camera for r in client.get(f"/api/v1/sightings?camera_id={camera}").json())
    assert client.get("/api/v1/sightings?since=2026-01-01T00:00:00").status_code == 422  # no time zone
    loyal = next(iter(data.visitors.values()))
    visits = client.get(f"/api/v1/visits?visitor_id={loyal}").json()
    assert len(visits) == 4 and all(v["visitor_id"] == str(loyal) for v in visits)
    assert len(client.get("/api/v1/visits").json()) == 9


def test_loyal(seeded):
    client, _, data = seeded
    loyal = next(iter(data.visitors.values()))
    body = client.get("/api/v1/loyal").json()
    assert body["total"] == 1 and body["min_visits"] == 2 and body["window_days"] == 30
    row = body["items"][0]
    assert row["visitor"]["id"] == str(loyal) and row["site"] == "s1" and row["visits_before"] == 3
    assert row["frequency"] == "4 visits this week, 4 in 30 days"
    assert row["today_crop_url"] and row["visitor"]["reference_crop_url"]
    assert client.get("/api/v1/loyal?min_visits=1").json()["total"] == 2
    assert client.get("/api/v1/loyal?min_visits=1&site=s2").json()["total"] == 0
    assert client.get("/api/v1/loyal?min_visits=1&limit=1&offset=1&sort=visits").json()["items"][0]["visitor"][
        "id"
    ] == str(loyal)


def test_sites_and_devices(seeded):
    client, _, _ = seeded
    sites = client.get("/api/v1/sites").json()
    assert [s["name"] for s in sites] == ["s1", "s2"]
    s1 = sites[0]
    assert s1["visits_today"] == 2 and s1["sightings_today"] == 2
    (d1,) = s1["devices"]
    assert d1["status"] == "online" and d1["version"] == "0.1.0" and d1["stats"]["door.fps"] == 4.5
    assert d1["observations"] == 8 and sorted(c["name"] for c in d1["cameras"]) == ["door", "till"]
    assert all(c["live_url"] is None for c in d1["cameras"])  # no live URLs configured
    devices = client.get("/api/v1/devices").json()
    assert [(d["site"], d["name"]) for d in devices] == [("s1", "d1"), ("s2", "d2")]


def test_edits(fresh):
    client, service, data = fresh
    loyal, once, absent = data.visitors.values()
    r = client.patch(f"/api/v1/visitors/{loyal}", json={"label": "Regular", "notes": "tea"})
    assert r.status_code == 200 and (r.json()["label"], r.json()["notes"]) == ("Regular", "tea")
    assert client.patch(f"/api/v1/visitors/{loyal}", json={"label": "x" * 201}).status_code == 422

    r = client.post(f"/api/v1/visitors/{loyal}/merge", json={"other": str(data.duplicate)})
    assert r.status_code == 200 and r.json()["sighting_count"] == 5 and r.json()["label"] == "Regular"
    assert client.get(f"/api/v1/visitors/{data.duplicate}").status_code == 404
    assert client.post(f"/api/v1/visitors/{loyal}/merge", json={"other": str(loyal)}).status_code == 409
    assert client.post(f"/api/v1/visitors/{loyal}/merge", json={"other": str(uuid.uuid4())}).status_code == 404

    with service.session() as s:
        mine = [r.id for r in s.exec(select(Sighting).where(Sighting.visitor_id == loyal).order_by(Sighting.best_ts))]
        theirs = s.exec(select(Sighting.id).where(Sighting.visitor_id == once)).first()
    r = client.post(f"/api/v1/visitors/{loyal}/split", json={"sighting_ids": [str(theirs)]})
    assert r.status_code == 409  # not this visitor's sighting
    assert client.post(f"/api/v1/visitors/{loyal}/split", json={"sighting_ids": []}).status_code == 422
    r = client.post(f"/api/v1/visitors/{loyal}/split", json={"sighting_ids": [str(mine[0]), str(uuid.uuid4())]})
    assert r.status_code == 404 and r.json()["detail"].startswith("no sighting")
    r = client.post(f"/api/v1/visitors/{loyal}/split", json={"sighting_ids": [str(mine[0])]})
    assert r.status_code == 200 and r.json()["sighting_count"] == 1 and r.json()["id"] != str(loyal)

    r = client.post(f"/api/v1/sightings/{mine[1]}/not-this-person")
    assert r.status_code == 200 and r.json()["sighting_count"] == 1
    assert client.get(f"/api/v1/visitors/{loyal}").json()["visitor"]["sighting_count"] == 3

    r = client.delete(f"/api/v1/visitors/{absent}", params={"reason": "request #9"})
    assert r.status_code == 200 and r.json() == {
        "erased": str(absent),
        "sightings": 2,
        "crops": 2,
        "visits": 2,
    }
    assert client.delete(f"/api/v1/visitors/{absent}").status_code == 404
    with service.session() as s:
        assert s.get(Visitor, absent) is None
        rows = list(s.exec(select(AuditLog).where(AuditLog.visitor_id.is_not(None))))
    assert sorted(a.action for a in rows) == ["edit", "erase", "merge", "not_this_person", "split"]
    assert {a.actor for a in rows} == {"admin"}  # every edit and the erasure name the user


def test_openapi_documents_the_api(seeded):
    client, _, _ = seeded
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/visitors",
        "/api/v1/visitors/{visitor_id}",
        "/api/v1/loyal",
        "/api/v1/sites",
        "/api/v1/sightings",
        "/api/v1/visits",
        "/api/v1/visitors/{visitor_id}/merge",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    assert not any(p.startswith(("/visitors", "/login", "/crops")) for p in paths)  # pages stay out of the API docs
    assert "swagger-ui" in client.get("/docs").text

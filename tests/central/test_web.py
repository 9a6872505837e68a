"""The app factory: /healthz, /metrics, static files, error pages, the routers it mounts."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from revisit.central.web import create_app
from revisit.shared.schema import encode, faces_topic
from tests.central.conftest import DIM, REC, make_obs, people
from tests.central.webapp import login, open_service, seeded_app, web_config


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    service = open_service(web_config(tmp_path_factory.mktemp("web")))
    with TestClient(create_app(service)) as client:
        yield client
    service.stop()


def _metrics(client: TestClient) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_healthz_is_public_and_reports_the_service(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["database"] == "ok" and body["mqtt_connected"] is False
    assert "broker" in body and "counters" in body


def test_healthz_is_503_when_the_database_fails(client, monkeypatch):
    service = client.app.state.service

    def broken():
        raise OSError("database gone")

    monkeypatch.setattr(service, "session", broken)
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["ok"] is False and r.json()["database"] == "error: OSError"
    assert client.get("/metrics").status_code == 200  # the counters still come out


def test_static_files_and_error_pages(client):
    assert client.get("/static/app.css").status_code == 200
    assert "pollLatest" in client.get("/static/app.js").text
    r = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert r.status_code == 404 and "<h1>404</h1>" in r.text
    r = client.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_the_kiosk_router_is_mounted(client):
    assert client.get("/events", follow_redirects=False).status_code != 404  # the nav's Events link has a page
    login(client)
    html = client.get("/loyal").text
    for href in ("/live", "/loyal", "/visitors", "/sites", "/events"):
        assert f'href="{href}"' in html
    assert 'action="/logout"' in html


@pytest.mark.models
@pytest.mark.facedata
def test_metrics_count_ingest_outcomes_and_tables(tmp_path, facedata, engine):
    with seeded_app(tmp_path, facedata, engine) as (client, service, _):
        for payload in (b"\x00garbage", b"", b"\x81\xa1v\x09"):
            service.ingestor.handle(faces_topic("s1", "d1"), payload)
        m = _metrics(client)  # public, like /healthz: counts only, no personal data
    assert m[("revisit_central_messages_total", (("outcome", "stored"),))] == 9
    assert m[("revisit_central_messages_total", (("outcome", "status"),))] == 2
    assert sum(v for (name, _), v in m.items() if name == "revisit_central_rejected_total") == 3
    assert m[("revisit_central_visitors", ())] == 4
    assert m[("revisit_central_sightings", ())] == 9
    assert m[("revisit_central_visits", ())] == 9
    assert m[("revisit_central_devices", (("status", "online"),))] == 2
    assert m[("revisit_central_mqtt_connected", ())] == 0


def test_dead_letters_show_on_healthz_and_the_sites_page(tmp_path):
    service = open_service(web_config(tmp_path, ingest={"recognizers": {REC: DIM}, "max_future_s": None}))
    ingestor = service.ingestor
    real = service.clusterer._ingest_in
    bad = make_obs(people(1)[0])

    def faulty(s, obs, *a, **kw):
        if obs.observation_id == bad.observation_id:
            raise ValueError("a bug")
        return real(s, obs, *a, **kw)

    service.clusterer._ingest_in = faulty
    fine = make_obs(people(2)[1], track=2)
    kinds = [o.kind for o in ingestor.handle_batch([(faces_topic("s1", "d1"), encode(x)) for x in (fine, bad)])]
    assert kinds == ["stored", "dead_letter"]
    with TestClient(create_app(service)) as client:
        body = client.get("/healthz").json()
        assert body["ingest"]["dead_letters"] == 1 and body["dead_letters_waiting"] == 1 and body["ok"] is True
        login(client)
        page = client.get("/sites").text
        assert "1 observation(s) from this site failed" in page and "--dead-letters" in page
    service.stop()

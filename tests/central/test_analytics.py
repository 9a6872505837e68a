"""Staff and exclusions, the analytics read model, its API, and the streamed CSV exports, on a store seeded with
real face-engine observations through the Ingestor (a month of visits at two sites)."""

from __future__ import annotations

import csv
import functools
import io
import sqlite3
import statistics
import uuid
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlmodel import select

from revisit.central import queries
from revisit.central.store import AuditLog, Store, Visit, Visitor, day_bounds, utcnow
from tests.central.webapp import day_time, feed, login, photo_faces, seeded_app

pytestmark = [pytest.mark.models, pytest.mark.facedata]


def seed_month(service, faces, recognizer):
    """On top of `webapp.seed`: person 0 also comes on 10 more days over the month at s1 (with a second sighting
    20 minutes later: dwell), person 2 on 3 days at s2. Returns the visitors by identity."""
    (a_name, a), _, (c_name, c) = list(faces.items())[:3]
    now = utcnow()
    at = functools.partial(day_time, now)
    track = iter(range(500, 5000))
    ids = {}
    for days_ago in (25, 22, 20, 18, 15, 12, 10, 8, 6, 4):
        ts = at(days_ago)
        ids[a_name] = feed(service, a[days_ago % 4], ts, recognizer, track=next(track))
        feed(service, a[(days_ago + 1) % 4], ts + 1200, recognizer, camera="till", track=next(track))
    for days_ago in (27, 14, 9):
        ids[c_name] = feed(
            service, c[days_ago % 4], at(days_ago), recognizer, site="s2", device="d2", camera="till", track=next(track)
        )
    return ids


@pytest.fixture(scope="module")
def month(tmp_path_factory, facedata, engine):
    with seeded_app(tmp_path_factory.mktemp("month"), facedata, engine) as (client, service, data):
        faces = photo_faces(facedata, engine)
        seed_month(service, faces, engine.recognizer_id)
        login(client)
        yield client, service, data, faces


def direct_counts(service, first, last, site_ids=None):
    """The analytics figures counted straight from the visit table (customers only), without the read model."""
    lo, _ = day_bounds(utcnow().replace(year=first.year, month=first.month, day=first.day), "UTC")
    _, hi = day_bounds(utcnow().replace(year=last.year, month=last.month, day=last.day), "UTC")
    with service.session() as s:
        rows = s.exec(select(Visit, Visitor.status).join(Visitor, Visitor.id == Visit.visitor_id)).all()
    everything = [v for v, status in rows if status == "customer" and (site_ids is None or v.site_id in site_ids)]
    first_day = {}
    for v in sorted(everything, key=lambda v: v.start):
        first_day.setdefault(v.visitor_id, v.start.date())
    in_range = [v for v in everything if lo <= v.start < hi]
    per_day = defaultdict(set)
    for v in in_range:
        per_day[v.start.date()].add(v.visitor_id)
    per_visitor = Counter(v.visitor_id for v in in_range)
    return {
        "visits": len(in_range),
        "visitors": len(per_visitor),
        "new": sum(1 for vid in per_visitor if first <= first_day[vid] <= last),
        "per_day": {d: len(who) for d, who in per_day.items()},
        "new_per_day": Counter(first_day[v] for v in per_visitor if first <= first_day[v] <= last),
        "frequency": Counter(queries.frequency_bucket(n) for n in per_visitor.values()),
        "dwell": statistics.median((v.end - v.start).total_seconds() for v in in_range) if in_range else None,
        "arrivals": Counter((v.start.weekday(), v.start.hour) for v in in_range),
    }


def test_analytics_equal_a_direct_count(month):
    client, service, _, _ = month
    today = utcnow().date()
    first = today - timedelta(days=27)
    api = client.get("/api/v1/analytics", params={"start": first.isoformat(), "end": today.isoformat()}).json()
    want = direct_counts(service, first, today)
    assert api["visits"] == want["visits"] > 15
    assert api["unique_visitors"] == want["visitors"] == 5  # scope "site": s2 has its own visitors
    assert api["new_visitors"] == want["new"]
    assert {d["day"]: d["visitors"] for d in api["days"] if d["visitors"]} == {
        d.isoformat(): n for d, n in want["per_day"].items()
    }
    assert {d["day"]: d["new"] for d in api["days"] if d["new"]} == {
        d.isoformat(): n for d, n in want["new_per_day"].items()
    }
    assert api["frequency"] == {b: want["frequency"].get(b, 0) for b in queries.FREQUENCY_BUCKETS}
    assert api["frequency"]["6+"] == 1  # person 0: 14 visits
    assert api["median_dwell_s"] == pytest.approx(want["dwell"])
    cells = {(wd, h): n for wd, row in enumerate(api["arrivals"]) for h, n in enumerate(row) if n}
    assert cells == dict(want["arrivals"])
    assert len(api["days"]) == 28 and sum(w["new"] for w in api["weeks"]) == api["new_visitors"]


def test_read_model_and_stream_on_sqlite_and_postgresql(db_url):
    """The week figures, the frequency buckets and the streamed visits CSV on a hand-made store (no faces
    needed), on both databases: person 0 returns 5 days later, person 1 twice the same day (not a return)."""
    from revisit.central.store import Site

    store = Store(db_url)
    store.create_all()
    now = utcnow()
    today, _ = day_bounds(now, "UTC")
    with store.begin() as s:
        site = Site(name="x")
        s.add(site)
        s.flush()
        people = [Visitor(recognizer_id="r", first_seen=now, last_seen=now) for _ in range(4)]
        people[3].status = "staff"
        s.add_all(people)
        s.flush()
        back = today - timedelta(days=20, hours=-10)
        spans = [(people[0], 0), (people[0], 5), (people[1], 0), (people[1], 0.01), (people[2], 0), (people[3], 1)]
        for p, days in spans:
            start = back + timedelta(days=days)
            s.add(Visit(visitor_id=p.id, site_id=site.id, start=start, end=start + timedelta(minutes=10)))
    try:
        with store.session() as s:
            a = queries.analytics(s, (today - timedelta(days=27)).date(), now.date(), now=now)
        week = [w for w in a.weeks if w.new]
        assert len(week) == 1 and (week[0].new, week[0].returned) == (3, 1)
        assert a.return_rate == pytest.approx(1 / 3)
        assert a.frequency == {"1": 1, "2": 2, "3-5": 0, "6+": 0}
        assert a.visits == 5 and a.median_dwell_s == pytest.approx(600)  # the staff member's visit is left out
        text = "".join(
            queries.csv_stream(store.session, lambda s: queries.visits_rows(s, today - timedelta(days=30), now))
        )
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) == 7 and Counter(r[3] for r in rows[1:]) == {"customer": 5, "staff": 1}
    finally:
        store.dispose()


def test_staff_leave_loyal_list_and_analytics_and_come_back(month):
    client, service, data, faces = month
    csrf = client.get("/api/v1/me").json()["csrf_token"]
    loyal_id = next(iter(data.visitors.values()))
    today = utcnow().date()
    params = {"start": (today - timedelta(days=27)).isoformat(), "end": today.isoformat()}
    before = client.get("/api/v1/analytics", params=params).json()
    assert str(loyal_id) in [r["visitor"]["id"] for r in client.get("/api/v1/loyal").json()["items"]]

    r = client.post(
        f"/visitors/{loyal_id}/status", data={"status": "staff", "csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    assert str(loyal_id) not in [r["visitor"]["id"] for r in client.get("/api/v1/loyal").json()["items"]]
    after = client.get("/api/v1/analytics", params=params).json()
    assert after["unique_visitors"] == before["unique_visitors"] - 1
    assert after["visits"] < before["visits"] and after["frequency"]["6+"] == 0
    assert client.get(f"/api/v1/visitors/{loyal_id}").json()["visitor"]["status"] == "staff"
    page = client.get(f"/visitors/{loyal_id}").text
    assert 'id="visitor-status"' in page and "staff" in page
    # a new sighting still attaches to the staff member (and is left out of the figures)
    a = next(iter(faces.values()))
    with service.session() as s:
        recognizer = s.get(Visitor, loyal_id).recognizer_id
    assert feed(service, a[1], day_time(data.now, 0) + 30, recognizer, track=4999) == loyal_id
    assert client.get("/api/v1/analytics", params=params).json()["visits"] == after["visits"]

    # back to customer through the API; the audit log has both changes with the user
    r = client.patch(f"/api/v1/visitors/{loyal_id}", json={"status": "customer"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["status"] == "customer"
    restored = client.get("/api/v1/analytics", params=params).json()
    assert restored["unique_visitors"] == before["unique_visitors"] and restored["visits"] >= before["visits"]
    with service.session() as s:
        log = s.exec(select(AuditLog).where(AuditLog.action == "status", AuditLog.visitor_id == loyal_id)).all()
    assert [(e.details["to"], e.actor) for e in log] == [("staff", "admin"), ("customer", "admin")]


def test_bulk_marking_from_the_grid(month):
    client, service, data, _ = month
    csrf = client.get("/api/v1/me").json()["csrf_token"]
    ids = [str(v) for v in data.visitors.values()][:2]
    r = client.post(
        "/visitors/status",
        data={"visitor_ids": ids, "status": "excluded", "csrf_token": csrf},
        headers={"referer": "http://testserver/visitors?sort=-visits"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/visitors?sort=-visits"
    with service.session() as s:
        assert {s.get(Visitor, uuid.UUID(i)).status for i in ids} == {"excluded"}
    assert client.get("/api/v1/loyal").json()["total"] == 0
    r = client.post("/visitors/status", data={"visitor_ids": ids, "status": "boss", "csrf_token": csrf})
    assert "unknown visitor status" in r.text
    client.post("/visitors/status", data={"visitor_ids": ids, "status": "customer", "csrf_token": csrf})
    with service.session() as s:
        assert {s.get(Visitor, uuid.UUID(i)).status for i in ids} == {"customer"}


def test_status_survives_recluster(month):
    client, service, data, _ = month
    loyal_id = next(iter(data.visitors.values()))
    service.clusterer.set_status([loyal_id], "staff", actor="test")
    try:
        service.clusterer.recluster(actor="test")
        with service.session() as s:
            staff = s.exec(select(Visitor).where(Visitor.status == "staff")).all()
        assert len(staff) == 1 and staff[0].visit_count >= 10
    finally:
        with service.session() as s:
            staff_ids = list(s.exec(select(Visitor.id).where(Visitor.status == "staff")))
        service.clusterer.set_status(staff_ids, "customer", actor="test")


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def test_exports_parse_and_match_the_api(month):
    client, service, _, _ = month
    today = utcnow().date()
    params = {"start": (today - timedelta(days=27)).isoformat(), "end": today.isoformat()}
    api = client.get("/api/v1/analytics", params=params).json()
    rows = _csv(client.get("/exports/analytics.csv", params=params))
    assert rows[0] == ["chart", "key", "column", "value"]
    summary = {r[2]: r[3] for r in rows if r[0] == "summary"}
    assert int(summary["visits"]) == api["visits"] and int(summary["unique_visitors"]) == api["unique_visitors"]
    daily = {(r[1], r[2]): int(r[3]) for r in rows if r[0] == "daily"}
    assert all(daily[(d["day"], "visitors")] == d["visitors"] for d in api["days"])
    assert {r[1]: int(r[3]) for r in rows if r[0] == "frequency"} == api["frequency"]

    visits = _csv(client.get("/exports/visits.csv", params=params))
    assert visits[0][:3] == ["visit_id", "visitor_id", "label"]
    assert len(visits) - 1 == api["visits"]  # nobody is staff now: every visit is a customer's
    with service.session() as s:
        assert {r[0] for r in visits[1:]} == {str(v.id) for v in s.exec(select(Visit))}

    with service.session() as s:
        some = s.exec(select(Visit)).first()
    service.clusterer.update_visitor(some.visitor_id, label='=HYPERLINK("http://x")')
    labelled = [r for r in _csv(client.get("/exports/visits.csv", params=params)) if r[1] == str(some.visitor_id)]
    assert labelled and all(r[2] == '\'=HYPERLINK("http://x")' for r in labelled)  # not a formula in a spreadsheet
    service.clusterer.update_visitor(some.visitor_id, label="")

    loyal = _csv(client.get("/exports/loyal.csv"))
    listed = client.get("/api/v1/loyal").json()
    assert [r[0] for r in loyal[1:]] == [i["visitor"]["id"] for i in listed["items"]] and listed["total"] >= 1
    with service.session() as s:
        exports = s.exec(select(AuditLog).where(AuditLog.action == "export")).all()
    assert {e.details["what"] for e in exports} >= {"analytics", "visits", "loyal"}
    assert all(e.actor == "admin" for e in exports)


def test_analytics_page_draws_charts_with_their_numbers(month):
    client, *_ = month
    html = client.get("/analytics").text
    assert html.count('<svg class="chart') == 3
    assert 'data-series="new"' in html and 'class="cell"' in html and 'id="frequency"' in html
    assert client.get("/analytics", params={"start": "2026-02-01", "end": "2026-01-01"}).status_code == 422
    assert client.get("/analytics", params={"site": "nowhere"}).status_code == 404


def test_site_manager_sees_only_their_site(month):
    client, service, _, _ = month
    from fastapi.testclient import TestClient

    app = client.app
    app.state.accounts.add_user("mgr-s2", "a long enough password 1", "site_manager", ["s2"])
    with TestClient(app) as other:
        login(other, "mgr-s2", "a long enough password 1")
        mine = other.get("/api/v1/analytics").json()
        assert other.get("/api/v1/analytics", params={"site": "s1"}).status_code == 404
        visits = _csv(other.get("/exports/visits.csv"))
    with service.session() as s:
        s2 = queries.site_ids(s, frozenset({"s2"}))
        n = len([v for v in s.exec(select(Visit)) if v.site_id in s2])
    assert mine["visits"] == n == len(visits) - 1 and {r[4] for r in visits[1:]} == {"s2"}


def test_old_database_gets_the_status_column(tmp_path):
    path = tmp_path / "old.db"
    Store(f"sqlite:///{path}").create_all()
    with sqlite3.connect(path) as conn:  # a database made before the column existed
        conn.execute("ALTER TABLE visitor DROP COLUMN status")
    store = Store(f"sqlite:///{path}")
    store.create_all()
    with sqlite3.connect(path) as conn:
        columns = {row[1]: row[4] for row in conn.execute("PRAGMA table_info(visitor)")}
    assert columns["status"] == "'customer'"
    store.dispose()


def test_loyal_query_leaves_staff_out(month):
    _, service, data, _ = month
    loyal_id = next(iter(data.visitors.values()))
    with service.session() as s:
        assert loyal_id in {r.visitor.id for r in queries.loyal_customers(s, min_visits=2).rows}
    service.clusterer.set_status([loyal_id], "excluded", actor="test")
    with service.session() as s:
        assert loyal_id not in {r.visitor.id for r in queries.loyal_customers(s, min_visits=2).rows}
    service.clusterer.set_status([loyal_id], "customer", actor="test")

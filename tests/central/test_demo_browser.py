"""The seeded demo in headless Chromium: `demo_data.seed_demo` (the dev photos through the real face engine and
the ingest's backfill path) opens on a non-empty loyal list; marking a regular as staff takes them off it; the
Analytics page draws its charts for the seeded month with numbers equal to a direct count from the database;
the CSV exports parse and match the pages; the demo event answers on the kiosk API."""

from __future__ import annotations

import csv
import io
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from revisit.central.demo_data import DEMO_SITES, load_marker, seed_demo
from revisit.central.store import Visit, Visitor, day_bounds, utcnow
from revisit.central.web import create_app
from tests.central.test_browser import browser_page, chromium, playwright  # noqa: F401 - fixtures
from tests.central.webapp import PASSWORD, USER, open_service, web_config
from tests.mosquitto import free_port

pytestmark = [pytest.mark.models, pytest.mark.facedata, pytest.mark.slow]


@pytest.fixture
def demo_server(tmp_path, facedata, engine):
    import uvicorn

    config = web_config(tmp_path, loyal={"min_visits": 3, "window_days": 30, "timezone": "UTC"})
    service = open_service(config)
    seed = seed_demo(service, engine, facedata, progress=lambda _m: None)
    assert load_marker(tmp_path / "central") == seed  # a restart finds it and does not seed again
    app = create_app(service)
    app.state.demo_data = True
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service, seed
    uv.should_exit = True
    thread.join(15)
    service.stop()


def _csv(response) -> list[list[str]]:
    assert response.ok, response.text()
    return list(csv.reader(io.StringIO(response.text())))


def test_the_demo_in_chromium(browser_page, demo_server, engine, tmp_path):  # noqa: F811 - fixture
    base, service, seed = demo_server
    page = browser_page
    assert seed.observations > 300 and seed.event_code and seed.sample_selfies

    page.goto(f"{base}/loyal")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_url(f"{base}/loyal*")
    assert "Demo data" in page.locator(".demo-banner").inner_text()
    rows = page.locator("table.loyal tbody tr")
    assert rows.count() >= 3, "the seeded demo opens on a non-empty loyal list"
    listed = [rows.nth(i).get_attribute("data-visitor") for i in range(rows.count())]
    assert all(any(s in rows.nth(i).inner_text() for s in DEMO_SITES) for i in range(rows.count()))

    # the loyal CSV has the page's rows
    loyal_csv = _csv(page.request.get(base + page.locator("#loyal-csv").get_attribute("href")))
    assert [r[0] for r in loyal_csv[1:]][: len(listed)] == listed

    # marking the first one as staff on their visitor page takes them off the loyal list
    target = listed[0]
    page.goto(f"{base}/visitors/{target}")
    page.click("#status-form button[value=staff]")
    page.wait_for_url(f"{base}/visitors/{target}")
    assert page.locator("#visitor-status").inner_text() == "staff"
    assert page.locator("svg.weekly rect.mark").count() >= 1
    assert page.locator("#sites-visited tbody tr").count() >= 1
    page.screenshot(path=str(tmp_path / "visitor.png"), full_page=True)
    page.goto(f"{base}/loyal")
    now_listed = page.locator("table.loyal tbody tr")
    assert target not in [now_listed.nth(i).get_attribute("data-visitor") for i in range(now_listed.count())]
    assert now_listed.count() == len(listed) - 1

    # in bulk from the visitors grid: two more marked as staff, then made customers again
    page.goto(f"{base}/visitors?sort=-visits")
    tiles = page.locator(".tile[data-visitor]")
    chosen = [
        tiles.nth(i).get_attribute("data-visitor")
        for i in range(3)
        if tiles.nth(i).get_attribute("data-visitor") != target
    ][:2]
    for vid in chosen:
        page.check(f'.tile[data-visitor="{vid}"] input[type=checkbox]')
    page.click("#mark-staff")
    page.wait_for_url(f"{base}/visitors?sort=-visits")
    assert "2 visitor(s) marked staff" in page.locator(".flash").inner_text()
    assert all(page.locator(f'.tile[data-visitor="{v}"] .badge.staff').count() == 1 for v in chosen)
    for vid in chosen:
        page.check(f'.tile[data-visitor="{vid}"] input[type=checkbox]')
    page.click("button[value=customer]")
    page.wait_for_url(f"{base}/visitors?sort=-visits")
    assert "2 visitor(s) marked customer" in page.locator(".flash").inner_text()

    # the analytics page: three charts with marks, and figures equal to a direct count from the database
    page.click("nav >> text=Analytics")
    page.wait_for_url(f"{base}/analytics")
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.daily rect.mark").count() >= 20
    assert page.locator("svg.heatmap rect.cell").count() == 7 * 24
    page.screenshot(path=str(tmp_path / "analytics.png"), full_page=True)
    today = utcnow().date()
    lo, _ = day_bounds(utcnow() - timedelta(days=27), "UTC")
    with service.session() as s:
        rows_db = s.exec(
            select(Visit, Visitor.unassigned)
            .join(Visitor, Visitor.id == Visit.visitor_id)
            .where(Visitor.status == "customer")
        )
        listed = [(v, held) for v, held in rows_db if v.start >= lo]
    visits = [v for v, held in listed if not held]  # analytics figures leave out holders of unassigned faces
    figure = page.locator('[data-figure="visits"]').inner_text()
    assert int(figure) == len(visits) > 200
    assert int(page.locator('[data-figure="unique_visitors"]').inner_text()) == len({v.visitor_id for v in visits})
    per_day = {}
    for v in visits:
        per_day.setdefault(v.start.date().isoformat(), set()).add(v.visitor_id)
    table = page.locator("#daily tbody tr")
    shown = {
        table.nth(i).get_attribute("data-day"): table.nth(i).locator("td").nth(1).text_content()
        for i in range(table.count())
    }
    assert {d: int(n) for d, n in shown.items() if n != "0"} == {d: len(w) for d, w in per_day.items()}

    # the analytics CSV and the visits CSV match the page
    query = f"start={(today - timedelta(days=27)).isoformat()}&end={today.isoformat()}"
    rows = _csv(page.request.get(f"{base}/exports/analytics.csv?{query}"))
    summary = {r[2]: r[3] for r in rows if r[0] == "summary"}
    assert int(summary["visits"]) == len(visits)
    daily = {r[1]: r[3] for r in rows if r[0] == "daily" and r[2] == "visitors"}
    assert daily == shown
    visit_rows = _csv(page.request.get(f"{base}/exports/visits.csv?{query}"))
    customers = [r for r in visit_rows[1:] if r[3] == "customer"]
    assert len(customers) == len(listed) and any(r[3] == "staff" for r in visit_rows[1:])  # the export lists all

    # the demo event is live (its code opens it on the kiosk) and its photos' faces are indexed
    from revisit.central.kiosk.events import Events

    events = Events.for_service(service)
    event = events.by_code(seed.event_code)
    assert event is not None
    status = events.photo_status(event.id)
    assert status["done"] == seed.event_photos >= 20 and status["faces"] >= 20

    # a restart on a later day adds today's visit of each regular, once
    from revisit.central.demo_data import top_up_today
    from revisit.central.queries import loyal_customers

    later = utcnow() + timedelta(days=1)
    facedata = Path(seed.sample_selfies[0]).parents[2]
    assert top_up_today(service, engine, facedata, seed, now=later) == len(seed.homes) == 10
    assert top_up_today(service, engine, facedata, seed, now=later) == 0
    assert load_marker(Path(service.config.data_dir)).topped_up == [later.date().isoformat()]
    with service.session() as s:
        assert loyal_customers(s, min_visits=3, now=later).total >= 5

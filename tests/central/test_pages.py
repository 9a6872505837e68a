"""The head-office pages on a service seeded with observations the real face engine made from ../shared photos."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from datetime import timezone as _timezone

import pytest
from sqlmodel import select

from revisit.central import pages, queries
from revisit.central.clustering.base import sighting_vector
from revisit.central.store import AuditLog, Sighting, Site, Visitor
from tests.central.webapp import login, seeded_app

UTC = _timezone.utc  # datetime.UTC is Python 3.11+

pytestmark = [pytest.mark.models, pytest.mark.facedata]

_VISITOR = re.compile(r'data-visitor="([0-9a-f-]{36})"')
_IMG = re.compile(r'<img class="face[^"]*" src="(/crops/[0-9a-f]{2}/[0-9a-f]{32}\.jpg)"')


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, facedata, engine):
    """Read-only tests share one seeded service."""
    with seeded_app(tmp_path_factory.mktemp("pages"), facedata, engine) as (client, service, data):
        login(client)
        yield client, service, data


@pytest.fixture
def fresh(tmp_path, facedata, engine):
    """Tests that edit get their own."""
    with seeded_app(tmp_path, facedata, engine) as (client, service, data):
        token = login(client)
        yield client, service, data, token


def _section(html: str, start: str, end: str = "</table>") -> str:
    i = html.index(start)
    return html[i : html.index(end, i)]


def _visitor(service, vid: uuid.UUID) -> Visitor | None:
    with service.session() as s:
        return s.get(Visitor, vid)


# --- loyal customers ---------------------------------------------------------------------------------------


def test_loyal_customers_shows_the_regular_with_photos(seeded):
    client, service, data = seeded
    loyal = next(iter(data.visitors.values()))
    html = client.get("/loyal").text
    table = _section(html, '<table class="loyal"')
    assert _VISITOR.findall(table) == [str(loyal)]
    images = _IMG.findall(table)
    assert len(images) == 2  # reference photo and today's photo
    for url in images:
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    assert "4 visits this week, 4 in 30 days" in table and "3 before this day" in table
    assert "<td>s1</td>" in table
    with service.session() as s:
        today = s.exec(select(Sighting).where(Sighting.visitor_id == loyal).order_by(Sighting.best_ts.desc())).first()
    assert today.first_ts.strftime("%H:%M") in table  # arrival time today


@pytest.mark.parametrize(
    "query, expected",
    [
        ("", [0]),
        ("?min_visits=1", [0, 1]),  # person 1 came once before today
        ("?min_visits=4", []),
        ("?min_visits=2&window_days=2", [0]),  # days 2 and 1 are in a 2-day window
        ("?min_visits=2&window_days=1", []),
        ("?min_visits=1&site=s2", []),  # the loyal person's s2 visitor has no visit before today
        ("?min_visits=1&site=s1", [0, 1]),
    ],
)
def test_loyal_filters(seeded, query, expected):
    client, _, data = seeded
    ids = list(data.visitors.values())
    html = client.get("/loyal" + query).text
    shown = _VISITOR.findall(_section(html, '<table class="loyal"')) if "<table" in html else []
    assert sorted(shown) == sorted(str(ids[i]) for i in expected)


def test_loyal_sorting_and_paging(seeded, monkeypatch):
    client, _, data = seeded
    ids = [str(v) for v in list(data.visitors.values())[:2]]
    by_visits = _VISITOR.findall(client.get("/loyal?min_visits=1&sort=-visits").text)
    assert by_visits == ids  # 3 visits before today, then 1
    assert _VISITOR.findall(client.get("/loyal?min_visits=1&sort=visits").text) == ids[::-1]
    monkeypatch.setattr(pages, "LOYAL_PAGE_SIZE", 1)
    first = client.get("/loyal?min_visits=1&sort=-visits").text
    second = client.get("/loyal?min_visits=1&sort=-visits&page=2").text
    assert _VISITOR.findall(first) == ids[:1] and _VISITOR.findall(second) == ids[1:]
    assert "Page 1 of 2" in first and "page=2" in first and "Page 2 of 2" in second
    assert client.get("/loyal?min_visits=0").status_code == 422
    assert client.get("/loyal?sort=nonsense").status_code == 422


@pytest.mark.parametrize(("path", "table"), [("/loyal", queries.LOYAL_SORTS), ("/visitors", queries.VISITOR_SORTS)])
def test_sort_menus_offer_every_order_of_the_read_model(seeded, path, table):
    client, _, _ = seeded
    menu = _section(client.get(path).text, '<select name="sort">', "</select>")
    assert re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', menu) == [
        (key, option.label) for key, option in table.items()
    ]
    for key in table:
        assert client.get(f"{path}?sort={key}").status_code == 200


# --- visitors ----------------------------------------------------------------------------------------------


def test_visitors_list_and_search(seeded):
    client, _, data = seeded
    html = client.get("/visitors").text
    assert set(_VISITOR.findall(html)) == {str(v) for v in [*data.visitors.values(), data.duplicate]}
    assert len(_IMG.findall(html)) == 4
    some = str(data.duplicate)
    assert _VISITOR.findall(client.get(f"/visitors?q={some}").text) == [some]
    assert "No visitors" in client.get("/visitors?q=nobody-has-this-label").text


def test_visitor_page(seeded):
    client, _, data = seeded
    loyal = next(iter(data.visitors.values()))
    html = client.get(f"/visitors/{loyal}").text
    assert "4 visits · 4 sightings" in html
    assert html.count('class="bar"') == 30 and "4 visits in the last 30 days" in html  # the frequency chart
    assert len(re.findall(r"<li><time datetime=", html)) == 4  # the visits timeline
    gallery = _section(html, 'id="sightings"', "</form>")
    assert len(_IMG.findall(gallery)) == 4 and gallery.count("Not this person") == 4
    similar = _section(html, 'class="similar"', "</ul>")
    assert _VISITOR.findall(similar)[0] == str(data.duplicate)  # the same person at s2: the first merge candidate
    r = client.get(f"/visitors/{uuid.uuid4()}", headers={"Accept": "text/html"})
    assert r.status_code == 404 and "no such visitor" in r.text


def test_label_and_notes(fresh):
    client, service, data, token = fresh
    vid = next(iter(data.visitors.values()))
    form = {"label": "  Mrs <b>Smith</b> ", "notes": "flat white", "csrf_token": token}
    r = client.post(f"/visitors/{vid}/details", data=form)
    assert r.status_code == 200 and str(r.url).endswith(f"/visitors/{vid}") and "Saved." in r.text
    assert "Saved." not in client.get(f"/visitors/{vid}").text  # a flash is shown once
    assert (_visitor(service, vid).label, _visitor(service, vid).notes) == ("Mrs <b>Smith</b>", "flat white")
    html = client.get("/loyal").text
    assert "Mrs &lt;b&gt;Smith&lt;/b&gt;" in html and "<b>Smith" not in html  # escaped
    assert _VISITOR.findall(client.get("/visitors?q=smith").text) == [str(vid)]


def test_merge_from_the_visitor_page(fresh):
    client, service, data, token = fresh
    loyal = next(iter(data.visitors.values()))
    r = client.post(f"/visitors/{loyal}/merge", data={"other": str(data.duplicate), "csrf_token": token})
    assert r.status_code == 200 and "merged into this one" in r.text
    assert _visitor(service, data.duplicate) is None
    merged = _visitor(service, loyal)
    assert merged.sighting_count == 5 and merged.visit_count == 5
    assert client.get(f"/visitors/{data.duplicate}", follow_redirects=False).status_code == 404
    with service.session() as s:
        assert s.exec(select(AuditLog).where(AuditLog.action == "merge")).one().actor == "admin"
    r = client.post(f"/visitors/{loyal}/merge", data={"other": str(loyal), "csrf_token": token})
    assert "cannot merge a visitor with itself" in r.text
    r = client.post(f"/visitors/{loyal}/merge", data={"other": "not-an-id", "csrf_token": token})
    assert "Not a visitor id" in r.text


def test_merge_selected_from_the_list(fresh):
    client, service, data, token = fresh
    loyal = next(iter(data.visitors.values()))
    form = {"visitor_ids": [str(data.duplicate), str(loyal)], "csrf_token": token}
    r = client.post("/visitors/merge", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/visitors/{loyal}"  # the one seen first stays
    assert _visitor(service, data.duplicate) is None and _visitor(service, loyal).sighting_count == 5
    r = client.post("/visitors/merge", data={"visitor_ids": [str(loyal)], "csrf_token": token})
    assert "Select at least two" in r.text


def test_split_selected_sightings(fresh):
    client, service, data, token = fresh
    loyal = next(iter(data.visitors.values()))
    with service.session() as s:
        rows = list(s.exec(select(Sighting).where(Sighting.visitor_id == loyal).order_by(Sighting.best_ts)))
    moved = [str(rows[0].id), str(rows[1].id)]
    r = client.post(
        f"/visitors/{loyal}/split", data={"sighting_ids": moved, "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    new = uuid.UUID(r.headers["location"].rsplit("/", 1)[1])
    assert new != loyal and _visitor(service, new).sighting_count == 2 and _visitor(service, loyal).sighting_count == 2
    assert "Select the sightings" in client.post(f"/visitors/{loyal}/split", data={"csrf_token": token}).text
    with service.session() as s:
        foreign = s.exec(select(Sighting.id).where(Sighting.visitor_id == data.duplicate)).first()
    r = client.post(f"/visitors/{loyal}/split", data={"sighting_ids": [str(foreign)], "csrf_token": token})
    assert "Only this visitor&#39;s sightings" in r.text and _visitor(service, data.duplicate).sighting_count == 1
    rest = {"sighting_ids": [str(r.id) for r in rows[2:]], "csrf_token": token}
    assert "nothing would be left" in client.post(f"/visitors/{loyal}/split", data=rest).text


def test_not_this_person(fresh):
    client, service, data, token = fresh
    loyal = next(iter(data.visitors.values()))
    with service.session() as s:
        row = s.exec(select(Sighting).where(Sighting.visitor_id == loyal)).first()
    r = client.post(f"/sightings/{row.id}/not-this-person", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/visitors/{loyal}"
    with service.session() as s:
        moved = s.get(Sighting, row.id)
    assert moved.visitor_id != loyal and _visitor(service, loyal).sighting_count == 3
    assert client.post(f"/sightings/{uuid.uuid4()}/not-this-person", data={"csrf_token": token}).status_code == 404


def test_erase_needs_confirmation_and_removes_everything(fresh):
    client, service, data, token = fresh
    vid = list(data.visitors.values())[1]
    with service.session() as s:
        rows = list(s.exec(select(Sighting).where(Sighting.visitor_id == vid)))
    files = [service.crops.path(r.crop_path) for r in rows]
    rec = rows[0].recognizer_id
    points = service.vectors.count(rec, "sightings")
    assert all(f.is_file() for f in files) and len(rows) == 2
    r = client.post(f"/visitors/{vid}/erase", data={"csrf_token": token})
    assert "Tick the confirmation box" in r.text and _visitor(service, vid) is not None
    form = {"confirm": "yes", "reason": "erasure request #7", "csrf_token": token}
    r = client.post(f"/visitors/{vid}/erase", data=form)
    assert str(r.url).endswith("/visitors") and "erased: 2 sightings, 2 crops, 2 visits deleted" in r.text
    assert _visitor(service, vid) is None and not any(f.exists() for f in files)
    assert service.vectors.count(rec, "sightings") == points - 2
    assert vid not in {v for v, _ in service.vectors.search_prototypes(rec, _unit(rows[0]), 10)}
    with service.session() as s:
        assert not list(s.exec(select(Sighting).where(Sighting.visitor_id == vid)))
        audit = s.exec(select(AuditLog).where(AuditLog.action == "erase")).one()
    assert audit.visitor_id == vid and audit.actor == "admin" and audit.details["reason"] == "erasure request #7"
    assert client.get(f"/crops/{rows[0].crop_path}").status_code == 404


def _unit(row: Sighting):
    return sighting_vector(row.embedding)


# --- live, sites, crops --------------------------------------------------------------------------------------


def test_live_page(seeded):
    client, _, data = seeded
    html = client.get("/live").text
    assert html.count('class="camera card"') == 3  # s1/d1/door, s1/d1/till, s2/d2/till
    assert "no live URL is configured" in html
    latest = _section(html, 'id="latest-crops"', "</ol>")
    assert len(_IMG.findall(latest)) == 9 and 'data-feed="/api/v1/sightings"' in html


def test_sites_page(seeded):
    client, _, _ = seeded
    html = client.get("/sites").text
    assert 'data-site="s1"' in html and 'data-site="s2"' in html
    assert html.count('<span class="badge online">online</span>') == 2
    assert "0.1.0" in html and "door.fps" in html


@pytest.mark.parametrize(
    "path",
    [
        "/crops/../central/revisit.db",
        "/crops/%2e%2e/revisit.db",
        "/crops/..%2f..%2fetc%2fpasswd",
        "/crops/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/crops//etc/passwd",
        "/crops/%2Fetc%2Fpasswd",
        "/crops/ab/../../revisit.db",
        "/crops/ab/" + "a" * 32 + ".jpg",  # well formed, not stored
        "/crops/AB/" + "A" * 32 + ".jpg",
        "/crops/ab/" + "a" * 32 + ".jpg/..",
        "/crops/ab%5c" + "a" * 32 + ".jpg",
    ],
)
def test_crops_route_refuses_anything_but_stored_crops(seeded, path):
    client, _, _ = seeded
    r = client.get(path, follow_redirects=False)
    assert r.status_code in (303, 404) and r.headers.get("content-type") != "image/jpeg"
    assert b"SQLite" not in r.content and b"root:" not in r.content


def test_crops_need_a_login(seeded):
    client, _, _ = seeded
    url = _IMG.findall(client.get("/visitors").text)[0]
    anonymous = type(client)(client.app)
    r = anonymous.get(url, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


# --- the edges' live views, relayed ----------------------------------------------------------------------------


class FakeEdge:
    """What the edge daemon gives its live server (LiveSource): one camera, a fixed frame."""

    def __init__(self, jpeg: bytes):
        self.jpeg = jpeg

    def camera_ids(self) -> list[str]:
        return ["door"]

    def snapshot_jpeg(self, camera_id: str) -> bytes:
        return self.jpeg

    def status(self) -> dict:
        return {"site": "s1", "device": "d1", "uptime_s": 1.0, "publisher": {}, "cameras": []}

    def metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"

    def health(self) -> tuple[bool, str]:
        return True, "ok"


@pytest.fixture
def edge_live():
    """The edge's real live server (revisit.edge.live) on a free port."""
    from revisit.edge.config import LiveConfig
    from revisit.edge.live import LiveServer
    from tests.central.conftest import jpeg

    frame = jpeg(64, 200)
    server = LiveServer(LiveConfig(bind="127.0.0.1", port=0, mjpeg_fps=20), FakeEdge(frame)).start()
    yield server, frame
    server.stop()


def test_live_view_is_relayed_from_the_edge(seeded, edge_live):
    import threading

    from fastapi.testclient import TestClient

    from revisit.central.web import create_app
    from tests.mosquitto import free_port

    _, service, _ = seeded
    server, frame = edge_live
    app = create_app(service, live_urls={"s1/d1": server.url, "d2": f"http://127.0.0.1:{free_port()}"})
    with TestClient(app) as client:
        login(client)
        html = client.get("/live").text
        cams = re.findall(r'<img class="mjpeg" src="/live/camera/([0-9a-f-]{36})\.mjpg"', html)
        assert len(cams) == 3  # both edges have a URL; d2's is not listening
        assert "door" in html and html.count("no live URL is configured") == 0
        door = _camera_id(service, "door")
        r = client.get(f"/live/camera/{door}.jpg")
        assert r.status_code == 200 and r.content == frame and r.headers["content-type"] == "image/jpeg"
        threading.Timer(0.5, server.stop).start()  # ends the edge's MJPEG stream, so the relayed one ends too
        r = client.get(f"/live/camera/{door}.mjpg")
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/x-mixed-replace")
        assert r.content.count(frame) >= 3
        till_s2 = _camera_id(service, "till", site="s2")
        r = client.get(f"/live/camera/{till_s2}.jpg", headers={"Accept": "text/html"})
        assert r.status_code == 502 and "not reachable" in r.text
        assert client.get(f"/live/camera/{uuid.uuid4()}.mjpg").status_code == 404
    with TestClient(create_app(service)) as client:  # no live URLs: nothing to relay
        login(client)
        assert client.get(f"/live/camera/{door}.jpg").status_code == 404


def _camera_id(service, name: str, site: str = "s1") -> uuid.UUID:
    from revisit.central.store import Camera, Site

    with service.session() as s:
        return s.exec(select(Camera.id).join(Site).where(Camera.name == name, Site.name == site)).one()


# --- looking back, time zones ------------------------------------------------------------------------------------


def test_loyal_looks_back_with_as_of(seeded):
    client, _, data = seeded
    ids = list(data.visitors.values())
    today = data.now.astimezone(UTC).date()
    yesterday = (today - timedelta(days=1)).isoformat()
    html = client.get(f"/loyal?min_visits=1&as_of={yesterday}").text
    shown = _VISITOR.findall(_section(html, '<table class="loyal"'))
    assert sorted(shown) == sorted(str(ids[i]) for i in (0, 2))  # the regular and the one seen on days 2 and 1
    assert f'name="as_of" value="{yesterday}"' in html and 'id="day-rule"' in html
    assert "one visit per day" in html  # all sites: the rule is said on the page
    assert _VISITOR.findall(client.get(f"/loyal?min_visits=2&as_of={yesterday}").text) == [str(ids[0])]
    assert "Nobody seen on this day" in client.get("/loyal?as_of=2001-01-01").text
    assert client.get("/loyal?as_of=yesterday").status_code == 422
    api = client.get(f"/api/v1/loyal?min_visits=1&as_of={yesterday}").json()
    assert api["day"] == yesterday and api["total"] == 2 and api["all_sites"] and api["zone"] == "UTC"
    assert client.get("/api/v1/loyal").json()["day"] == today.isoformat()
    assert client.get("/api/v1/loyal?as_of=2026-02-30").status_code == 422


def test_site_time_zone_is_set_on_the_sites_page(fresh):
    client, service, data, token = fresh
    html = client.get("/sites").text
    assert html.count('name="timezone"') == 2 and "UTC (head office)" in html
    with service.session() as s:
        site = s.exec(select(Site).where(Site.name == "s2")).one()
    r = client.post(
        f"/sites/{site.id}/timezone", data={"timezone": "Mars/Base", "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303 and "unknown time zone" in client.get("/sites").text
    r = client.post(f"/sites/{site.id}/timezone", data={"timezone": "Asia/Tokyo"}, follow_redirects=False)
    assert r.status_code == 403  # no CSRF token
    r = client.post(
        f"/sites/{site.id}/timezone", data={"timezone": "Asia/Tokyo", "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303
    with service.session() as s:
        assert s.get(Site, site.id).timezone == "Asia/Tokyo"
        assert s.exec(select(AuditLog).where(AuditLog.action == "site_timezone")).one().details["to"] == "Asia/Tokyo"
    assert 'value="Asia/Tokyo"' in client.get("/sites").text
    page = client.get("/api/v1/loyal?site=s2").json()
    assert page["zone"] == "Asia/Tokyo" and not page["all_sites"]
    sites = {x["name"]: x for x in client.get("/api/v1/sites").json()}
    assert sites["s2"]["timezone"] == "Asia/Tokyo" and sites["s1"]["timezone"] == "UTC"
    r = client.post(f"/sites/{site.id}/timezone", data={"timezone": "", "csrf_token": token}, follow_redirects=False)
    with service.session() as s:
        assert s.get(Site, site.id).timezone is None  # back to head office's
    assert (
        client.post(
            f"/sites/{uuid.uuid4()}/timezone", data={"timezone": "UTC", "csrf_token": token}, follow_redirects=False
        ).status_code
        == 404
    )

"""The store on SQLite and PostgreSQL: tables, time zones, uniqueness, crops (its queries: test_queries.py)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from datetime import timezone as _timezone

import pytest
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import select

from revisit.central.store import (
    CropStore,
    Device,
    Sighting,
    Store,
    StoreError,
    Visitor,
    day_bounds,
    ensure_camera,
    ensure_device,
    ensure_site,
)
from tests.central.conftest import make_obs, near, people

UTC = _timezone.utc  # datetime.UTC is Python 3.11+

NOW = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)


def test_tables_time_zones_and_get_or_create(db_url):
    store = Store(db_url)
    store.create_all()
    with store.begin() as s:
        site = ensure_site(s, "store-1")
        assert ensure_site(s, "store-1").id == site.id
        device = ensure_device(s, site, "box-a")
        camera = ensure_camera(s, site, device, "door")
        assert ensure_camera(s, site, device, "door").id == camera.id
        device.last_seen = datetime(2026, 1, 1, 12, 0, tzinfo=UTC) + timedelta(microseconds=5)
        device.stats = {"fps": 4.9, "dropped": 0}
    with store.session() as s:
        row = s.exec(select(Device)).one()
        assert row.last_seen == datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC) and row.last_seen.tzinfo is not None
        assert row.stats == {"fps": 4.9, "dropped": 0}
        with pytest.raises(StatementError, match="naive"):
            row.last_seen = datetime(2026, 1, 1)
            s.add(row)
            s.flush()
    store.dispose()


def test_indexes_added_to_an_existing_database(db_url):
    """An index declared after a database was made is created at start; the same-frame lookup uses it."""
    from sqlalchemy import inspect, text

    store = Store(db_url)
    store.create_all()
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_sighting_camera_last"))
    assert "ix_sighting_camera_last" not in {i["name"] for i in inspect(store.engine).get_indexes("sighting")}
    store.create_all()
    assert "ix_sighting_camera_last" in {i["name"] for i in inspect(store.engine).get_indexes("sighting")}
    store.create_all()  # idempotent
    if db_url.startswith("sqlite"):
        stmt = select(Sighting).where(
            Sighting.camera_id == uuid.uuid4(), Sighting.first_ts <= NOW, Sighting.last_ts >= NOW
        )
        sql = str(stmt.compile(store.engine, compile_kwargs={"literal_binds": False}))
        with store.engine.connect() as conn:
            plan = " ".join(str(r) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, ("x", "y", "z")))
        assert "ix_sighting_camera_last" in plan
    store.dispose()


def test_observation_id_is_unique(db_url, make_clusterer):
    c = make_clusterer(db_url)
    a = c.ingest(make_obs(people(1)[0]))
    with c.store.session() as s:
        row = s.get(Sighting, a.sighting_id)
        copy = Sighting(**{**row.model_dump(), "id": uuid.uuid4()})
        s.add(copy)
        with pytest.raises(IntegrityError):
            s.commit()


def test_clusterer_workflow_on_this_database(db_url, make_clusterer):
    """Ingest, merge, split, erase and recluster run the same on SQLite and PostgreSQL."""
    c = make_clusterer(db_url)
    p = people(2)
    a = [c.ingest(make_obs(near(p[0], seed=i), ts=1_800_000_000 + 86400 * i)) for i in range(3)]
    b = [
        c.ingest(make_obs(near(p[1], seed=9 + i), ts=1_800_000_000 + 86400 * i + 99, co=(1,), track=2))
        for i in range(2)
    ]
    assert len({x.visitor_id for x in a}) == 1 and len({x.visitor_id for x in b}) == 1
    merged = c.merge(a[0].visitor_id, b[0].visitor_id)
    assert merged.sighting_count == 5 and merged.visit_count == 3
    new = c.split([b[0].sighting_id, b[1].sighting_id])
    assert new.sighting_count == 2
    report = c.recluster()
    assert report.visitors_after == 2
    assert c.erase_visitor(new.id)["sightings"] == 2
    with c.store.session() as s:
        assert [v.sighting_count for v in s.exec(select(Visitor))] == [3]


def test_crop_store_names_and_paths(tmp_path):
    crops = CropStore(tmp_path)
    rel = crops.save(b"\xff\xd8 jpeg")
    assert crops.path(rel).read_bytes() == b"\xff\xd8 jpeg" and crops.path(rel).is_relative_to(tmp_path)
    for evil in ("../etc/passwd", "/etc/passwd", "ab/../../x.jpg", rel.replace(".jpg", ".png"), ""):
        with pytest.raises(StoreError, match="not a crop name"):
            crops.path(evil)
    assert crops.delete(rel) and not crops.delete(rel) and not crops.delete(None)


def test_bad_database_url_is_a_clear_error():
    with pytest.raises(StoreError, match="cannot use database"):
        Store("nosuchdb://x")


@pytest.mark.parametrize(
    ("now", "zone", "start", "end"),
    [
        (
            datetime(2026, 3, 20, 15, 0, tzinfo=UTC),
            "UTC",
            datetime(2026, 3, 20, tzinfo=UTC),
            datetime(2026, 3, 21, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 20, 23, 30, tzinfo=UTC),
            "Europe/Berlin",
            datetime(2026, 3, 20, 23, tzinfo=UTC),
            datetime(2026, 3, 21, 23, tzinfo=UTC),
        ),  # already the 21st in Berlin
        (
            datetime(2026, 3, 29, 12, 0, tzinfo=UTC),
            "Europe/Berlin",
            datetime(2026, 3, 28, 23, tzinfo=UTC),
            datetime(2026, 3, 29, 22, tzinfo=UTC),
        ),  # a 23-hour day (summer time starts)
    ],
)
def test_day_bounds(now, zone, start, end):
    assert day_bounds(now, zone) == (start, end)

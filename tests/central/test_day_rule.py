"""The day rule of the loyal list: a visit belongs to the local day of its site on which it starts; with all sites
in scope, days are head office's and a person counts at most one visit per day. Midnight, DST and two zones."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import timezone as _timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, text
from sqlmodel import select

from revisit.central.config import CentralConfig
from revisit.central.queries import loyal_customers, sites_overview
from revisit.central.store import Site, Store, StoreError, Visitor, day_bounds, ensure_site, local_day
from tests.central.conftest import make_obs, near, people

UTC = _timezone.utc  # datetime.UTC is Python 3.11+

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")


def _at(c, face, local: datetime, seed: int, site: str = "s1", minutes: float = 5.0):
    ts = local.astimezone(UTC).timestamp()
    return c.ingest(make_obs(near(face, seed=seed), ts=ts, site=site, duration=minutes * 60, quality=0.8))


def _zones(c, **zones: str) -> None:
    with c.store.begin() as s:
        for name, zone in zones.items():
            ensure_site(s, name).timezone = zone


def test_a_visit_past_midnight_counts_once_for_the_day_it_began(db_url, make_clusterer):
    c = make_clusterer(db_url)
    _zones(c, s1="Europe/Berlin")
    (face,) = people(1)
    for i, d in enumerate((3, 5, 7)):
        _at(c, face, datetime(2026, 5, d, 12, 0, tzinfo=BERLIN), seed=i)
    late = _at(c, face, datetime(2026, 5, 10, 23, 40, tzinfo=BERLIN), seed=10, minutes=40)  # until 00:20 on the 11th
    with c.store.session() as s:
        on_10th = loyal_customers(s, min_visits=3, as_of=date(2026, 5, 10), site="s1", timezone="UTC")
        assert [r.visitor.id for r in on_10th.rows] == [late.visitor_id]
        row = on_10th.rows[0]
        assert row.visits_before == 3 and row.arrived_today == datetime(2026, 5, 10, 23, 40, tzinfo=BERLIN)
        assert row.arrived_today.astimezone(BERLIN).strftime("%H:%M") == "23:40"  # never 00:00
        on_11th = loyal_customers(s, min_visits=1, as_of=date(2026, 5, 11), site="s1", timezone="UTC")
        assert on_11th.total == 0  # not "seen today" on the 11th: the visit belongs to the 10th
        on_12th = [
            _at(c, face, datetime(2026, 5, 12, 10, 0, tzinfo=BERLIN), seed=11),
            loyal_customers(s, min_visits=1, as_of=date(2026, 5, 12), site="s1", timezone="UTC"),
        ][1]
        assert on_12th.rows[0].visits_before == 4  # the late visit is one visit before, not two


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25), (date(2026, 6, 1), 24)])
def test_day_bounds_across_dst_changes(day, hours):
    start, end = day_bounds(datetime.combine(day, datetime.min.time(), BERLIN) + timedelta(hours=12), "Europe/Berlin")
    assert (end - start) == timedelta(hours=hours)
    assert start.astimezone(BERLIN).date() == day and start.astimezone(BERLIN).hour == 0


@pytest.mark.parametrize("day", [date(2026, 3, 29), date(2026, 10, 25)])  # summer time starts / ends in Berlin
def test_visits_on_dst_change_days_keep_their_local_day(db_url, make_clusterer, day):
    c = make_clusterer(db_url)
    _zones(c, s1="Europe/Berlin")
    (face,) = people(1)
    for i, back in enumerate((1, 2)):
        _at(
            c,
            face,
            datetime.combine(day - timedelta(days=back), datetime.min.time(), BERLIN).replace(hour=23, minute=30),
            seed=i,
        )
    early = _at(c, face, datetime.combine(day, datetime.min.time(), BERLIN).replace(hour=0, minute=30), seed=5)
    late = _at(c, face, datetime.combine(day, datetime.min.time(), BERLIN).replace(hour=23, minute=30), seed=6)
    with c.store.session() as s:
        page = loyal_customers(s, min_visits=2, as_of=day, site="s1")
        assert page.total == 1 and page.rows[0].visits_before == 2
        assert page.rows[0].arrived_today.astimezone(BERLIN).strftime("%H:%M") == "00:30"
        assert page.rows[0].visits_window == 4  # two visits on the day itself, both its own
        nxt = loyal_customers(s, min_visits=4, as_of=day + timedelta(days=1), site="s1")
        assert nxt.total == 0  # nothing on the next day: 23:30 stayed on the change day
    assert early.visitor_id == late.visitor_id


def test_two_time_zones_and_one_visit_per_head_office_day(db_url, make_clusterer):
    c = make_clusterer(db_url)
    _zones(c, berlin="Europe/Berlin", nyc="America/New_York")
    (face,) = people(1)
    # New York, 21:00 on 4, 5 and 6 May = 03:00 the next day in Berlin
    for i, d in enumerate((4, 5, 6)):
        _at(c, face, datetime(2026, 5, d, 21, 0, tzinfo=NEW_YORK), seed=i, site="nyc")
    # Berlin, 10:00 on 7 May: the same Berlin day as New York's 6 May visit
    _at(c, face, datetime(2026, 5, 7, 10, 0, tzinfo=BERLIN), seed=9, site="berlin")
    with c.store.session() as s:
        nyc = loyal_customers(s, min_visits=2, as_of=date(2026, 5, 6), site="nyc", timezone="Europe/Berlin")
        assert nyc.total == 1 and nyc.rows[0].visits_before == 2 and nyc.zone == "America/New_York"
        assert nyc.rows[0].zone == "America/New_York" and not nyc.all_sites
        assert loyal_customers(s, min_visits=1, as_of=date(2026, 5, 7), site="nyc").total == 0
        # all sites, head office in Berlin: visits fall on 5, 6, 7 May; 7 May has two visits at two sites
        all_7 = loyal_customers(s, min_visits=2, as_of=date(2026, 5, 7), timezone="Europe/Berlin")
        assert all_7.all_sites and all_7.zone == "Europe/Berlin"
        assert all_7.total == 1 and all_7.rows[0].visits_before == 2  # 5 and 6 May
        assert all_7.rows[0].visits_window == 3  # 5, 6, 7 May: one per day although 4 visits
        assert all_7.rows[0].arrived_today == datetime(2026, 5, 7, 3, 0, tzinfo=BERLIN)  # the NY visit came first
        assert all_7.rows[0].site in {"nyc", "berlin"}
        # a user's allowed sites restrict the scope
        only_berlin = loyal_customers(
            s, min_visits=1, as_of=date(2026, 5, 7), timezone="Europe/Berlin", sites=["berlin"]
        )
        assert only_berlin.total == 0
        assert loyal_customers(s, min_visits=1, as_of=date(2026, 5, 7), site="nyc", sites=["berlin"]).total == 0


def test_as_of_defaults_to_today_in_the_site_zone(db_url, make_clusterer):
    c = make_clusterer(db_url)
    _zones(c, nyc="America/New_York")
    (face,) = people(1)
    for i, d in enumerate((1, 2, 3)):
        _at(c, face, datetime(2026, 5, d, 20, 0, tzinfo=NEW_YORK), seed=i, site="nyc")
    _at(c, face, datetime(2026, 5, 4, 20, 0, tzinfo=NEW_YORK), seed=7, site="nyc")
    now = datetime(2026, 5, 5, 1, 0, tzinfo=UTC)  # 4 May 21:00 in New York, 5 May in UTC
    with c.store.session() as s:
        page = loyal_customers(s, min_visits=3, now=now, site="nyc", timezone="UTC")
        assert page.day == date(2026, 5, 4) and page.total == 1
        assert loyal_customers(s, min_visits=3, now=now, timezone="UTC").day == date(2026, 5, 5)
        back = loyal_customers(s, min_visits=2, as_of=date(2026, 5, 3), site="nyc", now=now)
        assert back.day == date(2026, 5, 3) and back.total == 1 and back.rows[0].visits_before == 2
        rows = {r.site.name: r for r in sites_overview(s, {}, "UTC", now=now)}
        assert (
            rows["nyc"].today == date(2026, 5, 4)
            and rows["nyc"].visits_today == 1
            and rows["nyc"].zone == ("America/New_York")
        )


def test_site_zone_defaults_to_the_global_zone(db_url, make_clusterer):
    c = make_clusterer(db_url)
    (face,) = people(1)
    for i, d in enumerate((1, 2)):
        _at(c, face, datetime(2026, 5, d, 23, 30, tzinfo=BERLIN), seed=i)  # 21:30 UTC: 06:30 next day in Tokyo
    with c.store.session() as s:
        assert s.exec(select(Site)).one().timezone is None

        def listed(day: int, zone: str) -> int:
            return loyal_customers(s, min_visits=1, as_of=date(2026, 5, day), site="s1", timezone=zone).total

        assert (listed(2, "Europe/Berlin"), listed(3, "Europe/Berlin")) == (1, 0)
        assert (listed(2, "Asia/Tokyo"), listed(3, "Asia/Tokyo")) == (0, 1)


def test_unknown_zones_are_clear_errors():
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        CentralConfig.model_validate({"loyal": {"timezone": "Mars/Olympus"}})
    with pytest.raises(ValidationError, match="unknown time zone 'Europe/Berln'"):
        CentralConfig.model_validate({"sites": {"store-1": {"timezone": "Europe/Berln"}}})
    with pytest.raises(ValidationError, match="bad"):
        CentralConfig.model_validate({"sites": {"store-1": {"timezone": "UTC", "bad": 1}}})
    with pytest.raises(StoreError, match="unknown time zone"):
        local_day(datetime(2026, 1, 1, tzinfo=UTC), "Nowhere/Else")
    cfg = CentralConfig.model_validate(
        {"loyal": {"timezone": "Europe/Berlin"}, "sites": {"nyc": {"timezone": "America/New_York"}}}
    )
    assert cfg.sites["nyc"].timezone == "America/New_York"


def test_an_old_database_gains_the_new_columns_without_losing_rows(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    store = Store(url)
    store.create_all()
    with store.engine.begin() as conn:  # the schema before site zones and unassigned sightings
        conn.execute(text("ALTER TABLE site DROP COLUMN timezone"))
        conn.execute(text("ALTER TABLE visitor DROP COLUMN unassigned"))
        conn.execute(
            text(
                "INSERT INTO site (id, name, created_at) VALUES ('0123456789abcdef0123456789abcdef', "
                "'old-site', '2026-01-01 00:00:00')"
            )
        )
    store.dispose()
    store = Store(url)
    store.create_all()
    columns = {t: {c["name"] for c in inspect(store.engine).get_columns(t)} for t in ("site", "visitor")}
    assert "timezone" in columns["site"] and "unassigned" in columns["visitor"]
    with store.session() as s:
        site = s.exec(select(Site)).one()
        assert site.name == "old-site" and site.timezone is None
        assert s.exec(select(Visitor)).all() == []
    store.create_all()  # idempotent
    store.dispose()

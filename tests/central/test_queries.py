"""The read model (`revisit.central.queries`) on SQLite and PostgreSQL: the loyal list, the visitor detail, the
visit frequency, the live sightings, the devices overview, and the sort orders the pages and the API share."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from datetime import timezone as _timezone
from typing import get_args

import pytest
from sqlmodel import col, select

from revisit.central import queries
from revisit.central.queries import devices_overview, latest_sightings, loyal_customers, visit_frequency, visitor_detail
from revisit.central.store import Sighting, Site, Visitor
from tests.central.conftest import make_obs, near, people

UTC = _timezone.utc  # datetime.UTC is Python 3.11+

NOW = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)


def _visit(c, face, when: datetime, seed: int, site: str = "s1"):
    return c.ingest(make_obs(near(face, seed=seed), ts=when.timestamp(), site=site, quality=0.5 + seed % 5 / 10))


def test_loyal_customers_and_visitor_queries(db_url, make_clusterer):
    c = make_clusterer(db_url)
    regular, newcomer, lapsed, weekly = people(4)
    day = timedelta(days=1)
    for i, d in enumerate((1, 2, 4, 8)):  # 4 visits before today, and today twice (one visit)
        _visit(c, regular, NOW - d * day, seed=i)
    first = _visit(c, regular, NOW - timedelta(hours=3), seed=10, site="s2")
    _visit(c, regular, NOW - timedelta(hours=2, minutes=50), seed=11, site="s2")
    _visit(c, newcomer, NOW - timedelta(hours=1), seed=20)  # first time today
    for i, d in enumerate((40, 45, 50)):  # visits outside the 30-day window, and today
        _visit(c, lapsed, NOW - d * day, seed=30 + i)
    _visit(c, lapsed, NOW - timedelta(hours=4), seed=39)
    for i, d in enumerate((1, 3, 6)):  # three visits before today, not today
        _visit(c, weekly, NOW - d * day, seed=40 + i)

    with c.store.session() as s:
        page = loyal_customers(s, min_visits=3, window_days=30, now=NOW)
        assert page.total == 1 and len(page.rows) == 1
        row = page.rows[0]
        assert row.visitor.id == first.visitor_id and row.visits_before == 4 and row.visits_7d == 4
        assert row.visits_window == 5 and row.site == "s2" and row.arrived_today == NOW - timedelta(hours=3)
        assert row.reference is not None and row.today is not None and row.today.visitor_id == first.visitor_id
        assert loyal_customers(s, min_visits=5, window_days=30, now=NOW).total == 0
        assert loyal_customers(s, min_visits=3, window_days=30, now=NOW, site="s1").total == 0  # today at s2
        assert loyal_customers(s, min_visits=3, window_days=60, now=NOW).total == 2
        assert loyal_customers(s, min_visits=1, window_days=60, now=NOW, sort="arrival").rows[0].visitor.id != (
            first.visitor_id
        )  # the lapsed one arrived earlier today
        assert loyal_customers(s, min_visits=1, window_days=60, now=NOW, offset=1, limit=1).total == 2
        assert loyal_customers(s, min_visits=1, now=NOW, site="nowhere").total == 0

        detail = visitor_detail(s, first.visitor_id, limit=2)
        assert detail.visitor.visit_count == 5 and detail.sighting_total == 6 and len(detail.sightings) == 2
        assert detail.sightings[0].best_ts > detail.sightings[1].best_ts
        assert set(detail.sites.values()) == {"s1", "s2"} and set(detail.cameras.values()) == {"c1"}
        assert detail.reference.quality == max(
            x.quality for x in s.exec(select(Sighting).where(Sighting.visitor_id == first.visitor_id))
        )
        assert visitor_detail(s, uuid.uuid4()) is None

        freq = visit_frequency(s, first.visitor_id, days=7, now=NOW)
        assert len(freq) == 7 and freq[-1] == (NOW.date(), 1) and sum(n for _, n in freq) == 4

        assert len(latest_sightings(s, limit=3)) == 3
        overview = devices_overview(s)
        assert [(site.name, dev.name, [cam.name for cam in cams]) for site, dev, cams in overview] == [
            ("s1", "d1", ["c1"]),
            ("s2", "d1", ["c1"]),
        ]
        assert {x.name for x in s.exec(select(Site))} == {"s1", "s2"}


def test_each_sort_menu_lists_exactly_the_orders_the_api_accepts():
    """One definition: the Literal (validated by the pages and the API) and the table (menus, query order) agree."""
    assert set(queries.LOYAL_SORTS) == set(get_args(queries.LoyalSort))
    assert set(queries.VISITOR_SORTS) == set(get_args(queries.VisitorSort))
    labels = [o.label for o in (*queries.LOYAL_SORTS.values(), *queries.VISITOR_SORTS.values())]
    assert all(labels)


_A, _B, _C = (uuid.UUID(int=n) for n in (1, 2, 3))
_CANDIDATES = [
    queries.LoyalCandidate(_A, 2, NOW.replace(hour=10), NOW.replace(hour=12)),
    queries.LoyalCandidate(_B, 5, NOW.replace(hour=9), NOW.replace(hour=11)),
    queries.LoyalCandidate(_C, 5, NOW.replace(hour=11), NOW.replace(hour=13)),
]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-arrival", [_C, _A, _B]),
        ("arrival", [_B, _A, _C]),
        ("-visits", [_B, _C, _A]),  # a tie: by id
        ("visits", [_A, _B, _C]),
        ("-last_seen", [_C, _A, _B]),
        ("last_seen", [_B, _A, _C]),
    ],
)
def test_loyal_sort_orders(sort, expected):
    assert [r.visitor_id for r in sorted(_CANDIDATES, key=queries.LOYAL_SORTS[sort].order)] == expected


def test_visitor_sort_orders(db_url, make_clusterer):
    c = make_clusterer(db_url)
    faces = people(4)
    for i, face in enumerate(faces):
        for k in range(i + 1):  # visitor i: i + 1 visits a day apart, first seen 10 + 2i days ago, last 10 + i
            _visit(c, face, NOW - timedelta(days=10 + 2 * i - k), seed=10 * i + k)
    columns = {"visits": "visit_count", "sightings": "sighting_count"}
    with c.store.session() as s:
        everyone = list(s.exec(select(Visitor).where(col(Visitor.unassigned).is_(False))))
        assert len(everyone) == 4
        for sort in get_args(queries.VisitorSort):
            column = columns.get(sort.lstrip("-"), sort.lstrip("-"))
            by_id = sorted(everyone, key=lambda v: v.id)  # ties: by id, as the query breaks them
            want = sorted(by_id, key=lambda v: getattr(v, column), reverse=sort.startswith("-"))
            got = queries.list_visitors(s, sort=sort).visitors
            assert [v.id for v in got] == [v.id for v in want], sort

"""Helpers of the clustering tests."""

from __future__ import annotations

from sqlmodel import func, select

from tests.central.conftest import make_obs, near, people


def count(store, model, **where) -> int:
    with store.session() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.exec(stmt).one())


def two_visitors(c):
    p = people(2)
    a = [c.ingest(make_obs(near(p[0], seed=i), ts=1_800_000_000 + 86400 * i)) for i in range(3)]
    b = [c.ingest(make_obs(near(p[1], seed=10 + i), ts=1_800_000_000 + 86400 * i + 60)) for i in range(2)]
    return a, b

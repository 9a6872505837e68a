"""Manual edits on a real store and vector index: merge, split, not this person, erase."""

from __future__ import annotations

import pytest
from sqlmodel import select

from revisit.central.clustering import ClusterError
from revisit.central.store import AuditLog, MustLink, Sighting, Visit, Visitor
from revisit.shared.errors import NotFound
from tests.central.clustering.support import count, two_visitors
from tests.central.conftest import REC


def test_merge(make_clusterer):
    c = make_clusterer()
    a, b = two_visitors(c)
    c.update_visitor(b[0].visitor_id, label="Regular at the bar")
    merged = c.merge(a[0].visitor_id, b[0].visitor_id, actor="admin")
    assert merged.id == a[0].visitor_id and merged.sighting_count == 5 and merged.label == "Regular at the bar"
    assert merged.visit_count == 3  # same days, within the gap
    assert count(c.store, Visitor) == 1 and c.vectors.count(REC) == 1
    assert count(c.store, MustLink) == 4 and count(c.store, AuditLog, action="merge") == 1


def test_split_and_not_this_person(make_clusterer):
    c = make_clusterer()
    a, _ = two_visitors(c)
    new = c.split([a[1].sighting_id, a[2].sighting_id], actor="admin")
    with c.store.session() as s:
        assert s.get(Visitor, a[0].visitor_id).sighting_count == 1
        assert new.sighting_count == 2 and new.visit_count == 2
        assert {x.visitor_id for x in s.exec(select(Sighting).where(Sighting.id == a[2].sighting_id))} == {new.id}
    with pytest.raises(ClusterError, match="nothing would be left"):
        c.split([a[0].sighting_id])
    with pytest.raises(ClusterError, match="different visitors"):
        c.split([a[0].sighting_id, a[1].sighting_id])
    alone = c.not_this_person(a[2].sighting_id, actor="admin")
    assert alone.sighting_count == 1 and alone.id not in (new.id, a[0].visitor_id)
    assert count(c.store, AuditLog, action="split") == 1 and count(c.store, AuditLog, action="not_this_person") == 1
    assert c.vectors.count(REC) == 4


def test_erase_deletes_everything_and_audits(make_clusterer):
    c = make_clusterer()
    a, b = two_visitors(c)
    counts = c.erase_visitor(a[0].visitor_id, actor="admin", reason="customer request")
    assert counts == {"sightings": 3, "crops": 3, "visits": 3}
    assert count(c.store, Sighting) == 2 and count(c.store, Visitor) == 1 and count(c.store, Visit) == 2
    assert c.vectors.count(REC) == 1 and c.vectors.count(REC, "sightings") == 2
    assert len(list(c.crops.root.rglob("*.jpg"))) == 2
    with c.store.session() as s:
        log = s.exec(select(AuditLog).where(AuditLog.action == "erase")).one()
        assert log.visitor_id == a[0].visitor_id and log.details["sightings"] == 3 and log.actor == "admin"
    with pytest.raises(NotFound, match="no visitor"):  # a ClusterError too; the web answers 404 by its type
        c.erase_visitor(a[0].visitor_id)

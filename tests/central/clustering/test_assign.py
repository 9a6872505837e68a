"""The assignment path: the decision as a table, then ingest on a real store and vector index."""

from __future__ import annotations

import uuid
from datetime import datetime
from datetime import timezone as _timezone

import numpy as np
import pytest
from sqlmodel import select

from revisit.central import queries
from revisit.central.clustering import ClusterError
from revisit.central.clustering.assign import choose
from revisit.central.clustering.rebuild import cluster_offline
from revisit.central.store import CannotLink, Sighting, Visit, Visitor
from tests.central.clustering.support import count
from tests.central.conftest import REC, make_obs, near, people

UTC = _timezone.utc  # datetime.UTC is Python 3.11+

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


@pytest.mark.parametrize(
    ("candidates", "threshold", "forbidden", "expected"),
    [
        ([], 0.4, [], (None, -1.0)),
        ([(A, 0.9), (B, 0.5)], 0.4, [], (A, 0.9)),
        ([(A, 0.9), (B, 0.5)], 0.4, [A], (B, 0.5)),
        ([(A, 0.9), (B, 0.3)], 0.4, [A], (None, 0.3)),
        ([(A, 0.4)], 0.4, [], (A, 0.4)),  # at the threshold joins
        ([(A, 0.399)], 0.4, [], (None, 0.399)),
        ([(B, 0.5), (A, 0.7), (C, 0.6)], 0.4, [C], (A, 0.7)),  # order does not matter
        ([(A, 0.9)], 0.4, [B], (A, 0.9)),  # a forbidden id that is not a candidate changes nothing
    ],
)
def test_choose(candidates, threshold, forbidden, expected):
    visitor, score = choose(candidates, threshold, forbidden)
    assert visitor == expected[0] and score == pytest.approx(expected[1])


def test_same_person_joins_and_stranger_starts_new(make_clusterer):
    c = make_clusterer()
    p = people(2)
    a1 = c.ingest(make_obs(near(p[0], seed=1)))
    a2 = c.ingest(make_obs(near(p[0], seed=2), ts=1_800_000_100))
    b1 = c.ingest(make_obs(near(p[1], seed=3), ts=1_800_000_200))
    assert a1.created and not a2.created and a2.visitor_id == a1.visitor_id and a2.score > 0.9
    assert b1.created and b1.visitor_id != a1.visitor_id
    assert count(c.store, Visitor) == 2 and count(c.store, Sighting) == 3
    assert c.vectors.count(REC) == 2 and c.vectors.count(REC, "sightings") == 3


def test_redelivery_is_idempotent(make_clusterer):
    c = make_clusterer()
    obs = make_obs(people(1)[0])
    first, again = c.ingest(obs), c.ingest(obs)
    assert again.duplicate and again.sighting_id == first.sighting_id
    assert count(c.store, Sighting) == 1 and len(list(c.crops.root.rglob("*.jpg"))) == 1


def test_visits_count_visits_not_sightings(make_clusterer):
    c = make_clusterer()
    p = people(1)[0]
    t = 1_800_000_000.0
    for dt in (0, 600, 1200, 5 * 3600, 5 * 3600 + 60, 86400):  # 3 sightings, 2, 1: three visits
        a = c.ingest(make_obs(near(p, seed=int(dt)), ts=t + dt))
    with c.store.session() as s:
        v = s.get(Visitor, a.visitor_id)
        assert v.sighting_count == 6 and v.visit_count == 3
        assert sorted(x.sighting_count for x in s.exec(select(Visit))) == [1, 2, 3]
    # a late sighting that bridges the first two visits merges them
    c.ingest(make_obs(near(p, seed=99), ts=t + 2200, duration=15000))
    with c.store.session() as s:
        assert s.get(Visitor, a.visitor_id).visit_count == 2
        assert sorted(x.sighting_count for x in s.exec(select(Visit))) == [1, 6]
        assert all(x.visit_id is not None for x in s.exec(select(Sighting)))


def test_reference_is_the_best_quality_sighting(make_clusterer):
    c = make_clusterer()
    p = people(1)[0]
    c.ingest(make_obs(near(p, seed=1), quality=0.5))
    best = c.ingest(make_obs(near(p, seed=2), quality=0.9, ts=1_800_000_100))
    c.ingest(make_obs(near(p, seed=3), quality=0.6, ts=1_800_000_200))
    with c.store.session() as s:
        assert s.get(Visitor, best.visitor_id).reference_sighting_id == best.sighting_id


def test_same_frame_tracks_are_different_people(make_clusterer):
    c = make_clusterer()
    face = people(1)[0]
    # twins in one frame: identical embeddings, but tracks 5 and 6 were seen together
    a = c.ingest(make_obs(face, track=5, co=(6,)))
    b = c.ingest(make_obs(near(face, 0.01, seed=1), track=6, co=(5,)))
    assert a.visitor_id != b.visitor_id
    # the edge may list the co-track on one side only; the other camera is unaffected
    d = c.ingest(make_obs(near(face, 0.01, seed=2), track=7, ts=1_800_000_001))  # track 5 did not list 7
    assert d.visitor_id in (a.visitor_id, b.visitor_id)
    e = c.ingest(make_obs(face, track=8, camera="c2", co=(5,)))
    assert e.visitor_id in (a.visitor_id, b.visitor_id)
    assert count(c.store, CannotLink) == 1


def test_scope_site_keeps_sites_apart(make_clusterer):
    face = people(1)[0]
    per_site = make_clusterer(scope="site")
    a = per_site.ingest(make_obs(face, site="north"))
    b = per_site.ingest(make_obs(near(face, seed=1), site="south"))
    assert a.visitor_id != b.visitor_id
    everywhere = make_clusterer(scope="all")
    a = everywhere.ingest(make_obs(face, site="north"))
    b = everywhere.ingest(make_obs(near(face, seed=1), site="south"))
    assert a.visitor_id == b.visitor_id
    with everywhere.store.session() as s:
        assert s.get(Visitor, a.visitor_id).visit_count == 2  # a visit is per site


def test_recognizers_are_never_compared(make_clusterer):
    c = make_clusterer()
    face = people(1)[0]
    a = c.ingest(make_obs(face, recognizer="one@1"))
    b = c.ingest(make_obs(face, recognizer="two@2"))
    assert a.visitor_id != b.visitor_id
    with pytest.raises(ClusterError, match="different recognizers"):
        c.merge(a.visitor_id, b.visitor_id)


def test_stale_prototype_in_the_index_is_dropped(make_clusterer):
    c = make_clusterer()
    face = people(1)[0]
    ghost = uuid.uuid4()
    c.vectors.ensure(REC, len(face))
    c.vectors.upsert_prototypes(REC, [(ghost, face, "s1")])
    a = c.ingest(make_obs(face))
    assert a.created and a.visitor_id != ghost and c.vectors.count(REC) == 1


def test_redelivery_mends_an_index_left_stale_by_a_qdrant_failure(make_clusterer):
    # The database committed but Qdrant missed the update (it failed after the commit): the redelivered
    # observation is a duplicate for the database and pushes its stored state to Qdrant again.
    c = make_clusterer()
    obs = make_obs(people(1)[0])
    first = c.ingest(obs)
    c.vectors.delete_prototypes(REC, [first.visitor_id])
    c.vectors.delete_sightings(REC, [first.sighting_id])
    assert c.vectors.count(REC) == 0
    again = c.ingest(obs)
    assert again.duplicate and again.visitor_id == first.visitor_id
    assert c.vectors.count(REC) == 1 and c.vectors.count(REC, "sightings") == 1
    # and the person is found again instead of becoming a new visitor
    assert c.ingest(make_obs(near(people(1)[0], seed=5), ts=1_800_000_100.0)).visitor_id == first.visitor_id


# --- the quality floor: a poor face never founds a visitor -------------------------------------------------------


def test_a_low_quality_face_joins_a_clear_match_or_waits_unassigned(db_url, make_clusterer):
    c = make_clusterer(db_url, found_min_quality=0.4)
    known, stranger = people(2)
    good = c.ingest(make_obs(near(known, seed=1), ts=1_800_000_000, quality=0.8))
    assert good.created and not good.unassigned
    joined = c.ingest(make_obs(near(known, seed=2), ts=1_800_100_000, quality=0.2))
    assert joined.visitor_id == good.visitor_id and not joined.unassigned and not joined.created
    held = c.ingest(make_obs(near(stranger, seed=3), ts=1_800_200_000, quality=0.2))
    assert held.unassigned and held.visitor_id != good.visitor_id
    # nothing can join a held sighting, not even the same poor face again: no prototype is indexed for it
    assert c.vectors.count(REC) == 1
    again = c.ingest(make_obs(near(stranger, seed=4), ts=1_800_300_000, quality=0.2))
    assert again.unassigned and again.visitor_id != held.visitor_id
    assert c.unassigned_count() == 2
    # a good face of the stranger founds a visitor; later poor faces of the stranger join it
    founder = c.ingest(make_obs(near(stranger, seed=5), ts=1_800_400_000, quality=0.9))
    assert founder.created and not founder.unassigned
    later = c.ingest(make_obs(near(stranger, seed=6), ts=1_800_500_000, quality=0.1))
    assert later.visitor_id == founder.visitor_id
    with c.store.session() as s:
        listed = queries.loyal_customers(
            s,
            min_visits=1,
            window_days=3650,
            now=datetime(2027, 1, 15, 0, 0, tzinfo=UTC),
            as_of=datetime.fromtimestamp(1_800_500_000, UTC).date(),
        )
        assert [r.visitor.id for r in listed.rows] == [founder.visitor_id]
        assert listed.rows[0].visits_before == 1  # the held sightings are no visits of anybody
        held_rows = queries.list_visitors(s, unassigned=True)
        assert held_rows.total == 2 and queries.list_visitors(s).unassigned == 2
        assert {v.id for v in queries.list_visitors(s).visitors} == {good.visitor_id, founder.visitor_id}
    # recluster keeps the rule: the held ones stay held (each alone), the others keep their visitors
    report = c.recluster()
    assert report.visitors_after == 4 and c.unassigned_count() == 2
    assert c.vectors.count(REC) == 2
    # a person can place a held sighting: merging makes it part of a visitor
    c.merge(good.visitor_id, held.visitor_id)
    with c.store.session() as s:
        assert s.get(Visitor, good.visitor_id).unassigned is False
    assert c.unassigned_count() == 1


def test_without_a_floor_every_face_founds(make_clusterer):
    c = make_clusterer()
    (face,) = people(1)
    first = c.ingest(make_obs(face, quality=0.01))
    assert first.created and not first.unassigned and c.unassigned_count() == 0


def _at_cosine(base: np.ndarray, cos: float, seed: int) -> np.ndarray:
    """A unit vector at exactly `cos` to `base`."""
    base = base / np.linalg.norm(base)
    other = np.random.default_rng(seed).standard_normal(base.shape)
    other -= (other @ base) * base
    return cos * base + np.sqrt(1 - cos * cos) * other / np.linalg.norm(other)


def test_a_low_quality_face_must_match_clearly_to_join(make_clusterer):
    c = make_clusterer(threshold=0.37, found_min_quality=0.4, low_quality_threshold=0.5)
    assert c.settings.join_threshold(0.2) == 0.5 and c.settings.join_threshold(0.6) == 0.37
    (face,) = people(1)
    good = c.ingest(make_obs(face, ts=1_800_000_000, quality=0.9))
    unclear = c.ingest(make_obs(_at_cosine(face, 0.45, 1), ts=1_800_100_000, quality=0.2))
    assert unclear.unassigned and unclear.visitor_id != good.visitor_id  # 0.45: enough for a good face only
    clear = c.ingest(make_obs(_at_cosine(face, 0.6, 2), ts=1_800_200_000, quality=0.2))
    assert clear.visitor_id == good.visitor_id
    fine = c.ingest(make_obs(_at_cosine(face, 0.45, 3), ts=1_800_300_000, quality=0.9))
    assert fine.visitor_id == good.visitor_id
    labels = cluster_offline(
        np.stack([face, _at_cosine(face, 0.45, 1)]), [0.9, 0.2], 0.37, found_min_quality=0.4, low_quality_threshold=0.5
    )
    assert labels == [0, -1]


@pytest.mark.parametrize("scope", ["site", "all"])
def test_a_batch_searches_once_and_assigns_like_one_by_one(make_clusterer, scope):
    """A batch's index searches are made together (one `search_prototypes_many` per recognizer); each
    observation still gets the decision and score it would get alone, with the prototypes the batch moved, the
    visitors it started and same-frame tracks taken into account. Found only when the batch left too few
    untouched candidates does an observation search again on its own."""
    faces = people(40, seed=21)
    rng = np.random.default_rng(5)
    obs = []
    for i in range(160):
        person = int(rng.integers(40))
        site = f"s{person % 2}"
        co = (i - 1,) if i % 7 == 0 else ()  # now and then two tracks of one frame
        obs.append(make_obs(near(faces[person], seed=i), ts=1_800_000_000.0 + 30 * i, site=site, track=i, co=co))
    one, batch = make_clusterer(scope=scope), make_clusterer(scope=scope)
    singles = [one.ingest(o) for o in obs]
    calls = {"many": 0, "one": 0}  # batch searches (of several vectors), single searches
    many, single = batch.vectors.search_prototypes_many, batch.vectors.search_prototypes

    def counted_many(rec, vectors, *args, **kwargs):
        calls["many"] += len(vectors) > 1  # an engine may make a single search one of these
        return many(rec, vectors, *args, **kwargs)

    def counted_one(*args, **kwargs):
        calls["one"] += 1
        return single(*args, **kwargs)

    batch.vectors.search_prototypes_many = counted_many  # type: ignore[method-assign]
    batch.vectors.search_prototypes = counted_one  # type: ignore[method-assign]
    together = [a for k in range(0, len(obs), 64) for a in batch.ingest_batch(obs[k : k + 64])]
    assert calls["many"] == 3 and calls["one"] < len(obs) // 4, calls
    assert [a.created for a in singles] == [a.created for a in together]
    # f16 in the index, f32 for prototypes the batch moved
    assert [a.score for a in singles] == pytest.approx([a.score for a in together], abs=2e-3)
    index = {a.visitor_id: n for n, a in enumerate(singles)}
    mapping = {t.visitor_id: index[s.visitor_id] for s, t in zip(singles, together, strict=True)}
    assert [index[s.visitor_id] for s in singles] == [mapping[t.visitor_id] for t in together]
    assert count(batch.store, Visitor) == count(one.store, Visitor) >= 40

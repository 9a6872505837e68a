"""Rebuilds: the offline pass as rules, recluster and reindex on a real store, and recluster at scale (embeddings
streamed in chunks, one sum per cluster, HNSW candidates in large scopes)."""

from __future__ import annotations

import numpy as np
from sqlmodel import select

from revisit.central.clustering import rebuild
from revisit.central.clustering.rebuild import cluster_offline
from revisit.central.store import Sighting, Visitor
from revisit.shared import assign as shared_assign
from tests.central.clustering.support import two_visitors
from tests.central.conftest import REC, make_obs, near, people


def people_rows(people: int, shots: int, seed: int = 0, dim: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    faces = rng.standard_normal((people, dim)).astype(np.float32)
    rows = np.repeat(faces, shots, axis=0) + 0.3 * rng.standard_normal((people * shots, dim)).astype(np.float32)
    rows = rows[rng.permutation(len(rows))]
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_stream_clusters_like_an_array():
    rows = people_rows(40, 5)
    q = [0.8] * len(rows)
    assert cluster_offline((r for r in rows), q, 0.4) == cluster_offline(rows, q, 0.4)
    assert len(set(cluster_offline(rows, q, 0.4))) == 40


def test_hnsw_candidates_in_a_large_scope_give_the_exact_labels(monkeypatch):
    rows = people_rows(300, 4, seed=1)
    q = list(np.random.default_rng(2).uniform(0.3, 1.0, len(rows)))
    exact = cluster_offline(rows, q, 0.4, cannot=[(0, 1), (5, 9)], must=[[2, 7]])
    monkeypatch.setattr(shared_assign, "ANN_FROM", 20)
    approx = cluster_offline(rows, q, 0.4, cannot=[(0, 1), (5, 9)], must=[[2, 7]])
    assert approx == exact


def test_recluster_in_small_chunks_keeps_visitors(make_clusterer, monkeypatch):
    c = make_clusterer()
    rows = people_rows(12, 4, seed=3, dim=64)
    for i, vec in enumerate(rows):
        c.ingest(make_obs(vec, ts=1_800_000_000.0 + 400 * i, track=i))
    with c.store.session() as s:
        before = {v.id: v.sighting_count for v in s.exec(select(Visitor))}
    monkeypatch.setattr(rebuild, "CHUNK", 7)  # many chunks for 48 sightings
    report = c.recluster()
    assert report.sightings == 48 and report.visitors_after == len(before) == 12
    with c.store.session() as s:
        after = {v.id: v.sighting_count for v in s.exec(select(Visitor))}
    assert after == before  # same people, same ids
    assert c.vectors.count(REC) == 12


def test_cluster_offline_rules():
    p = people(3)
    rows = np.stack([near(p[0], seed=1), near(p[0], seed=2), near(p[1], seed=3), near(p[1], seed=4), p[2]])
    q = [0.8] * 5
    assert cluster_offline(rows, q, 0.42) == [0, 0, 1, 1, 2]
    # cannot-link keeps 1 away from 0's cluster; must-link puts the stranger (4) with person 1
    assert cluster_offline(rows, q, 0.42, cannot=[(0, 1)], must=[[2, 4]]) == [0, 1, 2, 2, 2]
    # scopes: the same person at two sites stays two visitors
    assert cluster_offline(rows, q, 0.42, scopes=["a", "b", "a", "a", "a"]) == [0, 1, 2, 2, 3]


def test_recluster_keeps_manual_edits(make_clusterer):
    c = make_clusterer()
    a, b = two_visitors(c)
    c.update_visitor(a[0].visitor_id, label="Ann", notes="likes tea")
    c.merge(a[0].visitor_id, b[0].visitor_id)  # a person said: same visitor, though the faces differ
    p = people(3)
    x = c.ingest(make_obs(near(p[2], seed=50), ts=1_800_500_000))
    y = c.ingest(make_obs(near(p[2], seed=51), ts=1_800_600_000))
    assert x.visitor_id == y.visitor_id
    z = c.not_this_person(y.sighting_id)
    report = c.recluster()
    assert report.sightings == 7 and report.visitors_after == 3 and report.must_links == 4
    with c.store.session() as s:
        ann = s.get(Visitor, a[0].visitor_id)  # the id, label and notes survive
        assert ann.label == "Ann" and ann.notes == "likes tea" and ann.sighting_count == 5
        owner = {r.id: r.visitor_id for r in s.exec(select(Sighting))}
        assert owner[x.sighting_id] != owner[y.sighting_id] and owner[y.sighting_id] == z.id
    assert c.vectors.count(REC) == 3 and c.vectors.count(REC, "sightings") == 7
    # nothing changes the second time
    again = c.recluster()
    assert again.visitors_after == 3 and again.kept_ids == 3


def test_reindex_rebuilds_qdrant_from_the_database(make_clusterer):
    c = make_clusterer()
    a, b = two_visitors(c)
    c.vectors.drop(REC)
    assert c.reindex() == 5
    assert c.vectors.count(REC) == 2 and c.vectors.count(REC, "sightings") == 5
    again = c.ingest(make_obs(near(people(2)[1], seed=77), ts=1_801_000_000))
    assert again.visitor_id == b[0].visitor_id


def test_cluster_offline_quality_floor():
    vecs = np.stack([near(p, seed=i) for i, p in enumerate(people(3))] + [near(people(3)[0], seed=9)])
    labels = cluster_offline(vecs, [0.1, 0.9, 0.1, 0.1], 0.37, found_min_quality=0.4)
    assert labels == [-1, 0, -1, -1]  # the fourth is the first person again, but neither may found
    labels = cluster_offline(vecs, [0.9, 0.9, 0.1, 0.1], 0.37, found_min_quality=0.4)
    assert labels == [0, 1, -1, 0]  # a poor face joins its clear match
    labels = cluster_offline(vecs, [0.1, 0.9, 0.1, 0.1], 0.37, found_min_quality=0.4, must=[[0, 2]])
    assert labels[0] == labels[2] >= 0  # a person's must-link wins over the floor

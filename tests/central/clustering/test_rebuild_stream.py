"""Recluster at scale: embeddings streamed in chunks, one sum per cluster, HNSW candidates in large scopes."""

from __future__ import annotations

import numpy as np

from revisit.central.clustering import assign as cluster_mod
from revisit.central.clustering.assign import cluster_offline
from revisit.central.store import Visitor
from revisit.shared import assign as shared_assign
from tests.central.conftest import REC, make_obs


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
        before = {v.id: v.sighting_count for v in s.exec(cluster_mod.select(Visitor))}
    monkeypatch.setattr(cluster_mod, "CHUNK", 7)  # many chunks for 48 sightings
    report = c.recluster()
    assert report.sightings == 48 and report.visitors_after == len(before) == 12
    with c.store.session() as s:
        after = {v.id: v.sighting_count for v in s.exec(cluster_mod.select(Visitor))}
    assert after == before  # same people, same ids
    assert c.vectors.count(REC) == 12

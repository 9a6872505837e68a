"""The assignment rule: is this embedding a known person, or a new one?

One rule for everything that groups faces: the central service's recurrence clustering (with its
prototypes in Qdrant), `revisit eval video` (identities in a clip) and `revisit eval cluster`.

- A person (cluster) is represented by a prototype: the L2-normalised, quality-weighted mean of its
  members' embeddings.
- A new embedding joins the most similar prototype (cosine) when the similarity is at least
  `threshold` and no cannot-link constraint forbids it (tracks seen in the same frame are different
  people; "not this person" feedback); otherwise it starts a new person.

In memory the rule has one implementation, `PrototypeTable`: `OnlineClusterer` (`revisit eval video`) is one table
fed one embedding at a time, and `recluster`'s offline pass (`central/clustering/rebuild.py`) one table per scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

# `revisit eval cluster` on ../shared/facedata/dev (4,493 photos, 1,644 people, w600k_mbf, seed 0), BCubed
# precision / F1 by threshold: 0.34: 0.9865 / 0.9876, 0.35: 0.9913 / 0.9896, 0.36: 0.9949 / 0.9900,
# 0.37: 0.9967 / 0.9896, 0.40: 0.9980 / 0.9860, 0.42: 0.9983 / 0.9821. A false merge hides a person while a
# split is fixed by a merge, so we take 0.37: F1 within 0.0004 of the best, with a margin on precision.
DEFAULT_THRESHOLD = 0.37


def decide(
    candidates: Iterable[tuple[int, float]], threshold: float, forbidden: Iterable[int] = ()
) -> tuple[int | None, float]:
    """The cluster to join from (cluster id, cosine) candidates, or (None, best allowed score)."""
    banned = set(forbidden)
    best_id, best_score = None, -1.0
    for cluster_id, score in candidates:
        if cluster_id in banned:
            continue
        if score > best_score:
            best_id, best_score = cluster_id, float(score)
    if best_id is not None and best_score >= threshold:
        return best_id, best_score
    return None, best_score


def member_weight(quality: float) -> float:
    """How much a member pulls its prototype: better shots count more; none counts for nothing."""
    return 0.1 + 0.9 * max(0.0, min(1.0, quality))


@dataclass
class Prototype:
    """Running quality-weighted sum of member embeddings; `vector` is its unit-length direction."""

    total: np.ndarray
    weight: float = 0.0
    members: int = 0

    @classmethod
    def from_bytes(cls, total: bytes, weight: float = 0.0, members: int = 0) -> Prototype:
        """A prototype kept as bytes (`to_bytes`: the running sum, float64), e.g. in a visitor's row."""
        return cls(np.frombuffer(total, dtype=np.float64).copy(), weight, members)

    def to_bytes(self) -> bytes:
        return np.asarray(self.total, dtype=np.float64).tobytes()

    @classmethod
    def of(cls, vector: np.ndarray, quality: float = 1.0) -> Prototype:
        proto = cls(np.zeros_like(vector, dtype=np.float64))
        proto.add(vector, quality)
        return proto

    def add(self, vector: np.ndarray, quality: float = 1.0) -> None:
        w = member_weight(quality)
        self.total = self.total + w * np.asarray(vector, dtype=np.float64)
        self.weight += w
        self.members += 1

    def remove(self, vector: np.ndarray, quality: float = 1.0) -> None:
        w = member_weight(quality)
        self.total = self.total - w * np.asarray(vector, dtype=np.float64)
        self.weight = max(0.0, self.weight - w)
        self.members = max(0, self.members - 1)

    @property
    def vector(self) -> np.ndarray:
        norm = np.linalg.norm(self.total)
        return (self.total / norm).astype(np.float32) if norm > 0 else self.total.astype(np.float32)


ANN_FROM = 50_000  # clusters in one table beyond which candidates come from an HNSW index


class PrototypeTable:
    """The prototype sums of a set of clusters, searched with the rule: a matrix grown by doubling (amortised
    appends, never a copy per cluster), their norms, and past `ANN_FROM` clusters an HNSW index of their directions
    for candidates (cosines are always exact)."""

    def __init__(self, dim: int):
        self.sums = np.zeros((64, dim), dtype=np.float32)
        self.norms = np.zeros(64, dtype=np.float32)
        self.clusters: list[int] = []  # row -> cluster id
        self.ann: Any = None

    def __len__(self) -> int:
        return len(self.clusters)

    def append(self, cluster: int, vec: np.ndarray, weight: float) -> int:
        """A new cluster founded by `vec`; returns its row."""
        row = len(self.clusters)
        if row == len(self.sums):
            self.sums = np.concatenate([self.sums, np.zeros_like(self.sums)])
            self.norms = np.concatenate([self.norms, np.zeros_like(self.norms)])
        self.clusters.append(cluster)
        self.add(row, vec, weight)
        return row

    def add(self, row: int, vec: np.ndarray, weight: float) -> None:
        self.sums[row] += weight * vec
        self.norms[row] = float(np.linalg.norm(self.sums[row])) or 1.0
        if self.ann is not None:
            if self.ann.contains(row):
                self.ann.remove(row)
            self.ann.add(row, self.sums[row] / self.norms[row])
        elif len(self.clusters) > ANN_FROM:
            from usearch.index import Index

            n = len(self.clusters)
            self.ann = Index(
                ndim=self.sums.shape[1],
                metric="cos",
                dtype="f16",
                connectivity=16,
                expansion_add=64,
                expansion_search=128,
            )
            # One thread: the graph (so a recluster) is the same every run; a multi-threaded build of this graph
            # missed an exact nearest in 1 of 20 seeded runs (tests/central/clustering/test_rebuild.py, flaky).
            self.ann.add(np.arange(n, dtype=np.uint64), self.sums[:n] / self.norms[:n, None], threads=1)

    def best(self, vec: np.ndarray, forbidden: set[int], threshold: float) -> int | None:
        """The row to join by `decide` (clusters in `forbidden` left out), or None."""
        n = len(self.clusters)
        if n == 0:
            return None
        if self.ann is None:
            rows = np.arange(n)
        else:
            found = self.ann.search(vec, min(n, 16 + len(forbidden)))
            rows = np.sort(found.keys.astype(np.int64))
        sims = (self.sums[rows] @ vec) / self.norms[rows]
        pos, _ = decide(
            ((int(r), float(x)) for r, x in zip(rows, sims, strict=True) if self.clusters[int(r)] not in forbidden),
            threshold,
        )
        return pos


class OnlineClusterer:
    """In-memory clustering with the assignment rule, one embedding at a time (one `PrototypeTable`)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        self.threshold = threshold
        self._table: PrototypeTable | None = None

    def add(self, vector: np.ndarray, quality: float = 1.0, cannot_link: Iterable[int] = ()) -> int:
        """The cluster `vector` joins (or founds); clusters in `cannot_link` are never joined."""
        vector = np.asarray(vector, dtype=np.float32)
        if self._table is None:
            self._table = PrototypeTable(len(vector))
        row = self._table.best(vector, set(cannot_link), self.threshold)
        if row is None:
            return self._table.append(len(self._table), vector, member_weight(quality))
        self._table.add(row, vector, member_weight(quality))
        return row

    def __len__(self) -> int:
        return 0 if self._table is None else len(self._table)

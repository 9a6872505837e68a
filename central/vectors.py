"""The Qdrant layer: visitor prototypes to search, and every sighting's embedding, per recognizer.

Layout: two collections per recognizer id, `<prefix>_<recognizer>_prototypes` (one point per visitor: its
prototype direction, payload `site`) and `<prefix>_<recognizer>_sightings` (one point per sighting, payload
`visitor`, `site`, `ts`). Embeddings of different recognizers live in different spaces, so they never share
a collection and are never compared. Two collections rather than one with a `kind` payload because the hot
path (one prototype search per observation) then scans only prototypes: local mode is brute force (a
filter does not make it cheaper: every point is still visited), and on a server a filter that keeps a small
fraction of a large HNSW graph degrades search. Point ids are the database UUIDs (visitor id, sighting id).

Local mode (`path`, or ':memory:') allows one client per path: the service holds the only `Vectors`, and
its calls are serialised by a lock (local mode is not thread-safe). A server is reached by URL + API key.
The database keeps every embedding too, so both collections can be rebuilt (`Clusterer.reindex`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from revisit.shared.errors import RevisitError

log = logging.getLogger(__name__)
BATCH = 256


class VectorStoreError(RevisitError):
    """Qdrant cannot be opened or used."""


@dataclass(frozen=True)
class SightingPoint:
    id: uuid.UUID
    vector: np.ndarray
    visitor: uuid.UUID
    site: str
    ts: float


def collection_base(prefix: str, recognizer_id: str) -> str:
    """A safe collection name for a recognizer id; a short hash keeps distinct ids distinct."""
    safe = re.sub(r"[^a-z0-9_-]+", "_", recognizer_id.lower()).strip("_")[:60]
    digest = hashlib.sha1(recognizer_id.encode()).hexdigest()[:8]
    return f"{prefix}_{safe}_{digest}"


class Vectors:
    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        prefix: str = "revisit",
    ):
        self.prefix = prefix
        self.local = url is None
        self.lock = threading.RLock()  # local mode allows one client: everything that shares it takes this
        self._dims: dict[str, int] = {}
        try:
            if url is not None:
                self.client = QdrantClient(url=url, api_key=api_key, timeout=30)
            elif path is None or str(path) == ":memory:":
                self.client = QdrantClient(location=":memory:")
            else:
                Path(path).mkdir(parents=True, exist_ok=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "local mode is slow past 20k points"
                    self.client = QdrantClient(path=str(path))
        except RuntimeError as exc:  # local mode: "already accessed by another instance"
            raise VectorStoreError(
                f"cannot open Qdrant local storage {path}: {exc} (is the central service running? "
                "stop it first; local mode allows one process)"
            ) from exc
        except Exception as exc:
            raise VectorStoreError(f"cannot open Qdrant at {url or path}: {exc}") from exc

    @classmethod
    def memory(cls, prefix: str = "revisit") -> Vectors:
        return cls(path=":memory:", prefix=prefix)

    def close(self) -> None:
        with self.lock:
            self.client.close()

    # --- collections ---

    def _names(self, recognizer_id: str) -> tuple[str, str]:
        base = collection_base(self.prefix, recognizer_id)
        return f"{base}_prototypes", f"{base}_sightings"

    def ensure(self, recognizer_id: str, dim: int) -> None:
        """Create the recognizer's collections if needed; an existing one must have this dimension."""
        if self._dims.get(recognizer_id) == dim:
            return
        with self.lock:
            for name in self._names(recognizer_id):
                if self.client.collection_exists(name):
                    info = self.client.get_collection(name)
                    size = info.config.params.vectors.size  # type: ignore[union-attr]
                    if size != dim:
                        raise VectorStoreError(f"collection {name} holds {size}-d vectors, not {dim}-d")
                else:
                    self.client.create_collection(
                        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
                    )
                    if not self.local:
                        for key, kind in (("site", models.PayloadSchemaType.KEYWORD),
                                          ("visitor", models.PayloadSchemaType.KEYWORD)):  # fmt: skip
                            self.client.create_payload_index(name, key, kind)
            self._dims[recognizer_id] = dim

    def recognizers(self) -> list[str]:
        """Base names of the collections present (for diagnostics)."""
        with self.lock:
            names = [c.name for c in self.client.get_collections().collections]
        return sorted({n.rsplit("_", 1)[0] for n in names if n.startswith(self.prefix + "_")})

    def drop(self, recognizer_id: str) -> None:
        with self.lock:
            for name in self._names(recognizer_id):
                if self.client.collection_exists(name):
                    self.client.delete_collection(name)
            self._dims.pop(recognizer_id, None)

    # --- prototypes ---

    def search_prototypes(
        self, recognizer_id: str, vector: np.ndarray, limit: int, site: str | None = None
    ) -> list[tuple[uuid.UUID, float]]:
        """(visitor id, cosine) of the nearest prototypes, best first; only `site`'s when given."""
        protos, _ = self._names(recognizer_id)
        flt = None
        if site is not None:
            flt = models.Filter(must=[models.FieldCondition(key="site", match=models.MatchValue(value=site))])
        with self.lock:
            if recognizer_id not in self._dims:
                return []
            hits = self.client.query_points(
                protos, query=np.asarray(vector, dtype=np.float32).tolist(), query_filter=flt, limit=limit
            ).points
        return [(uuid.UUID(str(h.id)), float(h.score)) for h in hits]

    def upsert_prototypes(self, recognizer_id: str, items: Iterable[tuple[uuid.UUID, np.ndarray, str]]) -> None:
        """(visitor id, prototype vector, site) for each visitor."""
        protos, _ = self._names(recognizer_id)
        points = [models.PointStruct(id=str(vid), vector=_vec(vec), payload={"site": site}) for vid, vec, site in items]
        self._upsert(protos, points)

    def delete_prototypes(self, recognizer_id: str, visitor_ids: Iterable[uuid.UUID]) -> None:
        self._delete(self._names(recognizer_id)[0], visitor_ids)

    def count(self, recognizer_id: str, kind: str = "prototypes") -> int:
        protos, sightings = self._names(recognizer_id)
        with self.lock:
            if recognizer_id not in self._dims:
                return 0
            return self.client.count(protos if kind == "prototypes" else sightings, exact=True).count

    # --- sightings ---

    def upsert_sightings(self, recognizer_id: str, points: Iterable[SightingPoint]) -> None:
        _, sightings = self._names(recognizer_id)
        structs = [
            models.PointStruct(
                id=str(p.id), vector=_vec(p.vector), payload={"visitor": str(p.visitor), "site": p.site, "ts": p.ts}
            )
            for p in points
        ]
        self._upsert(sightings, structs)

    def set_sighting_visitor(self, recognizer_id: str, sighting_ids: Iterable[uuid.UUID], visitor: uuid.UUID) -> None:
        ids = [str(i) for i in sighting_ids]
        if not ids:
            return
        with self.lock:
            self.client.set_payload(self._names(recognizer_id)[1], payload={"visitor": str(visitor)}, points=ids)

    def delete_sightings(self, recognizer_id: str, sighting_ids: Iterable[uuid.UUID]) -> None:
        self._delete(self._names(recognizer_id)[1], sighting_ids)

    def sighting_ids(self, recognizer_id: str) -> Iterator[uuid.UUID]:
        """Every sighting point id of a recognizer (consistency checks)."""
        _, sightings = self._names(recognizer_id)
        offset: Any = None
        while True:
            with self.lock:
                if not self.client.collection_exists(sightings):
                    return
                points, offset = self.client.scroll(sightings, limit=1024, offset=offset, with_payload=False)
            for p in points:
                yield uuid.UUID(str(p.id))
            if offset is None:
                return

    # --- helpers ---

    def _upsert(self, collection: str, points: list[models.PointStruct]) -> None:
        for i in range(0, len(points), BATCH):
            with self.lock:
                self.client.upsert(collection, points=points[i : i + BATCH], wait=True)

    def _delete(self, collection: str, ids: Iterable[uuid.UUID]) -> None:
        keys: list[Any] = [str(i) for i in ids]
        for i in range(0, len(keys), BATCH):
            with self.lock:
                if not self.client.collection_exists(collection):
                    return
                self.client.delete(collection, points_selector=models.PointIdsList(points=keys[i : i + BATCH]))


def _vec(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()

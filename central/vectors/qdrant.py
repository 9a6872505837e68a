"""The `qdrant` engine: qdrant-client against a Qdrant server or cluster, or its local mode.

Layout: two collections per recognizer id, `<prefix>_<recognizer>_prototypes` (one point per visitor: its
prototype direction, payload `site`) and `<prefix>_<recognizer>_sightings` (one point per sighting, payload
`visitor`, `site`, `ts`); one collection per kiosk event and recognizer, `<prefix>_ev_<event hex>_<rec>`
(payload `photo`). Two recognizer collections rather than one with a `kind` payload because the hot path (one
prototype search per observation) then scans only prototypes, and on a server a filter that keeps a small
fraction of a large HNSW graph degrades search. Per event: deleting an event is dropping its collections.
Point ids are the database UUIDs (visitor id, sighting id, face id).

Local mode (`path`, or ':memory:') is pure-Python brute force, allows one client per path and is not
thread-safe: its calls are serialised by a lock. A server is reached by URL + API key.
"""

from __future__ import annotations

import logging
import threading
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from revisit.central.vectors import SightingPoint, Vectors, VectorStoreError, collection_base, event_prefix

log = logging.getLogger(__name__)
BATCH = 256


class QdrantVectors(Vectors):
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
        self._server = (url, api_key)
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
    def memory(cls, prefix: str = "revisit") -> QdrantVectors:
        return cls(path=":memory:", prefix=prefix)

    def close(self) -> None:
        with self.lock:
            self.client.close()

    def for_events(self) -> QdrantVectors:
        """A server: a second client, with its own connections and lock, for the kiosk. Local mode: this one (one
        client per path, and it is not thread-safe)."""
        if self.local:
            return self
        url, api_key = self._server
        return QdrantVectors(url=url, api_key=api_key, prefix=self.prefix)

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
                        for key, kind in (
                            ("site", models.PayloadSchemaType.KEYWORD),
                            ("visitor", models.PayloadSchemaType.KEYWORD),
                        ):
                            self.client.create_payload_index(name, key, kind)
            self._dims[recognizer_id] = dim

    def recognizers(self) -> list[str]:
        """Base names of the collections present (for diagnostics)."""
        with self.lock:
            names = [c.name for c in self.client.get_collections().collections]
        event = self.prefix + "_ev_"
        ours = [n for n in names if n.startswith(self.prefix + "_") and not n.startswith(event)]
        return sorted({n.rsplit("_", 1)[0] for n in ours})

    def drop(self, recognizer_id: str) -> None:
        with self.lock:
            for name in self._names(recognizer_id):
                if self.client.collection_exists(name):
                    self.client.delete_collection(name)
            self._dims.pop(recognizer_id, None)

    # --- prototypes ---

    def search_prototypes(
        self, recognizer_id: str, vector: np.ndarray, limit: int, site: str | None = None, floor: float | None = None
    ) -> list[tuple[uuid.UUID, float]]:
        protos, _ = self._names(recognizer_id)
        flt = None
        if site is not None:
            flt = models.Filter(must=[models.FieldCondition(key="site", match=models.MatchValue(value=site))])
        with self.lock:
            if recognizer_id not in self._dims:
                return []
            query = np.asarray(vector, dtype=np.float32).tolist()
            hits = self.client.query_points(protos, query=query, query_filter=flt, limit=limit).points
            if floor is not None and not self.local and (not hits or hits[0].score < floor):
                wider = models.SearchParams(hnsw_ef=max(512, limit))  # a server's HNSW: look again, wider
                hits = self.client.query_points(
                    protos, query=query, query_filter=flt, limit=limit, search_params=wider
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

    # --- event faces ---

    def upsert_faces(
        self, event_id: uuid.UUID, recognizer_id: str, points: list[tuple[uuid.UUID, uuid.UUID, np.ndarray]]
    ) -> None:
        if not points:
            return
        name = self.event_name(event_id, recognizer_id)
        dim = len(points[0][2])
        structs = [
            models.PointStruct(id=str(fid), vector=_vec(v), payload={"photo": str(pid)}) for fid, pid, v in points
        ]
        with self.lock:
            if not self.client.collection_exists(name):
                self.client.create_collection(
                    name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
                )
        self._upsert(name, structs)

    def search_faces(
        self, event_id: uuid.UUID, recognizer_id: str, vector: np.ndarray, min_cosine: float, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, float]]:
        name = self.event_name(event_id, recognizer_id)
        with self.lock:
            if not self.client.collection_exists(name):
                return []
            hits = self.client.query_points(
                name, query=_vec(vector), limit=limit, score_threshold=min_cosine, with_payload=True
            ).points
        return [(uuid.UUID(str(h.id)), uuid.UUID(h.payload["photo"]), float(h.score)) for h in hits]  # type: ignore[index]

    def count_faces(self, event_id: uuid.UUID, recognizer_id: str) -> int:
        name = self.event_name(event_id, recognizer_id)
        with self.lock:
            if not self.client.collection_exists(name):
                return 0
            return self.client.count(name, exact=True).count

    def event_collections(self, event_id: uuid.UUID) -> list[str]:
        start = event_prefix(self.prefix, event_id)
        with self.lock:
            return sorted(c.name for c in self.client.get_collections().collections if c.name.startswith(start))

    def _drop_named(self, name: str) -> None:
        with self.lock:
            if self.client.collection_exists(name):
                self.client.delete_collection(name)

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

"""The vector index: one interface (`Vectors`), two engines.

- `embedded` (the default, `EmbeddedVectors`): usearch HNSW in process, files under `<data_dir>/vectors`, a
  journal for crash recovery. For one box up to ~1M visitors (README "Central benchmark" has the figures).
- `qdrant` (`QdrantVectors`): qdrant-client against a Qdrant server or cluster (`qdrant.url`), or its local mode
  (`qdrant.path`, kept for old configurations and tests: pure-Python brute force, slow past ~20k points).

What is stored, per recognizer id (embeddings of different recognizers live in different spaces, so each has
its own collections and they are never compared):
- prototypes: one point per visitor (its prototype direction, payload `site`), searched on every observation,
  optionally only within one site;
- sightings: one point per sighting (payload `visitor`, `site`, `ts`), kept in step with the database;
- event faces of the kiosk: one collection per (event, recognizer), searched by selfie.
The database is the source of truth: it keeps every embedding, so all of this can be rebuilt
(`Rebuilder.reindex`, `revisit central migrate-vectors`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from revisit.shared.errors import RevisitError

Kind = str  # "prototypes" | "sightings"


class VectorStoreError(RevisitError):
    """The vector index cannot be opened or used."""


@dataclass(frozen=True)
class SightingPoint:
    id: uuid.UUID
    vector: np.ndarray
    visitor: uuid.UUID
    site: str
    ts: float


def collection_base(prefix: str, recognizer_id: str) -> str:
    """A safe collection name for a recognizer id; a short hash keeps distinct ids distinct."""
    return f"{prefix}_{_slug(recognizer_id, 60)}"


def event_collection(prefix: str, event_id: uuid.UUID, recognizer_id: str) -> str:
    return f"{event_prefix(prefix, event_id)}{_slug(recognizer_id, 40)}"


def _slug(recognizer_id: str, width: int) -> str:
    """The recognizer id in collection-name characters, at most `width` of them, and 8 hex of its hash."""
    safe = re.sub(r"[^a-z0-9_-]+", "_", recognizer_id.lower()).strip("_")[:width]
    return f"{safe}_{hashlib.sha1(recognizer_id.encode()).hexdigest()[:8]}"


def event_prefix(prefix: str, event_id: uuid.UUID) -> str:
    return f"{prefix}_ev_{event_id.hex}_"


class Vectors(ABC):
    """The contract both engines keep (tests/central/vectors/test_contract.py runs it on each).

    Calls are thread-safe. Upserts and deletes are idempotent, so a redelivered observation or a repeated
    reindex mends the index instead of duplicating points.
    """

    prefix: str
    lock: threading.RLock

    @classmethod
    def memory(cls, prefix: str = "revisit") -> Vectors:
        """An in-memory index of the default engine (tests, `revisit eval`)."""
        from revisit.central.vectors.embedded import EmbeddedVectors

        return EmbeddedVectors(None, prefix=prefix)

    @abstractmethod
    def close(self) -> None: ...

    def for_events(self) -> Vectors:
        """The handle the kiosk's event faces use (`revisit.central.kiosk.vectors` says what is shared and why):
        this index, unless the engine can give the kiosk a connection and lock of its own."""
        return self

    def bulk(self) -> contextlib.AbstractContextManager[None]:
        """A block of many writes (a rebuild): engines may batch them and skip their journal."""
        return contextlib.nullcontext()

    def checkpoint(self) -> None:  # noqa: B027 - engines with their own durability have nothing to do
        """Make everything written so far survive a restart without replay."""

    # --- collections ---

    @abstractmethod
    def ensure(self, recognizer_id: str, dim: int) -> None:
        """Create the recognizer's collections if needed; existing ones must have this dimension."""

    @abstractmethod
    def recognizers(self) -> list[str]:
        """Base names of the recognizer collections present (diagnostics)."""

    @abstractmethod
    def drop(self, recognizer_id: str) -> None: ...

    # --- prototypes ---

    @abstractmethod
    def search_prototypes(
        self, recognizer_id: str, vector: np.ndarray, limit: int, site: str | None = None, floor: float | None = None
    ) -> list[tuple[uuid.UUID, float]]:
        """(visitor id, cosine) of the nearest prototypes, best first; only `site`'s when given. `floor`: when
        the best found is below it, an approximate engine searches harder (the assignment threshold)."""

    def search_prototypes_many(
        self,
        recognizer_id: str,
        vectors: Sequence[np.ndarray],
        limit: int,
        sites: Sequence[str | None],
        floor: float | None = None,
    ) -> list[list[tuple[uuid.UUID, float]]]:
        """`search_prototypes` of each vector (with its own site, or None), in one call: an engine may search
        them together (the embedded one does, on every core). The results are those of one search each."""
        return [
            self.search_prototypes(recognizer_id, vec, limit, site, floor)
            for vec, site in zip(vectors, sites, strict=True)
        ]

    @abstractmethod
    def upsert_prototypes(self, recognizer_id: str, items: Iterable[tuple[uuid.UUID, np.ndarray, str]]) -> None:
        """(visitor id, prototype vector, site) for each visitor."""

    @abstractmethod
    def delete_prototypes(self, recognizer_id: str, visitor_ids: Iterable[uuid.UUID]) -> None: ...

    @abstractmethod
    def count(self, recognizer_id: str, kind: Kind = "prototypes") -> int: ...

    # --- sightings ---

    @abstractmethod
    def upsert_sightings(self, recognizer_id: str, points: Iterable[SightingPoint]) -> None: ...

    @abstractmethod
    def set_sighting_visitor(
        self, recognizer_id: str, sighting_ids: Iterable[uuid.UUID], visitor: uuid.UUID
    ) -> None: ...

    @abstractmethod
    def delete_sightings(self, recognizer_id: str, sighting_ids: Iterable[uuid.UUID]) -> None: ...

    # --- event faces (the kiosk) ---

    def event_name(self, event_id: uuid.UUID, recognizer_id: str) -> str:
        return event_collection(self.prefix, event_id, recognizer_id)

    @abstractmethod
    def upsert_faces(
        self, event_id: uuid.UUID, recognizer_id: str, points: list[tuple[uuid.UUID, uuid.UUID, np.ndarray]]
    ) -> None:
        """(face id, photo id, unit vector) of one event's faces."""

    @abstractmethod
    def search_faces(
        self, event_id: uuid.UUID, recognizer_id: str, vector: np.ndarray, min_cosine: float, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, float]]:
        """(face id, photo id, cosine) of this event's faces with cosine >= min_cosine, best first."""

    @abstractmethod
    def count_faces(self, event_id: uuid.UUID, recognizer_id: str) -> int: ...

    @abstractmethod
    def event_collections(self, event_id: uuid.UUID) -> list[str]:
        """Names of the event's face collections (one per recognizer)."""

    def drop_event(self, event_id: uuid.UUID) -> int:
        """Drop every face collection of the event; returns how many."""
        names = self.event_collections(event_id)
        for name in names:
            self._drop_named(name)
        return len(names)

    @abstractmethod
    def _drop_named(self, name: str) -> None: ...


def open_vectors(
    engine: str,
    *,
    path: str | Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    prefix: str = "revisit",
    background_adds: bool = False,
) -> Vectors:
    """The configured engine: "embedded" (usearch under `path`; `background_adds`: see EmbeddedVectors) or
    "qdrant" (server `url`, or local `path`)."""
    if engine == "embedded":
        from revisit.central.vectors.embedded import EmbeddedVectors

        return EmbeddedVectors(path, prefix=prefix, background_adds=background_adds)
    if engine == "qdrant":
        from revisit.central.vectors.qdrant import QdrantVectors

        return QdrantVectors(path=path, url=url, api_key=api_key, prefix=prefix)
    raise VectorStoreError(f"unknown vector engine {engine!r} (embedded or qdrant)")


__all__ = [
    "SightingPoint",
    "VectorStoreError",
    "Vectors",
    "collection_base",
    "event_collection",
    "open_vectors",
]

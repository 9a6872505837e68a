"""The kiosk's handle on the vector index: one collection of face vectors per (event, recognizer).

What the kiosk shares with the visitor index (`revisit.central.vectors`) and why:
- the engine and its files: one process holds the index (the embedded engine locks its directory, Qdrant local
  mode allows one client per path), and one journal and checkpoint keep both crash-safe together;
- not the lock, where the engine allows it, so that event scans never make ingest wait:
  - embedded: the event matrices have their own lock (`EmbeddedVectors.faces_lock`); a selfie search takes only
    that one. A face write (after a photo is processed) also takes the index lock for its journal record;
  - Qdrant server (`qdrant.url`): the kiosk has its own client (own connections) and lock (`for_events`);
  - Qdrant local mode: one client serialised by one lock (it is not thread-safe); kept for old configurations.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FaceHit:
    face_id: uuid.UUID
    photo_id: uuid.UUID
    cosine: float


class EventVectors:
    """An event's face vectors: one collection per (event, recognizer), `<prefix>_ev_<event hex>_<rec>`.

    Why per event rather than one collection per recognizer with an `event_id` filter:
    - a search scans only that event's faces (the embedded engine keeps an exact matrix per event: 100k faces
      answer in ~10 ms, bench/kiosk.py; with one shared collection each search would pay for every event);
    - deleting or expiring an event is dropping its collections: nothing to scan, nothing left behind;
    - the recognizer id is part of the name, so embeddings of different recognizers never share a collection
      and are never compared.
    Point ids are PhotoFace ids, each with its photo id.
    """

    def __init__(self, index: Any, *, owned: bool = True):
        self.index = index
        self.prefix = index.prefix
        self.owned = owned  # close() closes the index: a handle of the kiosk's own, not the service's

    @classmethod
    def on(cls, vectors: Any) -> EventVectors:
        """On the service's vector index: its handle for events (`Vectors.for_events`, see the module docstring)."""
        handle = vectors.for_events()
        return cls(handle, owned=handle is not vectors)

    @classmethod
    def memory(cls, prefix: str = "revisit") -> EventVectors:
        from revisit.central.vectors import Vectors

        return cls(Vectors.memory(prefix))

    def close(self) -> None:
        if self.owned:
            self.index.close()

    def name(self, event_id: uuid.UUID, recognizer_id: str) -> str:
        return str(self.index.event_name(event_id, recognizer_id))

    def upsert(self, event_id: uuid.UUID, recognizer_id: str, points: list[tuple[uuid.UUID, uuid.UUID, np.ndarray]]):
        """(face id, photo id, unit vector) of one event's faces."""
        self.index.upsert_faces(event_id, recognizer_id, points)

    def search(
        self, event_id: uuid.UUID, recognizer_id: str, vector: np.ndarray, min_cosine: float, limit: int
    ) -> list[FaceHit]:
        """This event's faces with cosine >= min_cosine to `vector`, best first."""
        return [FaceHit(*hit) for hit in self.index.search_faces(event_id, recognizer_id, vector, min_cosine, limit)]

    def count(self, event_id: uuid.UUID, recognizer_id: str) -> int:
        return int(self.index.count_faces(event_id, recognizer_id))

    def collections(self, event_id: uuid.UUID) -> list[str]:
        return list(self.index.event_collections(event_id))

    def drop_event(self, event_id: uuid.UUID) -> int:
        """Drop every collection of the event (all recognizers); returns how many."""
        return int(self.index.drop_event(event_id))

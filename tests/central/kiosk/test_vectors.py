"""The kiosk's handle on the vector index: the service's engine, without making ingest wait for event scans."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from revisit.central.kiosk.vectors import EventVectors
from revisit.central.vectors import SightingPoint, Vectors
from revisit.central.vectors.embedded import EmbeddedVectors
from revisit.central.vectors.qdrant import QdrantVectors
from tests.central.kiosk.support import REC


def unit(seed: int, dim: int = 32) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_event_vectors_share_the_service_index():
    index = Vectors.memory()
    shared = EventVectors.on(index)
    event = uuid.uuid4()
    shared.upsert(event, REC, [(uuid.uuid4(), uuid.uuid4(), unit(1))])
    assert shared.index is index and index.count_faces(event, REC) == 1
    assert index.count(REC) == 0  # faces are not visitor prototypes
    shared.close()  # not the kiosk's own handle: the service's index stays open
    assert index.count_faces(event, REC) == 1
    index.close()


def test_qdrant_local_mode_shares_its_one_client():
    index = QdrantVectors.memory()
    assert index.for_events() is index and not EventVectors.on(index).owned
    index.close()


def _in_thread(work, timeout: float = 5.0) -> bool:
    """Whether `work` finishes within `timeout` seconds in another thread."""
    done = threading.Event()

    def run() -> None:
        work()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(timeout)


@pytest.mark.parametrize("path", [None, "dir"])
def test_ingest_does_not_wait_for_an_event_scan(tmp_path, path):
    """The embedded engine: while a selfie search holds the event matrices, the visitors' collections (what
    ingest searches and writes) are free, and the other way round."""
    index = EmbeddedVectors(tmp_path / "vectors" if path else None)
    events = EventVectors.on(index)
    event = uuid.uuid4()
    events.upsert(event, REC, [(uuid.uuid4(), uuid.uuid4(), unit(i)) for i in range(20)])
    index.ensure(REC, 32)
    visitor = uuid.uuid4()

    def ingest() -> None:
        index.upsert_prototypes(REC, [(visitor, unit(100), "s1")])
        index.upsert_sightings(REC, [SightingPoint(uuid.uuid4(), unit(100), visitor, "s1", 0.0)])
        assert index.search_prototypes(REC, unit(100), 1)[0][0] == visitor

    with index.faces_lock:  # an event scan in progress
        assert _in_thread(ingest), "ingest waited for the event scan"
    with index.lock:  # ingest in progress (a prototype search holds the index lock)
        assert _in_thread(lambda: events.search(event, REC, unit(3), 0.5, 5)), "the event scan waited for ingest"
    assert [h.cosine for h in events.search(event, REC, unit(3), 0.99, 5)] == [pytest.approx(1.0, abs=1e-5)]
    index.close()
    if path:  # the faces were journalled and checkpointed with the visitors' collections
        again = EmbeddedVectors(tmp_path / "vectors")
        assert again.count_faces(event, REC) == 20 and again.count(REC) == 1
        again.close()

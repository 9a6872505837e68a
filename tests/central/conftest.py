"""Fixtures of the central tests: observations, a clusterer on SQLite/PostgreSQL, a real Mosquitto."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from revisit.central.clustering import Clusterer, ClusterSettings
from revisit.central.store import CropStore, Store
from revisit.central.vectors import Vectors
from revisit.shared.schema import Observation, QualityFields
from tests.mosquitto import MOSQUITTO, Mosquitto

PG_HOST, PG_PORT = "127.0.0.1", 5432
REC = "test_rec@000000000000"
DIM = 64


def jpeg(size: int = 32, value: int = 128) -> bytes:
    import cv2

    return bytes(cv2.imencode(".jpg", np.full((size, size, 3), value, np.uint8))[1])


def unit(vec: np.ndarray) -> np.ndarray:
    vec = np.asarray(vec, dtype=np.float32)
    return vec / np.linalg.norm(vec)


def make_obs(
    vector: np.ndarray,
    ts: float = 1_800_000_000.0,
    *,
    site: str = "s1",
    device: str = "d1",
    camera: str = "c1",
    track: int = 1,
    co: tuple[int, ...] = (),
    quality: float = 0.8,
    recognizer: str = REC,
    duration: float = 5.0,
    crop: bytes | None = None,
) -> Observation:
    vec = unit(vector)
    q = quality
    return Observation(
        observation_id=str(uuid.uuid4()),
        site=site,
        device=device,
        camera=camera,
        track_id=track,
        first_ts=ts,
        last_ts=ts + duration,
        best_ts=ts + duration / 2,
        recognizer_id=recognizer,
        embedding=Observation.pack_vector(vec),
        embedding_dim=len(vec),
        det_score=0.9,
        quality=QualityFields(detector=q, size=q, sharpness=q, pose=q, score=q),
        box=(10.0, 10.0, 50.0, 50.0),
        crop_jpeg=crop or jpeg(),
        frame_size=(640, 480),
        frames_seen=3,
        co_tracks=co,
    )


def people(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """n orthonormal identity directions (n <= dim): strangers have cosine 0."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, n)))
    return q.T.astype(np.float32)


def near(base: np.ndarray, noise: float = 0.05, seed: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(unit(base) + noise * rng.normal(size=base.shape))


# --- databases --------------------------------------------------------------------------------------------


def _pg_admin():
    import psycopg

    last: Exception | None = None
    for user in ("postgres", "root"):
        try:
            return psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True, connect_timeout=3
            ), user
        except Exception as exc:  # try the next user
            last = exc
    raise RuntimeError(str(last))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session on 127.0.0.1:5432 (trust auth), dropped after."""
    try:
        admin, user = _pg_admin()
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT} (trust auth as postgres/root): {exc}")
    name = f"revisit_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """Each test runs on a SQLite file and on a PostgreSQL database (tables emptied after each test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    from sqlmodel import SQLModel

    store = Store(url)
    with store.engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())
    store.dispose()


@pytest.fixture
def make_clusterer(tmp_path):
    made: list[tuple[Store, Vectors]] = []

    def make(url: str = "sqlite://", **settings) -> Clusterer:
        store = Store(url)
        store.create_all()
        vectors = Vectors.memory()
        made.append((store, vectors))
        return Clusterer(store, vectors, CropStore(tmp_path / f"crops{len(made)}"), ClusterSettings(**settings))

    yield make
    for store, vectors in made:
        vectors.close()
        store.dispose()


# --- Mosquitto --------------------------------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Mosquitto]:
    if not Path(MOSQUITTO).is_file() and not shutil.which("mosquitto"):
        pytest.skip("mosquitto not installed (Debian: apt-get install -y mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


def publisher(port: int, client_id: str | None = None):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311
    )
    client.username_pw_set("test")
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

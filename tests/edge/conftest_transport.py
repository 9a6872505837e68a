"""Fixtures for the edge's transport tests: a Mosquitto broker, a collecting subscriber, valid observations.

Imported by tests/edge/conftest.py (`from tests.edge.conftest_transport import *`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from revisit.edge.publish import Publisher
from revisit.shared.schema import Observation
from tests.mosquitto import MOSQUITTO, Mosquitto, Subscriber

__all__ = ["fake_observation", "mosquitto", "mqtt_subscriber", "wait_drained"]

_CROP = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()


def wait_drained(pub: Publisher, timeout: float) -> bool:
    """Wait until everything is handed over and PUBACKed ("broker": the spool is empty; "stored": only rows
    waiting for central's confirmation are left); False on timeout. (`Publisher.wait_confirmed` waits for all.)"""
    deadline = time.monotonic() + timeout
    while pub.spool.stats.depth > pub.stats.unconfirmed or pub.stats.inflight > 0:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def fake_observation(
    i: int = 0, site: str = "s1", device: str = "d1", camera: str = "cam", dim: int = 512, crop: bytes | None = None
) -> Observation:
    """A valid observation with a random unit embedding (track id `i`)."""
    rng = np.random.default_rng(i)
    vec = rng.standard_normal(dim).astype(np.float32)
    vec /= np.linalg.norm(vec)
    now = time.time()
    return Observation(
        observation_id=str(uuid.uuid4()),
        site=site,
        device=device,
        camera=camera,
        track_id=i,
        first_ts=now - 2,
        last_ts=now,
        best_ts=now - 1,
        recognizer_id="w600k_mbf@test",
        embedding=Observation.pack_vector(vec),
        embedding_dim=dim,
        det_score=0.9,
        quality={"detector": 0.9, "size": 0.5, "sharpness": 0.7, "pose": 0.8, "score": 0.7},
        box=(10.0, 10.0, 60.0, 70.0),
        crop_jpeg=_CROP if crop is None else crop,
        frame_size=(640, 480),
        frames_seen=5,
    )


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto broker on a free loopback port (stop()/start() keep the port and its persisted state)."""
    if not MOSQUITTO.is_file():
        pytest.skip(f"{MOSQUITTO} not installed (Debian package `mosquitto`)")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_subscriber(mosquitto: Mosquitto):
    """`mqtt_subscriber(topic)` → a connected Subscriber on the `mosquitto` broker, closed after the test."""
    subs: list[Subscriber] = []

    def make(topic: str, client_id: str | None = None) -> Subscriber:
        sub = Subscriber(mosquitto.port, topic, client_id or f"revisit-test-sub-{len(subs)}")
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()

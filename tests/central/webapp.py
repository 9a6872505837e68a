"""Helpers of the web tests: a CentralService on a temporary directory, its app, logins, and data seeded with
observations the real face engine made from ../shared photos, fed through the core's Ingestor."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from revisit.central.auth import hash_password
from revisit.central.config import CentralConfig
from revisit.central.ingest import Ingestor, known_recognizers
from revisit.central.service import CentralService
from revisit.central.store import day_bounds, utcnow
from revisit.central.web import create_app
from revisit.shared.schema import DeviceStatus, encode, faces_topic, status_topic
from tests.central.conftest import make_obs

USER = "admin"
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)
SECRET = "x" * 40
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def web_config(tmp_path: Path, **extra) -> CentralConfig:
    data: dict = {
        "data_dir": str(tmp_path / "central"),
        "admin": {"username": USER, "password_hash": PASSWORD_HASH},
        "secret_key": SECRET,
        "loyal": {"min_visits": 2, "window_days": 30, "timezone": "UTC"},
    }
    return CentralConfig.model_validate(data | extra)


def open_service(config: CentralConfig) -> CentralService:
    """Database, Qdrant (local mode under data_dir) and clusterer; no MQTT. An Ingestor for seeding."""
    service = CentralService(config).open()
    service.ingestor = Ingestor(service.clusterer, service.store, known_recognizers(config.ingest.recognizers))
    return service


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def login(client: TestClient, username: str = USER, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    token = csrf_from(client.get("/login").text)
    r = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token, "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return client.get("/api/v1/me").json()["csrf_token"]


# --- real observations ---------------------------------------------------------------------------------------


@dataclass
class Face:
    identity: str
    embedding: np.ndarray
    quality: float
    crop: bytes


@functools.cache
def photo_faces(facedata: Path, engine, people: int = 3, per_person: int = 5) -> dict[str, list[Face]]:
    """`people` identities with `per_person` photos whose faces all match each other (cosine >= 0.5) and no
    one else's (< 0.25): the seeded visitors are then the same for any clustering threshold near the default."""
    import cv2

    from revisit.shared.dataset import by_identity, load_labels
    from revisit.shared.engine import central_face
    from revisit.shared.image import read_image

    chosen: dict[str, list[Face]] = {}
    for name, records in by_identity(load_labels(facedata)).items():
        if len(records) < per_person:
            continue
        faces = []
        for record in records[:per_person]:
            image = read_image(record.path)
            face = central_face(engine.analyze(image), image.shape)
            if face is None:
                break
            x1, y1, x2, y2 = (int(max(0, v)) for v in face.box)
            crop = bytes(cv2.imencode(".jpg", image[y1:y2, x1:x2])[1])
            faces.append(Face(name, np.asarray(face.embedding, np.float32), float(face.quality.score), crop))
        if len(faces) < per_person:
            continue
        vecs = np.stack([f.embedding for f in faces])
        if (vecs @ vecs.T).min() < 0.5:
            continue
        others = [f.embedding for group in chosen.values() for f in group]
        if others and (np.stack(others) @ vecs.T).max() >= 0.25:
            continue
        chosen[name] = faces
        if len(chosen) == people:
            return chosen
    raise AssertionError(f"fewer than {people} suitable identities in {facedata}")


@dataclass
class Seeded:
    """Who was fed in: identity -> visitor id (per site where they differ)."""

    now: datetime
    visitors: dict[str, uuid.UUID] = field(default_factory=dict)
    duplicate: uuid.UUID | None = None  # the loyal person's second visitor, at the other site


def day_time(now: datetime, days_ago: int) -> float:
    """A moment `days_ago` days before today (UTC), mid-day; 0: earlier today, before `now`."""
    today, _ = day_bounds(now, "UTC")
    if days_ago == 0:
        return (now - min(timedelta(minutes=30), (now - today) / 2)).timestamp()
    return (today - timedelta(days=days_ago) + timedelta(hours=12)).timestamp()


def feed(
    service: CentralService,
    face: Face,
    ts: float,
    recognizer: str,
    *,
    site: str = "s1",
    device: str = "d1",
    camera: str = "door",
    track: int = 1,
) -> uuid.UUID:
    """One observation through the Ingestor (validation, clustering, storage); returns its visitor."""
    from sqlmodel import select

    from revisit.central.store import Sighting

    obs = make_obs(
        face.embedding,
        ts,
        site=site,
        device=device,
        camera=camera,
        track=track,
        quality=face.quality,
        recognizer=recognizer,
        crop=face.crop,
    )
    outcome = service.ingestor.handle(faces_topic(site, device), encode(obs))
    assert outcome.kind == "stored", outcome
    with service.session() as s:
        return s.exec(select(Sighting.visitor_id).where(Sighting.observation_id == uuid.UUID(obs.observation_id))).one()


def seed(service: CentralService, faces: dict[str, list[Face]], recognizer: str) -> Seeded:
    """Person 0 (loyal): 3 earlier days and today at s1, plus today at s2 (a second visitor: scope "site").
    Person 1: one earlier day and today (not loyal with min_visits 2). Person 2: 2 earlier days, not today."""
    now = utcnow()
    out = Seeded(now)
    (loyal, a), (once, b), (absent, c) = list(faces.items())[:3]
    track = iter(range(1, 1000))
    at = functools.partial(day_time, now)
    for days_ago, face in zip((3, 2, 1, 0), a, strict=False):
        out.visitors[loyal] = feed(service, face, at(days_ago), recognizer, track=next(track))
    out.duplicate = feed(service, a[4], at(0), recognizer, site="s2", device="d2", camera="till", track=next(track))
    for days_ago, face in zip((5, 0), b, strict=False):
        out.visitors[once] = feed(service, face, at(days_ago), recognizer, track=next(track))
    for days_ago, face in zip((2, 1), c, strict=False):
        out.visitors[absent] = feed(service, face, at(days_ago), recognizer, camera="till", track=next(track))
    for site, device in (("s1", "d1"), ("s2", "d2")):
        status = DeviceStatus(
            site=site,
            device=device,
            state="online",
            ts=now.timestamp(),
            version="0.1.0",
            stats={"uptime_s": 120.0, "door.fps": 4.5},
        )
        assert service.ingestor.handle(status_topic(site, device), encode(status)).kind == "status"
    return out


@contextmanager
def seeded_app(tmp_path: Path, facedata: Path, engine, **config) -> Iterator[tuple[TestClient, CentralService, Seeded]]:
    """A seeded service (scope "site", so the loyal person's sighting at s2 is a second visitor), its app and a
    logged-out client."""
    faces = photo_faces(facedata, engine)
    dim = len(next(iter(faces.values()))[0].embedding)
    recognizers = {"recognizers": {engine.recognizer_id: dim}}
    service = open_service(web_config(tmp_path, cluster={"scope": "site"}, ingest=recognizers, **config))
    try:
        data = seed(service, faces, engine.recognizer_id)
        with TestClient(create_app(service)) as client:
            yield client, service, data
    finally:
        service.stop()

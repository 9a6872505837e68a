"""Demo data for `revisit demo`: four weeks of past visits at three "Demo-…" sites and a kiosk event, made from
the labelled dev photos by the real face engine and fed through the ingest's backfill path.

Each chosen photo goes through the face engine once (detector + recognizer); its embedding, quality and crop
become edge-like observations (a door camera on arrival, a till camera later in the visit), fed to
`Ingestor.handle(topic, payload, backfill=True)`: the same validation, clustering and storage as live messages.
Who comes when is drawn from a fixed seed: regulars (several visits a week at a home site, and today), one
person seen every working day at opening time (a member of staff: the demo's case for "Mark as staff"), and
occasional visitors. Everything is labelled as demo data: the site names start with "Demo-", the regular's notes
say so, and `demo_seed.json` in the data directory marks the database as seeded (the pages show a banner; a
restart does not seed again).
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from revisit.central.store import utcnow
from revisit.shared.schema import Observation, QualityFields, encode, faces_topic

log = logging.getLogger(__name__)

MARKER = "demo_seed.json"
DEMO_SITES = ("Demo-High-Street", "Demo-Riverside", "Demo-Station")
DEVICE = "cam-1"
DAYS = 28
SEED = 14
REGULARS, OCCASIONAL, SINGLES = 10, 30, 40
EVENT_PHOTOS = 24


@dataclass
class DemoFace:
    identity: str
    photo: str
    embedding: np.ndarray
    quality: float
    det_score: float
    box: tuple[float, float, float, float]
    frame: tuple[int, int]
    crop: bytes


@dataclass
class DemoSeed:
    """What was seeded (written to demo_seed.json)."""

    seeded_at: str
    sites: list[str]
    observations: int
    visits_planned: int
    photos_analyzed: int
    seconds: float
    event_id: str = ""
    event_code: str = ""
    event_photos: int = 0
    sample_selfies: list[str] = field(default_factory=list)
    staff_visitor: str = ""
    homes: dict[str, str] = field(default_factory=dict)  # regular's identity -> home site (for `top_up_today`)
    topped_up: list[str] = field(default_factory=list)  # later days that got today's visits of the regulars


def load_marker(data_dir: Path) -> DemoSeed | None:
    path = Path(data_dir) / MARKER
    if not path.is_file():
        return None
    try:
        return DemoSeed(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        log.warning("%s is unreadable: the demo data is seeded again", path)
        return None


def _face(engine: Any, path: Path, identity: str) -> DemoFace | None:
    import cv2

    from revisit.shared.engine import central_face
    from revisit.shared.image import read_image

    image = read_image(path)
    face = central_face(engine.analyze(image), image.shape)
    if face is None or face.embedding is None:
        return None
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face.box)
    pad = 0.2 * max(x2 - x1, y2 - y1)
    crop = image[int(max(0, y1 - pad)) : int(min(h, y2 + pad)), int(max(0, x1 - pad)) : int(min(w, x2 + pad))]
    q = float(face.quality.score) if face.quality else 0.8
    return DemoFace(
        identity,
        str(path),
        np.asarray(face.embedding, np.float32),
        q,
        float(face.score),
        (x1, y1, x2, y2),
        (w, h),
        bytes(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]),
    )


def _consistent(faces: list[DemoFace], min_cos: float = 0.35) -> list[DemoFace]:
    """A person's photos that agree with their mean (a mislabelled or odd photo would make a second visitor)."""
    if len(faces) < 2:
        return faces
    vecs = np.stack([f.embedding for f in faces])
    mean = vecs.mean(axis=0)
    mean /= np.linalg.norm(mean) or 1.0
    return [f for f, c in zip(faces, vecs @ mean, strict=True) if c >= min_cos]


def choose_people(facedata: Path, rng: random.Random) -> tuple[list[str], list[str], list[str], str, dict]:
    """(regulars, occasional, singles, staff) identities and the photo records by identity."""
    from revisit.shared.dataset import by_identity, load_labels

    groups = by_identity(load_labels(facedata))
    many = sorted(n for n, r in groups.items() if len(r) >= 7)
    some = sorted(n for n, r in groups.items() if 2 <= len(r) < 7)
    one = sorted(n for n, r in groups.items() if len(r) == 1)
    rng.shuffle(many)
    rng.shuffle(some)
    rng.shuffle(one)
    if len(many) < REGULARS + 2:
        raise ValueError(f"{facedata}: too few people with 7 or more photos for the demo")
    return many[:REGULARS], some[:OCCASIONAL], one[:SINGLES], many[REGULARS], groups


def _day_time(day_start: datetime, rng: random.Random, hours: tuple[int, int] = (8, 21)) -> datetime:
    """A moment of a shop day: peaks at lunch and after work."""
    peak = rng.random()
    if peak < 0.3:
        hour = rng.gauss(12.5, 0.8)
    elif peak < 0.6:
        hour = rng.gauss(17.5, 1.0)
    else:
        hour = rng.uniform(*hours)
    hour = min(max(hour, hours[0]), hours[1] - 0.5)
    return day_start + timedelta(hours=hour)


def plan_visits(
    people: dict[str, tuple[str, list[DemoFace]]],
    staff: str,
    now: datetime,
    zone: ZoneInfo,
    rng: random.Random,
    homes: dict[str, str] | None = None,
) -> list[tuple[datetime, str, str, float]]:
    """(arrival, identity, site, dwell seconds) for DAYS days before today and today up to `now`."""
    today = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    visits = []

    def add(when: datetime, who: str, site: str, dwell: float) -> None:
        if when + timedelta(seconds=dwell) < now - timedelta(minutes=1):
            visits.append((when, who, site, dwell))

    for who, (kind, _faces) in people.items():
        home = DEMO_SITES[rng.randrange(len(DEMO_SITES))]
        if homes is not None and kind == "regular":
            homes[who] = home
        other = rng.choice([s for s in DEMO_SITES if s != home])
        if kind == "regular":
            rate = rng.uniform(0.25, 0.5)
            for back in range(DAYS, 0, -1):
                day = today - timedelta(days=back)
                if rng.random() < rate * (1.3 if day.weekday() >= 5 else 1.0):
                    site = other if rng.random() < 0.15 else home
                    add(_day_time(day, rng), who, site, rng.uniform(240, 1800))
            elapsed_h = (now - today).total_seconds() / 3600
            when = today + timedelta(hours=rng.uniform(max(0.0, elapsed_h - 6), max(0.0, elapsed_h - 0.5)))
            when = max(today + timedelta(minutes=1), min(when, now - timedelta(minutes=20)))
            visits.append((when, who, home, rng.uniform(120, 900)))
        elif kind == "staff":
            for back in range(DAYS, -1, -1):
                day = today - timedelta(days=back)
                if day.weekday() != 6:
                    add(day + timedelta(hours=7.75, minutes=rng.uniform(0, 30)), who, home, rng.uniform(1200, 1700))
        else:
            for _ in range(1 if kind == "single" else rng.randint(1, 3)):
                day = today - timedelta(days=rng.randint(1, DAYS))
                add(_day_time(day, rng), who, rng.choice(DEMO_SITES), rng.uniform(120, 1500))
    return sorted(visits)


def _observation(face: DemoFace, site: str, camera: str, track: int, ts: float, recognizer: str) -> Observation:
    q = face.quality
    return Observation(
        observation_id=str(uuid.uuid4()),
        site=site,
        device=DEVICE,
        camera=camera,
        track_id=track,
        first_ts=ts,
        last_ts=ts + 4.0,
        best_ts=ts + 2.0,
        recognizer_id=recognizer,
        embedding=Observation.pack_vector(face.embedding),
        embedding_dim=len(face.embedding),
        det_score=min(1.0, max(0.0, face.det_score)),
        quality=QualityFields(detector=q, size=q, sharpness=q, pose=q, score=q),
        box=face.box,
        crop_jpeg=face.crop,
        frame_size=face.frame,
        frames_seen=8,
    )


def _handle_backfill(ingestor: Any) -> Callable[[str, bytes], Any]:
    """Ingestor.handle on the backfill path (history: past timestamps, no clock-skew check)."""
    return lambda topic, payload: ingestor.handle(topic, payload, backfill=True)


def seed_demo(
    service: Any,
    engine: Any,
    facedata: Path,
    *,
    now: datetime | None = None,
    progress: Callable[[str], None] = print,
    with_event: bool = True,
) -> DemoSeed:
    """Seed the service's database (and write the marker into its data directory). The service needs an
    `ingestor` (revisit.central.ingest.Ingestor)."""
    started = time.perf_counter()
    now = now or utcnow()
    zone = ZoneInfo(service.config.loyal.timezone)
    rng = random.Random(SEED)
    regulars, occasional, singles, staff, groups = choose_people(Path(facedata), rng)
    wanted = [(n, "regular", 6) for n in regulars] + [(staff, "staff", 6)]
    wanted += [(n, "occasional", 2) for n in occasional] + [(n, "single", 1) for n in singles]
    people: dict[str, tuple[str, list[DemoFace]]] = {}
    analyzed = 0
    total = sum(min(k, len(groups[n])) for n, _, k in wanted)
    for name, kind, k in wanted:
        faces = []
        for record in groups[name][:k]:
            face = _face(engine, record.path, name)
            analyzed += 1
            if face is not None:
                faces.append(face)
        faces = _consistent(faces)
        if faces:
            people[name] = (kind, faces)
        if analyzed % 25 < k:
            progress(f"demo: face engine on the dev photos {analyzed}/{total}")
    recognizer = engine.recognizer_id
    homes: dict[str, str] = {}
    visits = plan_visits(people, staff, now, zone, rng, homes)
    handle = _handle_backfill(service.ingestor)
    stored = 0
    track = 0
    fed: dict[str, list[uuid.UUID]] = {}
    for i, (arrival, who, site, dwell) in enumerate(visits):
        faces = people[who][1]
        for camera, offset in (("door", 0.0), ("till", dwell)):
            track += 1
            face = faces[(i + (camera == "till")) % len(faces)]
            obs = _observation(face, site, camera, track, (arrival + timedelta(seconds=offset)).timestamp(), recognizer)
            outcome = handle(faces_topic(site, DEVICE), encode(obs))
            if outcome.kind == "stored":
                stored += 1
                fed.setdefault(who, []).append(uuid.UUID(obs.observation_id))
            else:
                log.warning("demo observation not stored: %s", outcome)
        if i % 50 == 49 or i == len(visits) - 1:
            progress(f"demo: backfilled {i + 1}/{len(visits)} visits ({stored} observations)")
    seed = DemoSeed(
        seeded_at=now.isoformat(),
        sites=list(DEMO_SITES),
        observations=stored,
        visits_planned=len(visits),
        photos_analyzed=analyzed,
        seconds=0.0,
        homes=homes,
    )
    seed.staff_visitor = str(_label_people(service, people, fed) or "")
    if with_event:
        _demo_event(service, engine, groups, regulars, seed, progress)
    seed.seconds = round(time.perf_counter() - started, 1)
    save_marker(Path(service.config.data_dir), seed)
    return seed


def save_marker(data_dir: Path, seed: DemoSeed) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(asdict(seed), indent=2))
    tmp.replace(data_dir / MARKER)


def top_up_today(service: Any, engine: Any, facedata: Path, seed: DemoSeed, *, now: datetime | None = None) -> int:
    """A demo restarted on a later day: today's visit of each regular (at their home site, earlier today), so
    the loyal list is not empty before the camera has seen anyone. Once per day; returns the visits added."""
    from revisit.shared.dataset import by_identity, load_labels

    now = now or utcnow()
    zone = ZoneInfo(service.config.loyal.timezone)
    today = now.astimezone(zone).date()
    if not seed.homes or today.isoformat() in seed.topped_up or seed.seeded_at[:10] >= today.isoformat():
        return 0
    groups = by_identity(load_labels(Path(facedata)))
    start = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(f"{SEED}-{today}")
    handle = _handle_backfill(service.ingestor)
    added = 0
    for i, (name, site) in enumerate(sorted(seed.homes.items())):
        face = next((f for r in groups.get(name, [])[:3] if (f := _face(engine, r.path, name))), None)
        if face is None:
            continue
        elapsed = (now - start).total_seconds()
        arrival = start + timedelta(seconds=rng.uniform(0.2, 0.9) * max(60.0, elapsed - 600))
        obs = _observation(face, site, "door", 900_000 + i, arrival.timestamp(), engine.recognizer_id)
        if handle(faces_topic(site, DEVICE), encode(obs)).kind == "stored":
            added += 1
    seed.topped_up.append(today.isoformat())
    save_marker(Path(service.config.data_dir), seed)
    return added


def _label_people(
    service: Any, people: dict[str, tuple[str, list[DemoFace]]], fed: dict[str, list[uuid.UUID]]
) -> uuid.UUID | None:
    """Notes on the demo's regulars and its member of staff (so the demo explains itself on the visitor page)."""
    from collections import Counter

    from sqlmodel import col, select

    from revisit.central.store import Sighting, Visitor

    staff_id = None
    with service.store.begin() as s:
        for name, (kind, _faces) in people.items():
            if kind not in ("staff", "regular") or not fed.get(name):
                continue
            owners = Counter(s.exec(select(Sighting.visitor_id).where(col(Sighting.observation_id).in_(fed[name]))))
            if not owners:
                continue
            visitor = s.get(Visitor, owners.most_common(1)[0][0])  # the visitor holding most of their sightings
            if kind == "staff":
                staff_id = visitor.id
                visitor.label = visitor.label or "Demo: opens the shop every morning"
                visitor.notes = (
                    "Demo data. Seen every working day at opening time: a member of staff. Mark them as staff "
                    "to take them out of the loyal list and the analytics."
                )
            else:
                visitor.notes = visitor.notes or f"Demo data (dev photos of {name.replace('_', ' ')})."
    return staff_id


def _demo_event(service: Any, engine: Any, groups: dict, regulars: list[str], seed: DemoSeed, progress: Any) -> None:
    """A kiosk event with photos of a few regulars and of other people; one photo of each regular is kept out
    of the event as a sample selfie."""
    from revisit.central.kiosk.events import Events
    from revisit.central.kiosk.worker import FaceWorker

    events = Events.for_service(service)
    event = events.create_event("Demo event: summer party (sample photos)")
    uploads, selfies = [], []
    for name in regulars[:4]:
        records = groups[name]
        selfies.append(str(records[-1].path))
        uploads += [(r.path.name, r.path.read_bytes()) for r in records[6:10]]
    others = [n for n in sorted(groups) if n not in regulars and len(groups[n]) >= 1][::97]
    for name in others:
        if len(uploads) >= EVENT_PHOTOS:
            break
        uploads.append((groups[name][0].path.name, groups[name][0].path.read_bytes()))
    results = events.add_photos(event.id, uploads)
    worker = FaceWorker(events, engine).start(resume=False)
    try:
        for r in results:
            if r.photo is not None:
                worker.submit(event.id, r.photo.id)
        worker.wait_idle(timeout=120)
    finally:
        worker.stop()
    seed.event_id, seed.event_code = str(event.id), event.code
    seed.event_photos = sum(1 for r in results if r.photo is not None)
    seed.sample_selfies = selfies
    progress(f"demo: event {event.code} with {seed.event_photos} photos")

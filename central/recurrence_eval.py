"""`revisit eval recurrence`: weeks of visits at several sites, through the edge's observation building and the
central ingest, scored on the loyal-customer lists head office reads.

Scenario (seeded): every identity of labels.csv with several photos is a regular, visiting on distinct days (one
photo per visit, at most `--days` visits); every other identity visits once. Sites lie in different time zones
(`SITE_ZONES`; head office is the first). Visits start at local opening hours, 15% of them late in the evening
so that they run past local midnight; most visits are at the regular's home site. A visit has 1-3 observations
(cameras cam-1..3, one track each), a track `FRAMES` frames 0.5 s apart. Each frame is a degraded variant of the
visit's photo (`revisit.shared.degrade`: ``none``, ``cctv``, ``hard``) on which the real face engine runs; the
edge's own `Recogniser` keeps, embeds and publishes the track exactly as the daemon does. Every observation goes
through the central `Ingestor.handle(..., backfill=True)` (history enters through the backfill path) into a
fresh store, in time order.

Scoring, for every day of the scenario, for each site (its own local day) and for all sites (head office's day),
and for X in {1, 2, 3}: the loyal list (`queries.loyal_customers` with `as_of`) against the truth computed from
the true visits with the same day rule. A listed visitor stands for the identity of most of its sightings; a
visitor whose identity is not truly loyal that day, or a second visitor for the same identity, is a false
positive. Micro-averaged over all lists:

- loyal_precision, loyal_recall;
- visit_count_mae: |visits before (listed) - true visits before| over true loyal people who were listed, X = 1;
- visitors_per_identity: distinct visitors holding an identity's assigned sightings, mean over identities;
- false_merge_rate: visitors whose sightings belong to more than one identity / visitors;
- bcubed_f1 over published observations (an unassigned sighting is a cluster of its own);
- unassigned: low-quality sightings that matched no visitor and founded none (see `ClusterConfig.found_min_quality`).

Embeddings are cached per (photo, level, seed, engine) under --cache (default ~/.cache/revisit/eval-recurrence):
the first run of the whole dev set costs tens of minutes on two cores, later runs seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from revisit.shared.dataset import DatasetError, Record, by_identity, load_labels
from revisit.shared.face import Quality

log = logging.getLogger(__name__)
SEED = 0
SITE_ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Europe/London",
    "America/Los_Angeles",
    "Australia/Sydney",
)
HEAD_OFFICE_ZONE = SITE_ZONES[0]
END_DAY = date(2026, 4, 10)  # 28 days back covers Europe's DST change (29 March 2026)
FRAMES = 2  # frames per track
FRAME_GAP_S = 0.5
LATE_SHARE = 0.15  # visits that start late in the evening and may run past midnight
HOME_SHARE = 0.8
MAX_OBS_GAP_MIN = 20  # below the service's visit gap (30 min)  # a regular's visits at the home site
XS = (1, 2, 3)
_EMPTY = np.zeros(0, np.float32)
QUALITY_KEYS = tuple(f.name for f in fields(Quality))  # a cached face's quality, as an array


def register_eval(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option
    from revisit.shared.cli import add_engine_options
    from revisit.shared.degrade import LEVELS

    p = sub.add_parser("recurrence", help="weeks of visits at sites in several time zones: loyal-list accuracy")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="directory with labels.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--degrade", choices=list(LEVELS), default="none", help="CCTV-like degradation of each frame")
    p.add_argument("--days", type=_positive, default=28, help="length of the scenario in days")
    p.add_argument("--sites", type=_positive, default=3, help=f"sites (1-{len(SITE_ZONES)}), one zone each")
    p.add_argument("--seed", type=int, default=SEED)
    quick = "quick run: the first N regulars and the first N one-time visitors (sorted by name)"
    p.add_argument("--limit-identities", type=_positive, metavar="N", help=quick)
    p.add_argument("--cache", type=Path, metavar="DIR", help="embedding cache (default ~/.cache/revisit/...)")
    p.add_argument("--threshold", type=float, help="cosine to join a visitor (default: the service's)")
    p.add_argument("--found-min-quality", type=float, help="quality floor to found a visitor (default: service's)")
    p.add_argument("--low-quality-threshold", type=float, help="cosine a face below the floor needs to join")
    p.add_argument("--mean-shots", type=int, help="edge: mean of the best K embedded shots (default: the edge's, 2)")
    p.add_argument("--edge-min-quality", type=float, help="edge: shots below this are never embedded")
    add_models_option(p)
    add_engine_options(p)
    p.set_defaults(func=run_recurrence)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- the scenario ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedObs:
    index: int
    identity: str
    photo: Record
    variants: tuple[int, ...]  # one degraded variant per frame
    site: str
    camera: str
    track_id: int
    start_ts: float  # first frame, UTC seconds


@dataclass(frozen=True, slots=True)
class TrueVisit:
    identity: str
    site: str
    start_ts: float


@dataclass
class Scenario:
    sites: dict[str, str]  # name -> zone
    head_office_zone: str
    first_day: date
    last_day: date
    observations: list[PlannedObs] = field(default_factory=list)
    visits: list[TrueVisit] = field(default_factory=list)
    regulars: int = 0
    one_time: int = 0


def choose_identities(records: list[Record], limit: int | None) -> dict[str, list[Record]]:
    groups = by_identity(records)
    if limit is None:
        return groups
    multi = [n for n, photos in groups.items() if len(photos) >= 2][:limit]
    single = [n for n, photos in groups.items() if len(photos) == 1][:limit]
    return {n: groups[n] for n in sorted(multi + single)}


def build_scenario(groups: dict[str, list[Record]], days: int, n_sites: int, seed: int) -> Scenario:
    if not 1 <= n_sites <= len(SITE_ZONES):
        raise DatasetError(f"--sites must be 1-{len(SITE_ZONES)}")
    rng = np.random.default_rng(seed)
    sites = {f"site-{i + 1}": SITE_ZONES[i] for i in range(n_sites)}
    names = list(sites)
    first = END_DAY - timedelta(days=days - 1)
    sc = Scenario(sites, HEAD_OFFICE_ZONE, first, END_DAY)
    track_ids: Counter[tuple[str, str]] = Counter()
    planned: list[tuple[Any, ...]] = []  # (start, identity, photo, site, k, camera, track id)
    for identity, photos in groups.items():
        photos = list(photos)
        rng.shuffle(photos)
        photos = photos[:days]
        home = names[int(rng.integers(n_sites))]
        if len(photos) >= 2:
            sc.regulars += 1
        else:
            sc.one_time += 1
        visit_days = sorted(rng.choice(days, size=len(photos), replace=False).tolist())
        for photo, offset in zip(photos, visit_days, strict=True):
            site = home if rng.random() < HOME_SHARE or n_sites == 1 else names[int(rng.integers(n_sites))]
            zone = ZoneInfo(sites[site])
            day = first + timedelta(days=offset)
            if rng.random() < LATE_SHARE:
                minute = int(rng.integers(23 * 60 + 5, 23 * 60 + 50))
                duration = float(rng.uniform(25, 60))
            else:
                minute = int(rng.integers(9 * 60, 20 * 60 + 30))
                duration = float(rng.uniform(10, 60))
            local = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
            start = local.astimezone(timezone.utc).timestamp()  # noqa: UP017 (3.10)
            n_obs = int(rng.integers(1, 4))
            # observations of one visit come less than MAX_OBS_GAP_MIN apart: one visit for the service too
            offsets = [0.0]
            for x in sorted(float(x) for x in rng.uniform(0, duration * 60, n_obs - 1)):
                offsets.append(min(x, offsets[-1] + MAX_OBS_GAP_MIN * 60))
            sc.visits.append(TrueVisit(identity, site, start))
            for k, off in enumerate(offsets):
                camera = f"cam-{int(rng.integers(1, 4))}"
                track_ids[(site, camera)] += 1
                planned.append((start + off, identity, photo, site, k, camera, track_ids[(site, camera)]))
    planned.sort(key=lambda p: (p[0], p[1], p[4]))
    for i, (ts, identity, photo, site, k, camera, track) in enumerate(planned):
        variants = tuple(range(k * FRAMES, (k + 1) * FRAMES))
        sc.observations.append(PlannedObs(i, identity, photo, variants, site, camera, track, ts))
    return sc


# --- faces: the engine on degraded frames, cached ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameFace:
    found: bool
    box: np.ndarray
    score: float
    landmarks: np.ndarray
    quality: np.ndarray  # QUALITY_KEYS
    embedding: np.ndarray


class FaceCache:
    """The engine's result for each (photo, level, seed, variant), in one .npz per photo."""

    def __init__(self, root: Path, engine: Any, level: str, seed: int):
        self.engine = engine
        self.level = level
        self.seed = seed
        from revisit.shared.degrade import FRAME_SIZE

        frame = "x".join(map(str, FRAME_SIZE))
        tag = f"{engine.config.detector.model}_{engine.recognizer_id}_{frame}".replace("@", "_")
        self.dir = root / tag / level / f"seed{seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.computed = 0
        self.hits = 0
        self._mem: dict[str, dict[int, FrameFace]] = {}
        self._frames: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}  # the current photo's frames

    def _file(self, photo: Record) -> Path:
        return self.dir / (hashlib.sha1(photo.relpath.encode()).hexdigest()[:20] + ".npz")

    def _key(self, variant: int) -> int:
        return 0 if self.level == "none" else variant  # an undegraded photo is the same in every frame

    def get(self, photo: Record, variants: tuple[int, ...]) -> list[FrameFace]:
        faces = self._load(photo)
        missing = sorted({self._key(v) for v in variants} - set(faces))
        if missing:
            for v in missing:
                faces[v] = self._compute(photo, v)
                self.computed += 1
            self._save(photo, faces)
        else:
            self.hits += len(variants)
        return [faces[self._key(v)] for v in variants]

    def frame(self, photo: Record, variant: int) -> tuple[np.ndarray, np.ndarray]:
        """(frame, where the face was put) of one variant: cheap, deterministic."""
        from revisit.shared.degrade import degrade, rng_for
        from revisit.shared.engine import central_face
        from revisit.shared.image import read_image

        key = (photo.relpath, self._key(variant))
        if key in self._frames:
            return self._frames[key]
        if len(self._frames) > 64:
            self._frames.clear()
        image = read_image(photo.path)
        clean = self._clean_box(photo, image, central_face)
        v = degrade(image, clean, self.level, rng_for(self.seed, photo.relpath, self.level, self._key(variant)))
        self._frames[key] = (v.frame, v.face_box)
        return self._frames[key]

    def _clean_box(self, photo: Record, image: np.ndarray, central_face: Any) -> np.ndarray:
        faces = self._load(photo)
        if -1 in faces:
            return faces[-1].box
        face = central_face(self.engine.detect(image), image.shape)
        h, w = image.shape[:2]
        box = face.box if face is not None else np.array([w * 0.3, h * 0.25, w * 0.7, h * 0.75], np.float32)
        faces[-1] = FrameFace(
            face is not None,
            np.asarray(box, np.float32),
            0.0,
            np.zeros((5, 2), np.float32),
            np.zeros(len(QUALITY_KEYS), np.float32),
            np.zeros(0, np.float32),
        )
        return faces[-1].box

    def _compute(self, photo: Record, variant: int) -> FrameFace:
        from revisit.shared.degrade import nearest_face
        from revisit.shared.engine import central_face

        frame, pasted = self.frame(photo, variant)
        faces = self.engine.detect(frame)
        face = central_face(faces, frame.shape) if self.level == "none" else nearest_face(faces, pasted)
        if face is None:
            return FrameFace(
                False,
                pasted,
                0.0,
                np.zeros((5, 2), np.float32),
                np.zeros(len(QUALITY_KEYS), np.float32),
                np.zeros(0, np.float32),
            )
        self.engine.complete(frame, [face])
        q = np.array([getattr(face.quality, k) for k in QUALITY_KEYS], dtype=np.float32)
        return FrameFace(True, face.box, face.score, face.landmarks, q, np.asarray(face.embedding, np.float32))

    def _load(self, photo: Record) -> dict[int, FrameFace]:
        if photo.relpath in self._mem:
            return self._mem[photo.relpath]
        faces: dict[int, FrameFace] = {}
        path = self._file(photo)
        if path.is_file():
            try:
                data = np.load(path, allow_pickle=False)
                for i, v in enumerate(data["variants"].tolist()):
                    faces[int(v)] = FrameFace(
                        bool(data["found"][i]),
                        data["box"][i],
                        float(data["score"][i]),
                        data["landmarks"][i],
                        data["quality"][i],
                        data["embedding"][i] if data["found"][i] else _EMPTY,
                    )
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cache file %s unreadable (%s): computing again", path, exc)
                faces = {}
        self._mem[photo.relpath] = faces
        return faces

    def _save(self, photo: Record, faces: dict[int, FrameFace]) -> None:
        keys = sorted(faces)
        dim = max((f.embedding.size for f in faces.values()), default=0)
        emb = np.zeros((len(keys), dim), np.float32)
        for i, k in enumerate(keys):
            if faces[k].found and faces[k].embedding.size:
                emb[i] = faces[k].embedding
        path = self._file(photo)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            variants=np.array(keys),
            found=np.array([faces[k].found for k in keys]),
            box=np.stack([faces[k].box for k in keys]),
            score=np.array([faces[k].score for k in keys]),
            landmarks=np.stack([faces[k].landmarks for k in keys]),
            quality=np.stack([faces[k].quality for k in keys]),
            embedding=emb,
        )
        os.replace(tmp, path)


# --- the edge: one track per planned observation -------------------------------------------------------------------


def edge_observation(
    plan: PlannedObs, faces: list[FrameFace], cache: FaceCache, recognizer_id: str, config: Any, stats: Counter[str]
) -> Any:
    """The `Observation` the edge daemon would publish for this track (None: nothing embeddable)."""
    from revisit.edge.config import CameraConfig
    from revisit.edge.recognise import Recogniser
    from revisit.edge.track import BoxFilter, Track
    from revisit.shared.face import Face

    camera = CameraConfig(id=plan.camera, source="eval")
    rec = Recogniser(camera, config, plan.site, f"box-{plan.site}", recognizer_id)
    track: Track | None = None
    for k, (variant, ff) in enumerate(zip(plan.variants, faces, strict=True)):
        ts = plan.start_ts + k * FRAME_GAP_S
        if not ff.found:
            stats["frames_without_face"] += 1
            continue
        face = Face(ff.box, ff.score, ff.landmarks, Quality(*map(float, ff.quality)))
        face.crop = np.zeros((112, 112, 3), np.uint8)  # the embedding is the cached one of this very crop
        face.embedding, face.recognizer_id = ff.embedding, recognizer_id
        if track is None:
            track = Track(key=1, first_ts=ts, last_ts=ts, face=face, filter=BoxFilter(ff.box, ts), id=plan.track_id)
        track.last_ts, track.face = ts, face
        frame, _ = cache.frame(plan.photo, variant)
        rec.observe(track, face, frame, ts)
        for key, wanted in rec.wanted():
            rec.set_embedding(key, wanted, wanted.embedding)
    if track is None:
        stats["tracks_without_face"] += 1
        return None
    obs = rec.end(track)
    if obs is None:
        stats["tracks_unembeddable"] += 1
    return obs


# --- scoring ----------------------------------------------------------------------------------------------------


def _day(ts: float, zone: str) -> date:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).date()


def true_days(sc: Scenario, scope: str | None) -> dict[str, list[date]]:
    """identity -> the days of its visits in scope (site: each visit's local day; all: distinct head-office days)."""
    out: dict[str, list[date]] = defaultdict(list)
    for v in sc.visits:
        if scope is None:
            out[v.identity].append(_day(v.start_ts, sc.head_office_zone))
        elif v.site == scope:
            out[v.identity].append(_day(v.start_ts, sc.sites[scope]))
    if scope is None:
        out = defaultdict(list, {k: sorted(set(d)) for k, d in out.items()})
    return out


def bcubed(truth: list[str], predicted: list[Any]) -> tuple[float, float, float]:
    from revisit.central.evaluate import bcubed as _bcubed

    codes: dict[Any, int] = {}
    return _bcubed(truth, [codes.setdefault(p, len(codes)) for p in predicted])


def score(sc: Scenario, store: Any, owner: dict[str, str], window_days: int) -> dict[str, Any]:
    """Loyal lists vs truth; `owner`: observation id -> identity."""
    from sqlmodel import select

    from revisit.central.queries import loyal_customers
    from revisit.central.store import Sighting, Visitor

    with store.session() as s:
        rows = s.exec(select(Sighting.observation_id, Sighting.visitor_id)).all()
        unassigned_ids = set(s.exec(select(Visitor.id).where(Visitor.unassigned == True)).all())  # noqa: E712
    members: dict[Any, list[str]] = defaultdict(list)
    by_obs: dict[str, Any] = {}
    for obs_id, visitor_id in rows:
        by_obs[str(obs_id)] = visitor_id
        if visitor_id not in unassigned_ids:
            members[visitor_id].append(owner[str(obs_id)])
    majority = {v: Counter(ids).most_common(1)[0][0] for v, ids in members.items()}
    visitors_of: dict[str, set[Any]] = defaultdict(set)
    for v, ids in members.items():
        for identity in ids:
            visitors_of[identity].add(v)
    tp = fp = fn = 0
    errors: list[int] = []
    per_scope: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    scopes: list[str | None] = [*sc.sites, None]
    with store.session() as s:
        for scope in scopes:
            days = true_days(sc, scope)
            day = sc.first_day
            while day <= sc.last_day:
                window_start = day - timedelta(days=window_days)
                for x in XS:
                    truth: dict[str, int] = {}
                    for identity, ds in days.items():
                        if day in ds:
                            before = sum(window_start <= d < day for d in ds)
                            if before >= x:
                                truth[identity] = before
                    page = loyal_customers(
                        s,
                        min_visits=x,
                        window_days=window_days,
                        as_of=day,
                        timezone=sc.head_office_zone,
                        site=scope,
                        limit=100_000,
                    )
                    listed: set[str] = set()
                    t = f = 0
                    for row in page.rows:
                        identity = majority.get(row.visitor.id)
                        if identity in truth and identity not in listed:
                            listed.add(identity)
                            t += 1
                            if x == 1:
                                errors.append(abs(row.visits_before - truth[identity]))
                        else:
                            f += 1
                            log.debug(
                                "false positive: %s on %s at %s, X=%d (%s visits before)",
                                identity,
                                day,
                                scope or "all sites",
                                x,
                                row.visits_before,
                            )
                    miss = len(truth) - len(listed)
                    tp, fp, fn = tp + t, fp + f, fn + miss
                    key = scope or "all"
                    per_scope[key][0] += t
                    per_scope[key][1] += f
                    per_scope[key][2] += miss
                day += timedelta(days=1)
    truth_labels = [owner[o] for o in by_obs]
    predicted = [by_obs[o] if by_obs[o] not in unassigned_ids else f"u:{o}" for o in by_obs]
    bp, br, bf = bcubed(truth_labels, predicted)
    merged = sum(len(set(ids)) > 1 for ids in members.values())
    regulars = {v.identity for v in sc.visits if sum(1 for w in sc.visits if w.identity == v.identity) > 1}
    vpi_all = [len(visitors_of[i]) for i in visitors_of]
    vpi_reg = [len(visitors_of[i]) for i in visitors_of if i in regulars]
    return {
        "loyal_precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "loyal_recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "loyal_lists": len(scopes) * ((sc.last_day - sc.first_day).days + 1) * len(XS),
        "loyal_true_entries": tp + fn,
        "visit_count_mae": round(float(np.mean(errors)), 4) if errors else 0.0,
        "visitors_per_identity": round(float(np.mean(vpi_all)), 4) if vpi_all else 0.0,
        "visitors_per_regular": round(float(np.mean(vpi_reg)), 4) if vpi_reg else 0.0,
        "false_merge_rate": round(merged / max(len(members), 1), 4),
        "visitors": len(members),
        "bcubed_precision": round(bp, 4),
        "bcubed_recall": round(br, 4),
        "bcubed_f1": round(bf, 4),
        "per_scope": {
            k: {"precision": round(v[0] / max(v[0] + v[1], 1), 4), "recall": round(v[0] / max(v[0] + v[2], 1), 4)}
            for k, v in per_scope.items()
        },
    }


# --- the run ----------------------------------------------------------------------------------------------------


def default_cache() -> Path:
    env = os.environ.get("REVISIT_EVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "revisit" / "eval-recurrence"


def run_recurrence(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from revisit.central.clustering import Assigner, ClusterSettings
    from revisit.central.config import ClusterConfig
    from revisit.central.ingest import Ingestor, known_recognizers
    from revisit.central.store import Site, Store
    from revisit.central.vectors import Vectors
    from revisit.edge.config import RecogniseConfig
    from revisit.shared.cli import engine_config
    from revisit.shared.engine import FaceEngine
    from revisit.shared.schema import encode, faces_topic

    groups = choose_identities(load_labels(args.data), args.limit_identities)
    if not groups:
        raise DatasetError(f"{args.data}: no kind=photo images")
    sc = build_scenario(groups, args.days, args.sites, args.seed)
    engine = FaceEngine(engine_config(args), args.models)
    cache = FaceCache(args.cache or default_cache(), engine, args.degrade, args.seed)
    edge = {"mean_shots": args.mean_shots, "min_quality": args.edge_min_quality}
    rec_config = RecogniseConfig(**{k: v for k, v in edge.items() if v is not None})
    defaults = ClusterConfig()
    threshold = args.threshold if args.threshold is not None else defaults.threshold
    floor = args.found_min_quality if args.found_min_quality is not None else defaults.found_min_quality
    low = args.low_quality_threshold if args.low_quality_threshold is not None else defaults.low_quality_threshold
    settings = ClusterSettings(
        threshold=threshold,
        visit_gap=timedelta(minutes=defaults.visit_gap_min),
        found_min_quality=floor,
        low_quality_threshold=low,
    )
    stats: Counter[str] = Counter()
    owner: dict[str, str] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="revisit-eval-") as tmp:
        store = Store(f"sqlite:///{tmp}/eval.db")
        store.create_all()
        with store.begin() as s:
            for name, zone in sc.sites.items():
                s.add(Site(name=name, timezone=zone))
        vectors = Vectors.memory()
        ingestor = Ingestor(Assigner(store, vectors, None, settings), store, known_recognizers())
        for plan in tqdm(sc.observations, desc="recurrence", unit="obs", file=sys.stderr, mininterval=2.0):
            faces = cache.get(plan.photo, plan.variants)
            obs = edge_observation(plan, faces, cache, engine.recognizer_id, rec_config, stats)
            if obs is None:
                continue
            owner[obs.observation_id] = plan.identity
            outcome = ingestor.handle(faces_topic(obs.site, obs.device), encode(obs), backfill=True)
            stats[f"ingest_{outcome.kind}"] += 1
        result = {
            "degrade": args.degrade,
            "days": args.days,
            "sites": len(sc.sites),
            "seed": args.seed,
            "identities": len(groups),
            "regulars": sc.regulars,
            "one_time_visitors": sc.one_time,
            "visits": len(sc.visits),
            "observations_planned": len(sc.observations),
            "observations": len(owner),
            "threshold": threshold,
            "found_min_quality": floor,
            "low_quality_threshold": low,
            "mean_shots": rec_config.mean_shots,
            "edge_min_quality": rec_config.min_quality,
        }
        result |= score(sc, store, owner, args.days)
        result["unassigned"] = ingestor.clusterer.unassigned_count()
        result |= {k: int(v) for k, v in sorted(stats.items())}
        result["rejected"] = ingestor.counters.rejected()
        result["embedded_frames"] = cache.computed
        result["seconds"] = round(time.perf_counter() - start, 1)
        vectors.close()
        store.dispose()
    out = sys.stderr if args.json else sys.stdout
    print(
        f"eval recurrence ({args.degrade}, {result['identities']} identities, {result['visits']} visits, "
        f"{result['observations']} observations over {args.days} days at {len(sc.sites)} sites): "
        f"loyal precision {result['loyal_precision']:.4f}, recall {result['loyal_recall']:.4f}, "
        f"visit count MAE {result['visit_count_mae']:.3f}, visitors/identity {result['visitors_per_identity']:.3f}, "
        f"false merges {result['false_merge_rate']:.4f}, BCubed F1 {result['bcubed_f1']:.4f}, "
        f"unassigned {result['unassigned']}",
        file=out,
        flush=True,
    )
    if args.json:
        print(json.dumps(result), flush=True)
    return 0

"""Recognise once per track: keep each track's best shot, embed it once, publish one observation.

The lifecycle of a track (the shape of Frigate's per-object enrichments, process_frame / expire_object):

- `observe` every matched face (with its quality): the best shot by `is_better_shot` is kept as the
  aligned 112x112 crop plus a padded face crop for the JPEG, never the whole frame.
- `wanted` lists the confirmed tracks to embed now: a track's first embeddable shot (quality >=
  min_quality, face >= the camera's min_face_px), later only a clearly better one (`should_reembed`:
  face `reembed_size_ratio` x larger or quality + `reembed_quality_delta`), at most
  `max_embeds_per_track` times. The pipeline embeds them in one batch and hands the vectors back.
- `end` (the track ended) and `due` (a long track's `publish_interval_s` passed) build one `Observation`
  from the embedded shot. A long track publishes each interval under the same track id; each interval is
  a fresh window (its own first/last/best times, frames, co-tracks and embedding budget).
- A track that never had an embeddable shot publishes nothing and is counted.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from revisit.edge.config import CameraConfig, RecogniseConfig
from revisit.edge.track import Track
from revisit.shared.face import Face
from revisit.shared.schema import MAX_CROP_BYTES, Observation, QualityFields

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShotRules:
    """The thresholds the shot decisions need (from RecogniseConfig and the camera)."""

    min_quality: float = 0.25
    min_face_px: float = 24.0
    reembed_size_ratio: float = 1.5
    reembed_quality_delta: float = 0.2
    max_embeds: int = 3

    @classmethod
    def of(cls, config: RecogniseConfig, camera: CameraConfig) -> ShotRules:
        return cls(
            config.min_quality,
            camera.min_face_px,
            config.reembed_size_ratio,
            config.reembed_quality_delta,
            config.max_embeds_per_track,
        )


def _score(face: Face) -> float:
    return face.quality.score if face.quality is not None else 0.0


def _size(face: Face) -> float:
    return face.quality.face_px if face.quality is not None else min(face.width, face.height)


def embeddable(face: Face, rules: ShotRules) -> bool:
    return face.quality is not None and _score(face) >= rules.min_quality and _size(face) >= rules.min_face_px


def is_better_shot(old: Face | None, new: Face, rules: ShotRules) -> bool:
    """Should `new` replace `old` as the best shot? An embeddable shot beats one that is not; otherwise
    the higher quality score wins, a tie keeps the old one."""
    if old is None:
        return True
    new_ok, old_ok = embeddable(new, rules), embeddable(old, rules)
    if new_ok != old_ok:
        return new_ok
    return _score(new) > _score(old)


def should_reembed(embedded: Face | None, best: Face, embeds: int, rules: ShotRules) -> bool:
    """Should `best` be embedded, given the shot embedded last (None: none yet) and the count so far?"""
    if best is embedded or not embeddable(best, rules) or embeds >= rules.max_embeds:
        return False
    if embedded is None:
        return True
    larger = _size(best) >= rules.reembed_size_ratio * _size(embedded)
    sharper = _score(best) >= _score(embedded) + rules.reembed_quality_delta - 1e-9
    return larger or sharper


def padded_crop(image: np.ndarray, box: np.ndarray, padding: float, max_side: int) -> np.ndarray:
    """The face box grown by `padding` of its size on each side, clipped to the image, shrunk to fit
    `max_side`; a copy, so it does not keep the frame alive."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    px, py = (x2 - x1) * padding, (y2 - y1) * padding
    left, top = max(0, math.floor(x1 - px)), max(0, math.floor(y1 - py))
    right, bottom = min(w, math.ceil(x2 + px)), min(h, math.ceil(y2 + py))
    if right <= left or bottom <= top:
        left, top, right, bottom = 0, 0, w, h
    crop = image[top:bottom, left:right]
    scale = max_side / max(crop.shape[:2])
    if scale < 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return crop.copy()


def encode_jpeg(image: np.ndarray, quality: int, max_bytes: int = MAX_CROP_BYTES) -> bytes:
    """JPEG bytes, lowering the quality until they fit `max_bytes`."""
    while True:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        if len(buf) <= max_bytes or quality <= 30:
            return buf.tobytes()
        quality -= 15


@dataclass(slots=True)
class Shot:
    face: Face  # with its quality and aligned crop
    ts: float
    padded: np.ndarray | None = field(default=None, repr=False)  # only the best shot's is kept
    embedding: np.ndarray | None = field(default=None, repr=False)


@dataclass
class TrackState:
    """What the recogniser keeps for one track during the current publication window."""

    key: int
    frame_size: tuple[int, int]
    track_id: int = 0
    window_start: float = 0.0
    first_ts: float | None = None
    last_ts: float = 0.0
    frames_seen: int = 0
    best: Shot | None = None
    embedded: Shot | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    embeds: int = 0
    co_tracks: set[int] = field(default_factory=set)
    published: int = 0
    pool: list[Shot] = field(default_factory=list)  # mean_shots > 1: best K embeddable + embedded shots, best first

    def new_window(self, now: float) -> None:
        self.window_start = now
        self.first_ts = None
        self.frames_seen = 0
        self.best = self.embedded = None
        self.embedding = None
        self.embeds = 0
        self.co_tracks = set()
        self.pool = []


@dataclass
class RecogniseStats:
    embeds: int = 0
    reembeds: int = 0
    observations: int = 0
    tracks_published: int = 0
    tracks_unembeddable: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Recogniser:
    """The per-track lifecycle for one camera. Time is the frames' time (UTC seconds)."""

    def __init__(self, camera: CameraConfig, config: RecogniseConfig, site: str, device: str, recognizer_id: str):
        self.camera = camera
        self.config = config
        self.rules = ShotRules.of(config, camera)
        self.site = site
        self.device = device
        self.recognizer_id = recognizer_id
        self.states: dict[int, TrackState] = {}
        self.stats = RecogniseStats()

    def observe(self, track: Track, face: Face, image: np.ndarray, ts: float) -> None:
        """A face (quality assessed, crop aligned) matched to `track` in `image` at `ts`."""
        state = self.states.get(track.key)
        if state is None:
            state = self.states[track.key] = TrackState(track.key, (image.shape[1], image.shape[0]), window_start=ts)
        state.track_id = track.id
        state.first_ts = ts if state.first_ts is None else state.first_ts
        state.last_ts = ts
        state.frames_seen += 1
        if face.quality is not None and is_better_shot(state.best.face if state.best else None, face, self.rules):
            padded = padded_crop(image, face.box, self.config.crop_padding, self.config.crop_max_side)
            state.best = Shot(face, ts, padded)
        k = self.config.mean_shots
        if k > 1 and embeddable(face, self.rules):
            shot = state.best if state.best is not None and state.best.face is face else Shot(face, ts)
            pool = sorted([*state.pool, shot], key=lambda s: -_score(s.face))
            # the best K candidates, and every shot already embedded (a later shot must not waste its embedding)
            state.pool = [s for i, s in enumerate(pool) if i < k or s.embedding is not None]

    def together(self, track_ids: Iterable[int]) -> None:
        """Confirmed tracks matched in the same frame: each is a co-track of the others."""
        ids = set(track_ids)
        if len(ids) < 2:
            return
        for state in self.states.values():
            if state.track_id in ids:
                state.co_tracks |= ids - {state.track_id}

    def wanted(self) -> list[tuple[int, Face]]:
        """(track key, face) of each confirmed track whose best shot should be embedded now."""
        out = []
        for state in self.states.values():
            if state.track_id and state.best is not None:
                embedded = state.embedded.face if state.embedded else None
                if should_reembed(embedded, state.best.face, state.embeds, self.rules):
                    out.append((state.key, state.best.face))
            if state.track_id and self.config.mean_shots > 1:  # the pool's other shots: K embeds at most
                queued = sum(1 for key, _ in out if key == state.key)
                budget = min(self.config.mean_shots, self.rules.max_embeds) - state.embeds - queued
                for shot in state.pool[: self.config.mean_shots]:
                    if budget <= 0:
                        break
                    if shot.embedding is None and all(shot.face is not f for key, f in out if key == state.key):
                        out.append((state.key, shot.face))
                        budget -= 1
        return out

    def set_embedding(self, key: int, face: Face, vector: np.ndarray) -> None:
        state = self.states.get(key)
        if state is None:
            return
        vector = np.asarray(vector, dtype=np.float32)
        pooled = next((s for s in state.pool if s.face is face), None)
        is_best = state.best is not None and state.best.face is face
        if pooled is None and not is_best:
            return
        self.stats.embeds += 1
        self.stats.reembeds += state.embeds > 0
        state.embeds += 1
        if pooled is not None:
            pooled.embedding = vector
        if is_best:
            assert state.best is not None
            state.best.embedding = vector
            state.embedded = state.best
            state.embedding = vector
        elif state.embedded is None:  # a pooled shot before the best was embedded: publishable already
            state.embedded, state.embedding = pooled, vector

    def _published_vector(self, state: TrackState) -> np.ndarray:
        """The best shot's embedding, or with mean_shots > 1 the normalised mean of the pool's embedded shots."""
        assert state.embedding is not None
        vectors = [s.embedding for s in state.pool if s.embedding is not None][: self.config.mean_shots]
        if self.config.mean_shots <= 1 or len(vectors) < 2:
            return state.embedding
        mean = np.mean(np.stack(vectors), axis=0)
        norm = float(np.linalg.norm(mean))
        return (mean / norm).astype(np.float32) if norm > 1e-6 else state.embedding

    def end(self, track: Track) -> Observation | None:
        """The track ended: its observation, or None (never confirmed, or nothing embeddable)."""
        state = self.states.pop(track.key, None)
        if state is None or not track.confirmed:
            return None
        state.track_id = track.id
        obs = self._publish(state)
        if obs is None and state.published == 0:
            self.stats.tracks_unembeddable += 1
        return obs

    def due(self, now: float) -> list[Observation]:
        """Observations of long tracks whose publication interval has passed (each starts a new window)."""
        out = []
        for state in self.states.values():
            if state.track_id and now - state.window_start >= self.config.publish_interval_s:
                obs = self._publish(state)
                if obs is not None:
                    out.append(obs)
                state.new_window(now)
        return out

    def _publish(self, state: TrackState) -> Observation | None:
        if state.embedded is None or state.embedding is None or state.first_ts is None:
            return None
        try:
            obs = self.observation(state)
        except ValueError as exc:  # pydantic's ValidationError: a bug here must not stop the camera
            self.stats.invalid += 1
            log.error("camera %s: track %d: invalid observation dropped: %s", self.camera.id, state.track_id, exc)
            return None
        state.published += 1
        self.stats.observations += 1
        self.stats.tracks_published += state.published == 1
        return obs

    def observation(self, state: TrackState) -> Observation:
        assert state.embedded is not None and state.embedding is not None and state.first_ts is not None
        shot, face = state.embedded, state.embedded.face
        if shot.padded is None and state.best is not None and state.best.padded is not None:
            shot = state.best  # a pooled shot without a crop: show the best one
        q = face.quality
        assert q is not None
        vector = self._published_vector(state)
        return Observation(
            observation_id=str(uuid.uuid4()),
            site=self.site,
            device=self.device,
            camera=self.camera.id,
            track_id=state.track_id,
            first_ts=state.first_ts,
            last_ts=state.last_ts,
            best_ts=shot.ts,
            recognizer_id=self.recognizer_id,
            embedding=Observation.pack_vector(vector),
            embedding_dim=int(vector.size),
            det_score=min(1.0, max(0.0, face.score)),
            quality=QualityFields.of(q),
            box=tuple(float(v) for v in face.box),
            crop_jpeg=encode_jpeg(shot.padded if shot.padded is not None else face.crop, self.config.crop_jpeg_quality),
            frame_size=state.frame_size,
            frames_seen=max(1, state.frames_seen),
            co_tracks=tuple(sorted(state.co_tracks - {state.track_id})),
        )

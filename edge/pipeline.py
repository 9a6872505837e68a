"""The per-camera pipeline: sampled frame in, finished observations out.

    motion gate → detect → regions (dead zones / ROI) → track → quality of matched faces
    → recognise once per track (best shots embedded in one batch) → observations of ended tracks

Time is the frame's `ts` throughout, so a file evaluated as fast as it decodes behaves as it would live.
`NaivePipeline` is the baseline the design is measured against: every frame, every face, embedded.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

from revisit.edge.capture import Frame
from revisit.edge.config import CameraConfig, EdgeConfig
from revisit.edge.motion import MotionGate
from revisit.edge.recognise import Recogniser
from revisit.edge.roi import RegionFilter
from revisit.edge.track import Track, Tracker
from revisit.shared.engine import FaceEngine
from revisit.shared.face import Face
from revisit.shared.schema import Observation

LATENCY_SAMPLES = 512
GREEN = (0, 255, 0)


def _samples() -> deque[float]:
    return deque(maxlen=LATENCY_SAMPLES)


@dataclass
class PipelineStats:
    """Counters since start, and the last LATENCY_SAMPLES per-stage latencies in ms."""

    frames_analyzed: int = 0
    motion_skipped: int = 0
    detector_calls: int = 0
    detections_batched: int = 0  # frames detected in one call with other cameras' frames
    faces_detected: int = 0
    faces_in_dead_zones: int = 0
    faces_outside_roi: int = 0
    tracks_started: int = 0
    tracks_published: int = 0
    tracks_unembeddable: int = 0
    observations: int = 0
    embed_calls: int = 0
    detect_ms: deque[float] = field(default_factory=_samples)
    track_ms: deque[float] = field(default_factory=_samples)
    quality_ms: deque[float] = field(default_factory=_samples)
    embed_ms: deque[float] = field(default_factory=_samples)

    def counters(self) -> dict[str, int]:
        return {f.name: v for f in fields(self) if isinstance(v := getattr(self, f.name), int)}

    def latencies(self) -> dict[str, list[float]]:
        """Stage name (detect, track, quality, embed) → recent samples in ms."""
        names = [f.name for f in fields(self) if f.name.endswith("_ms")]
        return {name.removesuffix("_ms"): list(getattr(self, name)) for name in names}


class _Stopwatch:
    def __init__(self, samples: deque[float]):
        self.samples = samples

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.samples.append((time.perf_counter() - self.start) * 1000)


class CameraPipeline:
    """One camera's analysis. Not thread-safe except `annotate`, which may run on another thread."""

    def __init__(self, camera: CameraConfig, config: EdgeConfig, engine: FaceEngine, *, first_track_id: int = 1):
        self.camera = camera
        self.config = config
        self.engine = engine
        self.gate = MotionGate(config.motion)
        self.regions = RegionFilter.for_camera(camera)
        self.tracker = Tracker(config.tracker, first_id=first_track_id)
        self.recogniser = Recogniser(camera, config.recognise, config.site, config.device, engine.recognizer_id)
        self.stats = PipelineStats()
        self._ended: list[Observation] = []  # observations of expired tracks, between `begin` and `finish`
        # (frame width, height, ((track id, box), ...)) of the last frame, read by `annotate`.
        self._drawn: tuple[int, int, tuple[tuple[int, np.ndarray], ...]] = (0, 0, ())

    def process(self, frame: Frame) -> list[Observation]:
        """Analyse one sampled frame; returns the observations of tracks that finished."""
        if not self.begin(frame):
            return self.finish(frame, None)
        started = time.perf_counter()
        faces = self.engine.detect(frame.image)
        return self.finish(frame, faces, (time.perf_counter() - started) * 1000)

    def begin(self, frame: Frame) -> bool:
        """First half of `process`: end expired tracks; should the detector run on this frame (motion gate)?
        The caller then detects (perhaps with other cameras' frames in one call) and calls `finish`."""
        self.stats.frames_analyzed += 1
        self._ended = self._end(self.tracker.expire(frame.ts))
        return self.gate.should_detect(frame.image, self.tracker.alive, frame.ts)

    def finish(
        self, frame: Frame, faces: list[Face] | None, detect_ms: float | None = None, batched: bool = False
    ) -> list[Observation]:
        """Second half of `process`: faces None when the gate skipped the detector; `detect_ms` its time
        (this frame's share of a batch); `batched` when other cameras' frames shared the detector call."""
        image, ts = frame.image, frame.ts
        self.stats.detections_batched += int(batched and faces is not None)
        out, self._ended = self._ended, []
        if faces is None:
            self.stats.motion_skipped += 1
        else:
            if detect_ms is not None:
                self.stats.detect_ms.append(detect_ms)
            out += self._track(image, ts, faces)
        out += self.recogniser.due(ts)
        self._sync(image)
        return out

    def flush(self, now: float | None = None) -> list[Observation]:
        """End every track (shutdown, end of a file): the observations of those with an embedding.
        `now` (the time of the shutdown) is not needed: observations carry their tracks' own times."""
        out = self._end(self.tracker.end_all())
        self._drawn = (self._drawn[0], self._drawn[1], ())
        self._sync_counters()
        return out

    def annotate(self, image: np.ndarray) -> np.ndarray:
        """A copy of `image` with the current confirmed tracks drawn: green boxes and track ids. The
        image may be a resized copy of the camera frame; boxes are scaled to it."""
        frame_w, frame_h, tracks = self._drawn
        out = image.copy()
        if not tracks or not frame_w:
            return out
        sx, sy = out.shape[1] / frame_w, out.shape[0] / frame_h
        thick = max(1, round(out.shape[0] / 360))
        for track_id, box in tracks:
            x1, y1, x2, y2 = (int(round(v)) for v in (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy))
            cv2.rectangle(out, (x1, y1), (x2, y2), GREEN, thick)
            cv2.putText(
                out,
                str(track_id),
                (x1, max(12, y1 - 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thick,
                GREEN,
                thick,
                cv2.LINE_AA,
            )
        return out

    # -- stages ---------------------------------------------------------------------------------------

    def _track(self, image: np.ndarray, ts: float, faces: list[Face]) -> list[Observation]:
        self.stats.detector_calls += 1
        self.stats.faces_detected += len(faces)
        if self.regions.active:
            h, w = image.shape[:2]
            faces = [f for f in faces if self.regions.keep(f, w, h)]
        with _Stopwatch(self.stats.track_ms):
            step = self.tracker.update(faces, ts)
        self.stats.tracks_started += len(step.confirmed)
        with _Stopwatch(self.stats.quality_ms):
            self.engine.complete(image, [face for _, face in step.matched], embed=False)
        for track, face in step.matched:
            self.recogniser.observe(track, face, image, ts)
        self.recogniser.together(step.together)
        self._embed()
        return self._end(step.ended)

    def _embed(self) -> None:
        wanted = self.recogniser.wanted()
        if not wanted:
            return
        with _Stopwatch(self.stats.embed_ms):
            vectors = self.engine.embedder.embed([face.crop for _, face in wanted])
        for (key, face), vector in zip(wanted, vectors, strict=True):
            self.recogniser.set_embedding(key, face, vector)
        self.stats.embed_calls += len(wanted)

    def _end(self, tracks: list[Track]) -> list[Observation]:
        return [obs for obs in (self.recogniser.end(t) for t in tracks) if obs is not None]

    def _sync(self, image: np.ndarray) -> None:
        tracks = tuple((t.id, t.box.copy()) for t in self.tracker.confirmed)
        self._drawn = (image.shape[1], image.shape[0], tracks)
        self._sync_counters()

    def _sync_counters(self) -> None:
        rec, regions = self.recogniser.stats, self.regions.stats
        self.stats.faces_in_dead_zones = regions.in_dead_zone
        self.stats.faces_outside_roi = regions.outside_roi
        self.stats.tracks_published = rec.tracks_published
        self.stats.tracks_unembeddable = rec.tracks_unembeddable
        self.stats.observations = rec.observations


class NaivePipeline:
    """The baseline: every frame it is given goes to the detector and every face found is embedded.
    No motion gate, no regions, no tracking. `process` returns the embedded faces."""

    def __init__(self, engine: FaceEngine):
        self.engine = engine
        self.stats = PipelineStats()

    def process(self, frame: Frame) -> list[Face]:
        image = frame.image
        self.stats.frames_analyzed += 1
        with _Stopwatch(self.stats.detect_ms):
            faces = self.engine.detect(image)
        self.stats.detector_calls += 1
        self.stats.faces_detected += len(faces)
        if not faces:
            return []
        with _Stopwatch(self.stats.quality_ms):
            self.engine.complete(image, faces, embed=False)
        with _Stopwatch(self.stats.embed_ms):
            vectors = self.engine.embedder.embed([f.crop for f in faces])
        for face, vector in zip(faces, vectors, strict=True):
            face.embedding = vector
            face.recognizer_id = self.engine.recognizer_id
        self.stats.embed_calls += len(faces)
        return faces

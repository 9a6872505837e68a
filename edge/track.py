"""Tracking: a SORT-class tracker of face boxes, one per camera. Pure: no I/O, time comes with each call.

- Each track has a constant-velocity Kalman filter on (centre x, centre y, width, height); time steps
  are the real gaps between frames (the motion gate makes them irregular), noise scales with box size.
- Detections are assigned to the tracks' predicted boxes by IoU with the Hungarian algorithm; a pair
  below `iou_threshold` is no match.
- Birth: an unmatched detection starts a tentative track. Confirmation: after `min_hits` matches the
  track gets its public id (stable, increasing from `first_id`); a tentative track that misses a
  detection pass is dropped. Death: a track unmatched for more than `max_age_s` ends, so short misses
  (a turned head, a detector blink) are survived.
- Each step reports which confirmed tracks were matched in the same frame: different people.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from revisit.edge.config import TrackerConfig
from revisit.shared.face import Face

# Noise of the box filter, in box heights: measurement, position drift per sqrt(s), velocity change per
# s per sqrt(s), and the initial velocity uncertainty per s.
MEASURE_STD = 0.05
POSITION_STD = 0.05
VELOCITY_STD = 0.5
INITIAL_VELOCITY_STD = 1.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4] with every box in b [M, 4] (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs of the maximum-IoU assignment, each with IoU >= threshold."""
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= threshold]


class BoxFilter:
    """Constant-velocity Kalman filter; state (cx, cy, w, h, vcx, vcy, vw, vh), velocities per second."""

    _H = np.hstack([np.eye(4), np.zeros((4, 4))])

    def __init__(self, box: np.ndarray, ts: float):
        x1, y1, x2, y2 = (float(v) for v in box)
        h = max(y2 - y1, 1.0)
        self.x = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0, 0, 0, 0], dtype=np.float64)
        self.P = np.diag([(2 * MEASURE_STD * h) ** 2] * 4 + [(INITIAL_VELOCITY_STD * h) ** 2] * 4)
        self.ts = ts

    def predict(self, ts: float) -> np.ndarray:
        dt = max(0.0, ts - self.ts)
        if dt > 0:
            h = max(self.x[3], 1.0)
            F = np.eye(8)
            F[:4, 4:] = np.eye(4) * dt
            Q = np.diag([(POSITION_STD * h) ** 2 * dt] * 4 + [(VELOCITY_STD * h) ** 2 * dt] * 4)
            self.x = F @ self.x
            self.P = F @ self.P @ F.T + Q
            self.x[2:4] = np.maximum(self.x[2:4], 1.0)
            self.ts = ts
        return self.box()

    def update(self, box: np.ndarray) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        z = np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
        R = np.eye(4) * (MEASURE_STD * max(y2 - y1, 1.0)) ** 2
        S = self._H @ self.P @ self._H.T + R
        K = self.P @ self._H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (z - self._H @ self.x)
        self.P = (np.eye(8) - K @ self._H) @ self.P
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)

    def box(self) -> np.ndarray:
        cx, cy, w, h = self.x[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)


@dataclass(eq=False)
class Track:
    """One tracked face. `id` is 0 until the track is confirmed; `key` identifies every track."""

    key: int
    first_ts: float
    last_ts: float
    face: Face | None
    filter: BoxFilter = field(repr=False)
    id: int = 0
    hits: int = 1
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.float32))

    @property
    def confirmed(self) -> bool:
        return self.id > 0


@dataclass
class TrackerStep:
    """What one detection pass did. matched: every track matched in this frame (tentative ones too);
    confirmed: tracks that got their id now; ended: tracks that ended (check `Track.confirmed`);
    together: ids of the confirmed tracks matched in this frame."""

    matched: list[tuple[Track, Face]] = field(default_factory=list)
    confirmed: list[Track] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)
    together: tuple[int, ...] = ()


class Tracker:
    def __init__(self, config: TrackerConfig, first_id: int = 1):
        self.config = config
        self.tracks: list[Track] = []
        self._next_id = first_id
        self._next_key = 0

    @property
    def alive(self) -> bool:
        return bool(self.tracks)

    @property
    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.confirmed]

    def expire(self, ts: float) -> list[Track]:
        """End the tracks unmatched for more than max_age_s at time `ts` (call it on every frame)."""
        ended = [t for t in self.tracks if ts - t.last_ts > self.config.max_age_s]
        if ended:
            self.tracks = [t for t in self.tracks if t not in ended]
        return ended

    def update(self, faces: list[Face], ts: float) -> TrackerStep:
        """One detection pass at time `ts`: match, update, confirm, start and end tracks."""
        step = TrackerStep(ended=self.expire(ts))
        predicted = np.array([t.filter.predict(ts) for t in self.tracks], dtype=np.float32).reshape(-1, 4)
        boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(-1, 4)
        pairs = match(iou_matrix(predicted, boxes), self.config.iou_threshold)
        matched_tracks = {r for r, _ in pairs}
        matched_faces = {c for _, c in pairs}
        for r, c in pairs:
            track, face = self.tracks[r], faces[c]
            track.filter.update(face.box)
            track.box = track.filter.box()
            track.face = face
            track.last_ts = ts
            track.hits += 1
            if not track.confirmed and track.hits >= self.config.min_hits:
                self._confirm(track, step)
            step.matched.append((track, face))
        survivors = []
        for r, track in enumerate(self.tracks):
            if r in matched_tracks:
                survivors.append(track)
            elif track.confirmed:
                track.face = None
                track.box = predicted[r]
                survivors.append(track)
            else:
                step.ended.append(track)  # a tentative track that missed: a false start
        self.tracks = survivors
        for c, face in enumerate(faces):
            if c not in matched_faces:
                track = Track(self._next_key, ts, ts, face, BoxFilter(face.box, ts), box=face.box.copy())
                self._next_key += 1
                if self.config.min_hits <= 1:
                    self._confirm(track, step)
                self.tracks.append(track)
                step.matched.append((track, face))
        step.together = tuple(sorted(t.id for t, _ in step.matched if t.confirmed))
        return step

    def end_all(self) -> list[Track]:
        ended, self.tracks = self.tracks, []
        return ended

    def _confirm(self, track: Track, step: TrackerStep) -> None:
        track.id = self._next_id
        self._next_id += 1
        step.confirmed.append(track)

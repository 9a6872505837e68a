"""Face search at the kiosk: a guest's selfie against one event's faces.

The selfie is decoded and analysed in memory only: it is never written to disk, put in the database, or
logged (nor is anything derived from it but the counts a page shows).

Which face: the largest one (the guest stands nearest the kiosk camera); the guest is told when there were
several, and asked to stand alone when two are about the same size. Guidance instead of a search, from the
quality components (`shared.quality`): no face; face too small (size component); too dark (mean brightness
of the aligned crop); blurred (sharpness component). A turned face (pose component) only adds a hint.

Scale: the API's `similarity` and `threshold` are the original specification's (cos + 1) / 2, in [0, 1];
cosine = 2 * similarity - 1. `DEFAULT_THRESHOLD` was chosen with `revisit eval search` on
../shared/facedata/dev (see its comment). Results are per photo: a photo's similarity is that of its
best-matching face; best first. Searches are rate limited per client address and per event
(`revisit.central.kiosk.limits`).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from revisit.shared.errors import ImageError, RevisitError
from revisit.shared.face import Face
from revisit.shared.image import decode_image

if TYPE_CHECKING:  # the kiosk config imports this module (DEFAULT_THRESHOLD)
    from revisit.central.kiosk.events import Events
    from revisit.central.kiosk.models import Photo
    from revisit.shared.engine import FaceEngine

# (cos + 1) / 2 = 0.68 is cosine 0.36. `revisit eval search` on ../shared/facedata/dev (4,488 photos, 5,519 faces,
# 12 queries, 85 expected photos; w600k_mbf): precision / recall by threshold: 0.62: 0.649 / 1.000,
# 0.64: 0.944 / 1.000, 0.66: 0.977 / 1.000, 0.68: 0.977 / 0.988, 0.70: 0.988 / 0.929, 0.72: 0.986 / 0.847.
# Above 0.66 the only "wrong" photos are true matches the labels do not name (the guest in the background of
# someone else's portrait, at 0.694 and 0.976); the highest real impostor was 0.657 and the lowest genuine
# match 0.674 (a group photo in fake beards). 0.68 keeps a margin over the impostors at the cost of that one.
DEFAULT_THRESHOLD = 0.68
MAX_SELFIE_BYTES = 8 * 1024 * 1024
MAX_SELFIE_PIXELS = 16_000_000
# Guidance thresholds on the components of shared.quality. Lenient: a refused selfie finds nothing, so only a
# hopeless one is refused. On 749 portraits of ../shared/facedata/dev the lowest values were: size 0.57,
# sharpness 0.079, brightness 37; pose was 0 for 1% of them (the landmark yaw estimate is rough), so a turned
# face only earns a hint.
MIN_SIZE = 0.15  # size component: face narrower than ~23 px
MIN_SHARPNESS = 0.05  # Laplacian variance of the aligned crop below ~5: heavily blurred
MIN_BRIGHTNESS = 30.0  # mean grey level of the aligned crop (0..255)
HINT_POSE = 0.2  # |yaw| above ~48 degrees: "look straight at the camera"
SAME_SIZE = 0.8  # a second face at least this fraction of the largest one's width: ambiguous


def to_cosine(similarity: float) -> float:
    """The specification's (cos + 1) / 2 similarity back to cosine."""
    return 2.0 * similarity - 1.0


def to_similarity(cosine: float) -> float:
    return (cosine + 1.0) / 2.0


# How several selfies of one guest are merged (`FaceSearch.search_many`); chosen from `revisit eval search`
# figures (recall_multi / precision_multi of each, README "Event kiosk").
MERGES = ("max", "mean")
MULTI_MERGE = "max"
MAX_SELFIES = 3


class SelfieRejected(RevisitError):
    """No usable face in the selfie: `reason` for programs, the message for the guest."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Selfie:
    face: Face
    faces_seen: int
    notice: str | None = None
    brightness: float = 0.0


@dataclass
class Match:
    photo: Photo
    similarity: float  # (cos + 1) / 2 of the photo's best face
    cosine: float
    face_id: uuid.UUID


@dataclass
class SearchResult:
    matches: list[Match]
    selfie: Selfie
    threshold: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    selfies: int = 1  # how many selfies were merged (`FaceSearch.search_many`)


def pick_face(faces: list[Face], shape: tuple[int, ...]) -> tuple[Face, str | None]:
    """The largest face (nearest the camera); ties in size go to the one nearest the centre."""
    if len(faces) == 1:
        return faces[0], None
    cy, cx = shape[0] / 2, shape[1] / 2
    ranked = sorted(faces, key=lambda f: (-f.width, (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2))
    first, second = ranked[0], ranked[1]
    if second.width >= SAME_SIZE * first.width:
        note = (
            f"{len(faces)} faces are in the picture; we searched for the one nearest the middle. "
            "For the best results, stand alone in front of the camera."
        )
    else:
        note = f"{len(faces)} faces are in the picture; we searched for the largest (nearest) one."
    return first, note


def check_face(face: Face) -> float:
    """Raise SelfieRejected with guidance when the face is too small, too dark or blurred; returns the
    crop's mean brightness."""
    q = face.quality
    assert q is not None and face.crop is not None
    brightness = float(cv2.cvtColor(face.crop, cv2.COLOR_BGR2GRAY).mean())
    if q.size < MIN_SIZE:
        raise SelfieRejected("too_small", "Your face is too small in the picture. Please step closer to the camera.")
    if brightness < MIN_BRIGHTNESS:
        raise SelfieRejected("too_dark", "The picture is too dark. Please face the light and try again.")
    if q.sharpness < MIN_SHARPNESS:
        raise SelfieRejected("blurred", "The picture is blurred. Please hold still and try again.")
    return brightness


class FaceSearch:
    def __init__(
        self, events: Events, engine: FaceEngine, *, threshold: float = DEFAULT_THRESHOLD, max_faces: int = 5000
    ):
        self.events = events
        self.engine = engine
        self.threshold = threshold
        self.max_faces = max_faces

    def selfie(self, data: bytes) -> Selfie:
        """Decode, detect, pick and check the selfie's face, then embed it (in memory only)."""
        try:
            image = decode_image(data, max_pixels=MAX_SELFIE_PIXELS, max_bytes=MAX_SELFIE_BYTES)
        except ImageError as exc:
            raise SelfieRejected("bad_image", f"The picture could not be read ({exc}).") from None
        faces = self.engine.detect(image)
        if not faces:
            raise SelfieRejected("no_face", "No face was found. Please look at the camera, in good light, and retake.")
        face, notice = pick_face(faces, image.shape)
        self.engine.complete(image, [face], embed=False)
        brightness = check_face(face)
        self.engine.complete(image, [face])
        if face.quality is not None and face.quality.pose < HINT_POSE:
            notice = " ".join(filter(None, [notice, "Tip: look straight at the camera for the best results."]))
        return Selfie(face, len(faces), notice, brightness)

    def search(
        self, event_id: uuid.UUID, data: bytes, threshold: float | None = None, limit: int = 200
    ) -> SearchResult:
        """That event's photos in which the selfie's person appears, best first (per-photo best face)."""
        threshold = self.threshold if threshold is None else threshold
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ValueError("threshold is on the (cos + 1) / 2 scale: between 0 and 1")
        t0 = time.perf_counter()
        selfie = self.selfie(data)
        t1 = time.perf_counter()
        matches = self.match(event_id, selfie.face.embedding, selfie.face.recognizer_id or "", threshold, limit)
        t2 = time.perf_counter()
        timings = {"face_ms": round((t1 - t0) * 1000, 1), "search_ms": round((t2 - t1) * 1000, 1)}
        return SearchResult(matches, selfie, threshold, timings)

    def search_many(
        self,
        event_id: uuid.UUID,
        images: list[bytes],
        threshold: float | None = None,
        limit: int = 200,
        merge: str = MULTI_MERGE,
    ) -> SearchResult:
        """Several selfies of one guest (other angles), merged: "max" ranks each photo by its best similarity to
        any selfie, "mean" searches once with the mean of the selfies' embeddings (re-normalised). A refused
        selfie refuses the search, saying which one (the guest retakes it)."""
        if merge not in MERGES:
            raise ValueError(f"merge is one of {', '.join(MERGES)}")
        if len(images) == 1:
            return self.search(event_id, images[0], threshold, limit)
        threshold = self.threshold if threshold is None else threshold
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ValueError("threshold is on the (cos + 1) / 2 scale: between 0 and 1")
        t0 = time.perf_counter()
        selfies = []
        for i, data in enumerate(images):
            try:
                selfies.append(self.selfie(data))
            except SelfieRejected as exc:
                raise SelfieRejected(exc.reason, f"Selfie {i + 1}: {exc.message}") from None
        t1 = time.perf_counter()
        rec = selfies[0].face.recognizer_id or ""
        if merge == "mean":
            mean = np.mean([np.asarray(s.face.embedding, np.float32) for s in selfies], axis=0)
            matches = self.match(event_id, mean / max(float(np.linalg.norm(mean)), 1e-12), rec, threshold, limit)
        else:
            best: dict[uuid.UUID, Match] = {}
            for s in selfies:  # a photo in the merged top `limit` is in the top `limit` of its best selfie
                for m in self.match(event_id, s.face.embedding, rec, threshold, limit):
                    if m.photo.id not in best or m.cosine > best[m.photo.id].cosine:
                        best[m.photo.id] = m
            matches = sorted(best.values(), key=lambda m: -m.cosine)[:limit]
        t2 = time.perf_counter()
        notices = list(dict.fromkeys(s.notice for s in selfies if s.notice))
        first = Selfie(selfies[0].face, selfies[0].faces_seen, " ".join(notices) or None, selfies[0].brightness)
        timings = {"face_ms": round((t1 - t0) * 1000, 1), "search_ms": round((t2 - t1) * 1000, 1)}
        return SearchResult(matches, first, threshold, timings, len(selfies))

    def match(
        self, event_id: uuid.UUID, vector: np.ndarray, recognizer_id: str, threshold: float, limit: int = 200
    ) -> list[Match]:
        hits = self.events.vectors.search(event_id, recognizer_id, vector, to_cosine(threshold), self.max_faces)
        best: dict[uuid.UUID, tuple[float, uuid.UUID]] = {}
        for h in hits:  # best first: the first hit of a photo is its best face
            best.setdefault(h.photo_id, (h.cosine, h.face_id))
        ranked = list(best.items())[:limit]
        photos = self.events.photos_by_id(event_id, [pid for pid, _ in ranked])
        return [
            Match(photos[pid], round(to_similarity(cos), 4), round(cos, 4), fid)
            for pid, (cos, fid) in ranked
            if pid in photos
        ]

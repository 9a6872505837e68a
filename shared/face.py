"""The face engine's record: `Face`, filled in stage by stage (detector → quality → alignment → embedder).

The edge tracks and picks shots with it and sends a track's best as a `schema.Observation` (its embedding, box,
crop and `Quality` as `QualityFields`); central stores that as a `Sighting`. The kiosk indexes photos with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Quality:
    """Quality components, each in [0, 1], and their combination (see `revisit.shared.quality`)."""

    detector: float
    size: float
    sharpness: float
    pose: float
    score: float
    # Raw measurements behind the components, for display and tuning.
    face_px: float = 0.0
    laplacian_var: float = 0.0
    yaw_deg: float = 0.0
    roll_deg: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class Face:
    """A detected face in image pixels, filled in by each stage of the engine.

    box: x1, y1, x2, y2; landmarks: 5 x (x, y) in the order left eye, right eye, nose, left and
    right mouth corner (left/right as seen in the image); crop: the 112x112 BGR ArcFace-aligned
    face; embedding: L2-normalised float32, comparable only with embeddings of `recognizer_id`.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    quality: Quality | None = None
    crop: np.ndarray | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    recognizer_id: str | None = None

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2

    def similarity(self, other: Face) -> float:
        """Cosine similarity of two embedded faces of the same recognizer."""
        if self.embedding is None or other.embedding is None:
            raise ValueError("both faces need embeddings")
        if self.recognizer_id != other.recognizer_id:
            raise ValueError(f"embeddings of {self.recognizer_id} and {other.recognizer_id} are not comparable")
        return float(np.dot(self.embedding, other.embedding))

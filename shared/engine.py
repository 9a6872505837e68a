"""The face engine: detect, align, assess quality and embed, producing `Face` records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from revisit.models import store
from revisit.models.manifest import Manifest
from revisit.shared.align import align_face
from revisit.shared.backends import create_backend
from revisit.shared.config import EngineConfig
from revisit.shared.detect import Detector, create_detector
from revisit.shared.embed import Embedder
from revisit.shared.face import Face
from revisit.shared.quality import assess


class FaceEngine:
    def __init__(self, config: EngineConfig | None = None, models_dir: str | Path | None = None):
        self.config = config or EngineConfig()
        self.manifest = Manifest.load(custom=self.config.custom_models)
        directory = models_dir or self.config.models_dir
        det_spec = self.manifest.get(self.config.detector.model, "detector")
        rec_spec = self.manifest.get(self.config.recognizer, "recognizer")
        det_model = store.resolve(det_spec, directory)
        rec_model = store.resolve(rec_spec, directory)
        self.backend = create_backend(self.config.backend)
        self.detector: Detector = create_detector(self.backend.load(det_model), det_spec, self.config.detector)
        self.embedder = Embedder(self.backend.load(rec_model), rec_spec, self.config.embed_batch)

    @property
    def recognizer_id(self) -> str:
        return self.embedder.model_id

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detector.detect(image)

    def detect_many(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces of each image: one detector call for all where the backend gains from it, else one each."""
        return self.detector.detect_many(images)

    def complete(self, image: np.ndarray, faces: list[Face], embed: bool = True) -> list[Face]:
        """Align each face, assess its quality and (optionally) embed all of them in one batch."""
        for face in faces:
            face.crop = align_face(image, face.landmarks)
            face.quality = assess(face.score, face.box, face.landmarks, face.crop)
        if embed and faces:
            vectors = self.embedder.embed([f.crop for f in faces])
            for face, vec in zip(faces, vectors, strict=True):
                face.embedding = vec
                face.recognizer_id = self.recognizer_id
        return faces

    def analyze(self, image: np.ndarray, embed: bool = True) -> list[Face]:
        return self.complete(image, self.detect(image), embed)


def central_face(faces: list[Face], image_shape: tuple[int, ...]) -> Face | None:
    """The face whose centre is nearest the image centre (the labelled face of a portrait)."""
    if not faces:
        return None
    cy, cx = image_shape[0] / 2, image_shape[1] / 2
    return min(faces, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2)

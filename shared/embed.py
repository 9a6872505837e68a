"""The recognizer: aligned 112x112 crops in, L2-normalised embeddings out, in batches."""

from __future__ import annotations

import cv2
import numpy as np

from revisit.models.manifest import ModelSpec
from revisit.shared.backends.base import Session
from revisit.shared.errors import BackendError


class Embedder:
    def __init__(self, session: Session, spec: ModelSpec, batch_size: int = 32):
        self.session = session
        self.spec = spec
        self.model_id = spec.model_id
        self.dim = int(spec.embedding_dim or 0)
        self.batch_size = batch_size

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """[N, dim] float32, each row of unit length; rows follow `crops`."""
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start : start + self.batch_size]
            blob = cv2.dnn.blobFromImages(batch, 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
            raw = next(iter(self.session.run(blob).values()))
            out.append(np.asarray(raw, dtype=np.float32).reshape(len(batch), -1))
        emb = np.vstack(out)
        if emb.shape[1] != self.dim:
            raise BackendError(f"{self.model_id} produced {emb.shape[1]}-d embeddings; the manifest says {self.dim}")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if not np.all(np.isfinite(emb)) or np.any(norms == 0):
            raise BackendError(f"{self.model_id} produced non-finite or zero embeddings")
        return (emb / norms).astype(np.float32)

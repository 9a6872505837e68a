"""The peer we compare against: the `face_recognition` library (dlib), imported only when asked for.

Install it with `pip install 'revisit[peer]'` and then `pip install --no-deps face_recognition` (as the
Makefile does), so pip never tries to build dlib from source.
"""

from __future__ import annotations

import importlib.util
import warnings
from types import ModuleType

import numpy as np

from revisit.shared.errors import RevisitError

PEERS = ("face_recognition",)
INSTALL_HINT = "install it with: pip install 'revisit[peer]' && pip install --no-deps 'face_recognition>=1.3,<2'"


def _import_face_recognition() -> ModuleType:
    # face_recognition calls quit() when face_recognition_models is missing, so look before importing.
    for module in ("dlib", "face_recognition_models", "face_recognition"):
        if importlib.util.find_spec(module) is None:
            raise RevisitError(f"the face_recognition peer needs the '{module}' package; {INSTALL_HINT}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation warnings from face_recognition_models
        try:
            import face_recognition
        except (ImportError, SystemExit) as exc:
            raise RevisitError(f"cannot import face_recognition ({exc}); {INSTALL_HINT}") from None
    return face_recognition


class FaceRecognitionPeer:
    """face_recognition with its defaults: HOG detector upsampling once, the 5-point landmark model,
    one jitter, 128-d dlib ResNet encodings compared by Euclidean distance."""

    name = "face_recognition"

    def __init__(self, upsample: int = 1):
        self.fr = _import_face_recognition()
        self.upsample = upsample

    def encode(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """The encoding of the face nearest the image centre, or None when no face is found."""
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1], dtype=np.uint8)
        locations = self.fr.face_locations(rgb, number_of_times_to_upsample=self.upsample, model="hog")
        if not locations:
            return None
        cy, cx = rgb.shape[0] / 2, rgb.shape[1] / 2
        # locations are (top, right, bottom, left)
        loc = min(locations, key=lambda b: ((b[1] + b[3]) / 2 - cx) ** 2 + ((b[0] + b[2]) / 2 - cy) ** 2)
        encodings = self.fr.face_encodings(rgb, known_face_locations=[loc])
        return np.asarray(encodings[0], dtype=np.float64) if encodings else None

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        """Negative Euclidean distance: face_recognition compares by distance, so higher is more similar."""
        return -float(np.linalg.norm(a - b))


def create_peer(name: str) -> FaceRecognitionPeer:
    if name != "face_recognition":
        raise RevisitError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}")
    return FaceRecognitionPeer()

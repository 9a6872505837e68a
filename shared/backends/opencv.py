"""OpenCV DNN: the fallback backend; needs no package beyond OpenCV."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from revisit.models.store import ResolvedModel
from revisit.shared.backends.base import Backend, BackendConfig, Session
from revisit.shared.errors import BackendError


class OpenCVConfig(BackendConfig):
    type: Literal["opencv"] = "opencv"


class OpenCVSession(Session):
    def __init__(self, net):
        self._net = net
        self.input_name = ""
        self.output_names = list(net.getUnconnectedOutLayersNames())

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        self._net.setInput(np.ascontiguousarray(tensor, dtype=np.float32))
        outputs = self._net.forward(self.output_names)
        return dict(zip(self.output_names, outputs, strict=True))


class OpenCVBackend(Backend):
    key = "opencv"
    config: OpenCVConfig

    def load(self, model: ResolvedModel) -> Session:
        try:
            net = cv2.dnn.readNetFromONNX(str(model.path))
        except cv2.error as exc:
            raise BackendError(f"OpenCV DNN cannot load {model.path}: {exc}") from exc
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        return OpenCVSession(net)

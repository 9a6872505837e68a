"""OpenCV DNN: the fallback backend; needs no package beyond OpenCV.

A cv2.dnn.Net keeps its input and buffers in the net itself (`setInput`, then `forward`), so one net cannot
run two inputs at once: a session serialises its runs with a lock (two threads on one session get their
own outputs, one after the other).
"""

from __future__ import annotations

import threading
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
        self._lock = threading.Lock()

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        blob = np.ascontiguousarray(tensor, dtype=np.float32)
        with self._lock:  # setInput + forward are one step on the shared net
            self._net.setInput(blob)
            outputs = self._net.forward(self.output_names)
            # forward may hand back views of the net's buffers, which the next run overwrites
            return {name: np.array(out, copy=True) for name, out in zip(self.output_names, outputs, strict=True)}


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

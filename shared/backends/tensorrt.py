"""TensorRT (Jetson, NVIDIA GPUs). Placeholder replaced by the real plugin in the next commit."""

from __future__ import annotations

from typing import Literal

from revisit.models.store import ResolvedModel
from revisit.shared.backends.base import Backend, BackendConfig, Session
from revisit.shared.errors import BackendError


class TensorRTConfig(BackendConfig):
    type: Literal["tensorrt"] = "tensorrt"


class TensorRTBackend(Backend):
    key = "tensorrt"

    def load(self, model: ResolvedModel) -> Session:
        raise BackendError("tensorrt backend not implemented yet")

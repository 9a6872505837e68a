"""ONNX Runtime on the CPU: the default backend."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from revisit.models.store import ResolvedModel
from revisit.shared.backends.base import Backend, BackendConfig, Session
from revisit.shared.errors import BackendError


class OnnxRuntimeConfig(BackendConfig):
    type: Literal["onnxruntime"] = "onnxruntime"
    threads: int = Field(0, ge=0, le=256, description="intra-op threads; 0 = one per core")
    # Spinning threads burn CPU between calls; with several models on 2 cores it costs ~30%.
    spinning: bool = False


class OnnxRuntimeSession(Session):
    def __init__(self, session):
        self._session = session
        self.input_name = session.get_inputs()[0].name
        shape = session.get_inputs()[0].shape
        self.batch_dim = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._session.run(self.output_names, {self.input_name: tensor})
        return dict(zip(self.output_names, outputs, strict=True))


class OnnxRuntimeBackend(Backend):
    key = "onnxruntime"
    config: OnnxRuntimeConfig

    def load(self, model: ResolvedModel) -> Session:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # dynamic-shape models declare stale output sizes; not our problem
        if self.config.threads:
            options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.config.spinning else "0")
        try:
            session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise BackendError(f"onnxruntime cannot load {model.path}: {exc}") from exc
        return OnnxRuntimeSession(session)

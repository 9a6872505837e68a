"""Inference backends as plugins: one file each, one config class each, one registry.

Adding a backend means adding a module with a `*Config` (whose `type` is a Literal of its key) and a
`Backend` subclass, and naming both below. Heavy imports (tensorrt, cuda) happen only in `load`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from revisit.shared.backends.base import Backend, BackendConfig, Session
from revisit.shared.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from revisit.shared.backends.opencv import OpenCVBackend, OpenCVConfig
from revisit.shared.backends.tensorrt import TensorRTBackend, TensorRTConfig

AnyBackendConfig = Annotated[OnnxRuntimeConfig | OpenCVConfig | TensorRTConfig, Field(discriminator="type")]

BACKENDS: dict[str, type[Backend]] = {cls.key: cls for cls in (OnnxRuntimeBackend, OpenCVBackend, TensorRTBackend)}


def create_backend(config: BackendConfig) -> Backend:
    return BACKENDS[config.type](config)


__all__ = ["AnyBackendConfig", "Backend", "BackendConfig", "Session", "create_backend", "BACKENDS"]

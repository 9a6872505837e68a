"""The one small interface every inference backend implements.

A backend turns a verified model file into a `Session`; a session maps named float32 inputs to
named outputs. Detectors and the embedder only ever talk to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from revisit.models.store import ResolvedModel


class BackendConfig(BaseModel):
    """Base of each plugin's configuration; plugins narrow `type` to a Literal of their key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str


class Session(ABC):
    """One loaded model. `run` returns every output by name, in graph order."""

    input_name: str
    output_names: list[str]
    # Whether one call on a batch of N beats N calls (GPUs: yes). Measured with ONNX Runtime on CPU, a batch
    # of 4 detector inputs cost 14-27% more CPU than 4 calls (README, "Edge benchmark"), so CPU backends say no.
    prefers_batches: bool = False
    # The input's declared batch dimension: 1 = fixed (no batch can be run), None = dynamic or not known.
    batch_dim: int | None = None

    @abstractmethod
    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on one float32 NCHW tensor."""


class Backend(ABC):
    key: ClassVar[str]

    def __init__(self, config: BackendConfig):
        self.config = config

    @abstractmethod
    def load(self, model: ResolvedModel) -> Session:
        """Load a verified model; raise BackendError with a clear reason when it cannot."""

    def describe(self) -> str:
        return self.key

"""Typed configuration of the face engine. Unknown keys are errors that name the key."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from revisit.models.manifest import CustomModel
from revisit.shared.backends import AnyBackendConfig
from revisit.shared.backends.onnxruntime import OnnxRuntimeConfig
from revisit.shared.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSConfig(Strict):
    ca: Path = Field(description="CA certificate that signed the broker's certificate")
    cert: Path | None = Field(None, description="this client's certificate (mutual TLS)")
    key: Path | None = Field(None, description="this client's private key")
    insecure_skip_verify: bool = Field(False, description="never in production: accept any broker certificate")

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together")
        return self


class BrokerConnection(Strict):
    """How an MQTT client (an edge daemon, a central worker) reaches the broker."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: TLSConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_inflight: int = Field(20, ge=1, le=1000, description="messages in flight and not yet acknowledged")


class DetectorSettings(Strict):
    model: str = Field("scrfd_2.5g_kps", description="a detector from the manifest or custom_models")
    score_threshold: float = Field(0.5, gt=0, lt=1)
    nms_threshold: float = Field(0.4, gt=0, lt=1)
    max_side: int = Field(
        640, ge=64, le=4096, description="larger images are shrunk to fit; smaller ones run at their own size"
    )
    min_face_px: float = Field(0, ge=0, description="drop faces narrower than this (pixels of the input image)")
    closeup_retry: bool = Field(
        True,
        description="when nothing is found, retry with the image shrunk onto a "
        "larger canvas: finds faces that fill the frame (kiosk selfies)",
    )


class EngineConfig(Strict):
    detector: DetectorSettings = DetectorSettings()
    recognizer: str = Field("w600k_mbf", description="a recognizer from the manifest or custom_models")
    backend: AnyBackendConfig = OnnxRuntimeConfig()
    models_dir: Path | None = Field(None, description="default: --models DIR, else $REVISIT_MODELS")
    custom_models: list[CustomModel] = []
    embed_batch: int = Field(32, ge=1, le=256)


def load_toml(path: str | Path, model: type[BaseModel], section: str | None = None) -> BaseModel:
    """Parse a TOML file (or one table of it) into `model`, turning every problem into a ConfigError."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if section is not None:
        data = data.get(section, {})
    return validate(model, data, str(path))


def validate(model: type[BaseModel], data: dict, where: str = "config") -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {loc}: {msg}")
        raise ConfigError(f"{where}: invalid configuration\n" + "\n".join(lines)) from None

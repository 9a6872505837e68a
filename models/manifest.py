"""The model manifest: which models Revisit knows, what family each is, and how to verify it.

Models are declared, never guessed from their shapes. Users add their own weights of a known
family (path + sha256) through configuration; they join the same registry.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from revisit.shared.errors import ModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

Role = Literal["detector", "recognizer"]
Family = Literal["scrfd", "yunet", "arcface"]
FAMILY_ROLE: dict[str, Role] = {"scrfd": "detector", "yunet": "detector", "arcface": "recognizer"}


class Source(BaseModel):
    """Where an upstream original can be downloaded: a file, or a member of a zip archive."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str
    member: str | None = Field(None, description="path of the model inside a zip archive")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    role: Role
    family: Family
    file: str = Field(description="file name inside the model directory, or an absolute path")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(None, gt=0)
    input: str = ""
    embedding_dim: int | None = Field(None, gt=0)
    licence: str = "unknown: check before commercial use"
    upstream: str = ""
    default: bool = False
    source: Source | None = None

    @field_validator("sha256", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    def model_post_init(self, _ctx: object) -> None:
        if FAMILY_ROLE[self.family] != self.role:
            kind = FAMILY_ROLE[self.family]
            raise ValueError(f"model {self.name}: family {self.family} is a {kind}, not a {self.role}")
        if self.role == "recognizer" and self.embedding_dim is None:
            raise ValueError(f"model {self.name}: a recognizer needs embedding_dim")

    @property
    def model_id(self) -> str:
        """Stable id: name + hash prefix. Embeddings carry the id of the recognizer that made them."""
        return f"{self.name}@{self.sha256[:12]}"


class CustomModel(BaseModel):
    """A user's own weights of a known family, registered in configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    family: Family
    path: Path
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    embedding_dim: int | None = Field(None, gt=0)
    licence: str = "user-supplied"

    def to_spec(self) -> ModelSpec:
        dim = self.embedding_dim if self.embedding_dim is not None else (512 if self.family == "arcface" else None)
        return ModelSpec(
            name=self.name,
            role=FAMILY_ROLE[self.family],
            family=self.family,
            file=str(self.path),
            sha256=self.sha256.lower(),
            embedding_dim=dim,
            licence=self.licence,
            upstream="registered in configuration",
        )


class Manifest:
    """All known models by name: the packaged manifest plus custom models."""

    def __init__(self, specs: list[ModelSpec]):
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ModelError(f"model name {spec.name!r} is declared twice; custom models need their own names")
            self._specs[spec.name] = spec

    @classmethod
    def load(cls, path: Path | None = None, custom: list[CustomModel] | None = None) -> Manifest:
        if path is None:
            text = resources.files("revisit.models").joinpath("manifest.toml").read_text()
            where = "packaged manifest"
        else:
            text, where = Path(path).read_text(), str(path)
        try:
            data = tomllib.loads(text)
            specs = [ModelSpec(**entry) for entry in data.get("models", {}).values()]
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise ModelError(f"invalid model manifest ({where}): {exc}") from exc
        specs += [c.to_spec() for c in custom or []]
        return cls(specs)

    def __iter__(self):
        return iter(self._specs.values())

    def get(self, name: str, role: Role | None = None) -> ModelSpec:
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(sorted(s.name for s in self if role is None or s.role == role))
            raise ModelError(f"unknown model {name!r}; known {role or 'model'}s: {known}")
        if role is not None and spec.role != role:
            raise ModelError(f"model {name!r} is a {spec.role}, not a {role}")
        return spec

    def default(self, role: Role) -> ModelSpec:
        for spec in self:
            if spec.role == role and spec.default:
                return spec
        raise ModelError(f"the manifest declares no default {role}")

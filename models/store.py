"""Finding model files and verifying them by sha256 before anything loads them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from revisit.models.manifest import ModelSpec
from revisit.shared.errors import ModelError

ENV_VAR = "REVISIT_MODELS"
_CHUNK = 1 << 20


def models_dir(explicit: str | Path | None = None) -> Path:
    """The model directory: `--models DIR`, else $REVISIT_MODELS, else ./models-data."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("models-data")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec together with a file that was verified against it."""

    spec: ModelSpec
    path: Path

    @property
    def model_id(self) -> str:
        return self.spec.model_id


def model_path(spec: ModelSpec, directory: Path) -> Path:
    file = Path(spec.file)
    return file if file.is_absolute() else directory / file


def resolve(spec: ModelSpec, directory: str | Path | None = None) -> ResolvedModel:
    """Locate `spec`'s file and check its sha256; a clear ModelError names the file and both hashes."""
    path = model_path(spec, models_dir(directory))
    if not path.is_file():
        hint = f"set --models DIR or ${ENV_VAR}, or run `revisit models fetch {spec.name}`"
        raise ModelError(f"model {spec.name}: file {path} not found ({hint})")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelError(f"model {spec.name}: cannot read {path}: {exc}") from exc
    if actual != spec.sha256:
        raise ModelError(
            f"model {spec.name}: {path} has sha256 {actual}, expected {spec.sha256} "
            "(corrupt or a different version; fetch it again or register it as a custom model)"
        )
    return ResolvedModel(spec, path)


def status(spec: ModelSpec, directory: str | Path | None = None) -> str:
    """'verified', 'missing' or 'hash mismatch' for `revisit models list`."""
    path = model_path(spec, models_dir(directory))
    if not path.is_file():
        return "missing"
    return "verified" if sha256_file(path) == spec.sha256 else "hash mismatch"

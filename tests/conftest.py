"""Shared fixtures. Real models and photos come from ../shared (never from the repo); tests that need
them skip with a clear message when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _dir_from_env(var: str, default: Path) -> Path:
    return Path(os.environ.get(var) or default)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Directory with the real ONNX models ($REVISIT_MODELS, else ../shared/models)."""
    path = _dir_from_env("REVISIT_MODELS", SHARED / "models")
    if not (path / "w600k_mbf.onnx").is_file():
        pytest.skip(f"real models not found in {path}: set REVISIT_MODELS to a directory with the model files")
    return path


@pytest.fixture(scope="session")
def facedata() -> Path:
    """Directory of labelled photos with labels.csv ($REVISIT_FACEDATA, else ../shared/facedata/dev)."""
    path = _dir_from_env("REVISIT_FACEDATA", SHARED / "facedata" / "dev")
    if not (path / "labels.csv").is_file():
        pytest.skip(f"labelled face data not found in {path}: set REVISIT_FACEDATA to a directory with labels.csv")
    return path


@pytest.fixture(scope="session")
def engine(models_dir):
    """The default face engine on the real models (SCRFD-2.5G + w600k_mbf, ONNX Runtime)."""
    from revisit.shared.engine import FaceEngine

    return FaceEngine(models_dir=models_dir)

"""Locating model files and verifying them by sha256."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from revisit.models import store
from revisit.models.manifest import Manifest, ModelSpec
from revisit.shared.errors import ModelError


def small_model(tmp_path: Path, data: bytes = b"not really an onnx model " * 40) -> ModelSpec:
    (tmp_path / "small.onnx").write_bytes(data)
    return ModelSpec(
        name="small",
        role="detector",
        family="scrfd",
        file="small.onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )


def flip_byte(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.models
def test_resolve_real_models(models_dir):
    for spec in Manifest.load():
        resolved = store.resolve(spec, models_dir)
        assert resolved.path == models_dir / spec.file
        assert resolved.model_id == spec.model_id
        assert store.status(spec, models_dir) == "verified"


@pytest.mark.models
def test_corrupt_copy_of_a_real_model(models_dir, tmp_path):
    spec = Manifest.load().get("yunet")
    shutil.copy(models_dir / spec.file, tmp_path / spec.file)
    assert store.resolve(spec, tmp_path).path == tmp_path / spec.file
    flip_byte(tmp_path / spec.file, 1000)
    actual = store.sha256_file(tmp_path / spec.file)
    with pytest.raises(ModelError) as info:
        store.resolve(spec, tmp_path)
    message = str(info.value)
    assert str(tmp_path / spec.file) in message
    assert actual in message and spec.sha256 in message


def test_missing_file_names_the_file_and_the_options(tmp_path):
    spec = Manifest.load().get("w600k_mbf")
    with pytest.raises(ModelError) as info:
        store.resolve(spec, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "w600k_mbf.onnx") in message
    assert "--models" in message and "REVISIT_MODELS" in message
    assert "revisit models fetch w600k_mbf" in message
    assert store.status(spec, tmp_path) == "missing"


def test_small_model_verifies_then_mismatches(tmp_path):
    spec = small_model(tmp_path)
    assert store.resolve(spec, tmp_path).path == tmp_path / "small.onnx"
    assert store.status(spec, tmp_path) == "verified"
    flip_byte(tmp_path / "small.onnx")
    actual = store.sha256_file(tmp_path / "small.onnx")
    assert actual != spec.sha256
    with pytest.raises(ModelError) as info:
        store.resolve(spec, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "small.onnx") in message
    assert actual in message and spec.sha256 in message
    assert store.status(spec, tmp_path) == "hash mismatch"


def test_a_directory_is_not_a_model_file(tmp_path):
    spec = small_model(tmp_path)
    (tmp_path / "small.onnx").unlink()
    (tmp_path / "small.onnx").mkdir()
    assert store.status(spec, tmp_path) == "missing"
    with pytest.raises(ModelError, match="not found"):
        store.resolve(spec, tmp_path)


def test_absolute_file_ignores_the_directory(tmp_path):
    spec = small_model(tmp_path)
    absolute = spec.model_copy(update={"file": str(tmp_path / "small.onnx")})
    other = tmp_path / "elsewhere"
    assert store.resolve(absolute, other).path == tmp_path / "small.onnx"
    assert store.model_path(absolute, other) == tmp_path / "small.onnx"
    assert store.model_path(spec, other) == other / "small.onnx"


def test_models_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(store.ENV_VAR, raising=False)
    assert store.models_dir() == Path("models-data")
    assert store.models_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "env"))
    assert store.models_dir() == tmp_path / "env"
    assert store.models_dir(None) == tmp_path / "env"
    assert store.models_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"  # explicit beats env
    monkeypatch.setenv(store.ENV_VAR, "")
    assert store.models_dir() == Path("models-data")  # empty variable means unset
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.models_dir("~/m") == tmp_path / "m"


def test_resolve_uses_the_environment(monkeypatch, tmp_path):
    spec = small_model(tmp_path)
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path))
    assert store.resolve(spec).path == tmp_path / "small.onnx"
    monkeypatch.setenv(store.ENV_VAR, os.fspath(tmp_path / "empty"))
    assert store.status(spec) == "missing"

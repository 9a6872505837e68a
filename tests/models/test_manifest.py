"""The model manifest: the packaged models, strict parsing, and custom models joining the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from revisit.models.manifest import CustomModel, Manifest, ModelSpec
from revisit.shared.errors import ModelError

SHA = "ab" * 32


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return path


def entry(key: str = "m", role: str = "detector", family: str = "scrfd", extra: str = "") -> str:
    return (
        f'[models.{key}]\nname = "{key}"\nrole = "{role}"\nfamily = "{family}"\nfile = "{key}.onnx"\n'
        f'sha256 = "{SHA}"\n{extra}\n'
    )


def test_packaged_manifest_has_the_known_models():
    manifest = Manifest.load()
    names = {spec.name for spec in manifest}
    assert {"scrfd_2.5g_kps", "scrfd_500m_kps", "yunet", "w600k_mbf"} <= names
    assert manifest.default("detector").name == "scrfd_2.5g_kps"
    recognizer = manifest.default("recognizer")
    assert recognizer.name == "w600k_mbf"
    assert recognizer.embedding_dim == 512
    assert re.fullmatch(r"w600k_mbf@[0-9a-f]{12}", recognizer.model_id)
    assert recognizer.model_id == f"w600k_mbf@{recognizer.sha256[:12]}"
    for spec in manifest:
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert spec.size and spec.size > 0
        assert spec.licence
    assert manifest.get("yunet").family == "yunet"
    assert manifest.get("scrfd_500m_kps", "detector").role == "detector"


def test_packaged_sources():
    manifest = Manifest.load()
    assert manifest.get("scrfd_2.5g_kps").source.member == "det_2.5g.onnx"
    assert manifest.get("yunet").source.member is None
    assert manifest.get("w600k_mbf").source is None  # rebuilt file: no upstream download


def test_test_manifest_loads(tmp_path):
    text = entry("det") + entry("rec", "recognizer", "arcface", "embedding_dim = 128\ndefault = true")
    manifest = Manifest.load(write(tmp_path, text))
    assert manifest.get("rec", "recognizer").embedding_dim == 128
    assert manifest.default("recognizer").name == "rec"
    with pytest.raises(ModelError, match="no default detector"):
        manifest.default("detector")


@pytest.mark.parametrize("extra", ["bogus_key = 1", '[models.m.source]\nurl = "http://x/y"\nbogus_key = "z"'])
def test_unknown_keys_are_errors_naming_the_key(tmp_path, extra):
    with pytest.raises(ModelError, match="bogus_key"):
        Manifest.load(write(tmp_path, entry(extra=extra)))


def test_invalid_toml_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="invalid model manifest"):
        Manifest.load(write(tmp_path, "[models.m\nname = 1"))


def test_family_role_mismatch_is_refused(tmp_path):
    with pytest.raises(ModelError, match="family arcface is a recognizer, not a detector"):
        Manifest.load(write(tmp_path, entry(role="detector", family="arcface", extra="embedding_dim = 512")))
    with pytest.raises(ValidationError, match="family yunet is a detector"):
        ModelSpec(name="x", role="recognizer", family="yunet", file="x.onnx", sha256=SHA, embedding_dim=512)


def test_recognizer_needs_embedding_dim(tmp_path):
    with pytest.raises(ModelError, match="embedding_dim"):
        Manifest.load(write(tmp_path, entry(role="recognizer", family="arcface")))


def test_bad_fields_are_refused(tmp_path):
    with pytest.raises(ModelError, match="sha256"):
        Manifest.load(write(tmp_path, entry().replace(SHA, "nothex")))
    with pytest.raises(ModelError, match="name"):
        Manifest.load(write(tmp_path, entry().replace('name = "m"', 'name = "a b/c"')))


def test_sha256_is_lowercased():
    spec = ModelSpec(name="x", role="detector", family="scrfd", file="x.onnx", sha256=SHA.upper())
    assert spec.sha256 == SHA


def test_custom_models_join_the_registry(tmp_path):
    custom = [
        CustomModel(name="my_rec", family="arcface", path=tmp_path / "mine.onnx", sha256=SHA.upper()),
        CustomModel(name="my_det", family="yunet", path=tmp_path / "det.onnx", sha256=SHA),
    ]
    manifest = Manifest.load(custom=custom)
    rec = manifest.get("my_rec", "recognizer")
    assert rec.role == "recognizer" and rec.family == "arcface"
    assert rec.embedding_dim == 512  # arcface default
    assert rec.sha256 == SHA
    assert Path(rec.file) == tmp_path / "mine.onnx"
    assert rec.model_id == f"my_rec@{SHA[:12]}"
    assert manifest.get("my_det", "detector").embedding_dim is None
    assert manifest.get("w600k_mbf").name == "w600k_mbf"  # packaged models stay


def test_duplicate_names_are_refused(tmp_path):
    with pytest.raises(ModelError, match="'yunet' is declared twice"):
        Manifest.load(custom=[CustomModel(name="yunet", family="yunet", path=tmp_path / "y", sha256=SHA)])
    spec = ModelSpec(name="x", role="detector", family="scrfd", file="x.onnx", sha256=SHA)
    with pytest.raises(ModelError, match="declared twice"):
        Manifest([spec, spec])


def test_custom_model_unknown_keys_and_families_are_refused(tmp_path):
    with pytest.raises(ValidationError):
        CustomModel(name="x", family="facenet", path=tmp_path, sha256=SHA)
    with pytest.raises(ValidationError, match="colour"):
        CustomModel(name="x", family="arcface", path=tmp_path, sha256=SHA, colour="red")


def test_get_unknown_lists_known_names():
    manifest = Manifest.load()
    with pytest.raises(ModelError) as info:
        manifest.get("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in ("scrfd_2.5g_kps", "scrfd_500m_kps", "yunet", "w600k_mbf"):
        assert name in message
    with pytest.raises(ModelError) as info:
        manifest.get("nope", "recognizer")
    assert "known recognizers: w600k_mbf" in str(info.value)
    assert "yunet" not in str(info.value)


def test_get_wrong_role():
    with pytest.raises(ModelError, match="'yunet' is a detector, not a recognizer"):
        Manifest.load().get("yunet", "recognizer")

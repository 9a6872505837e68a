"""The whole engine on real photos: embeddings separate people; bad models and images fail clearly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from revisit.models.manifest import CustomModel
from revisit.models.store import sha256_file
from revisit.shared.config import EngineConfig
from revisit.shared.engine import FaceEngine, central_face
from revisit.shared.errors import BackendError, ModelError
from revisit.shared.image import read_image


def _photos(facedata, n_people=6, per_person=2):
    """(identity, path) for the first people with at least `per_person` photos."""
    out = []
    for folder in sorted((facedata / "photos").iterdir()):
        files = sorted(folder.glob("*.jpg"))
        if folder.name.startswith("_") or len(files) < per_person:
            continue
        out += [(folder.name, f) for f in files[:per_person]]
        if len(out) >= n_people * per_person:
            break
    return out


def test_faces_are_complete_records(engine, facedata):
    identity, path = _photos(facedata, 1, 1)[0]
    image = read_image(path)
    face = central_face(engine.analyze(image), image.shape)
    assert face is not None
    assert face.crop.shape == (112, 112, 3)
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert np.linalg.norm(face.embedding) == pytest.approx(1, abs=1e-5)
    assert face.recognizer_id == engine.recognizer_id and face.recognizer_id.startswith("w600k_mbf@")
    assert 0 < face.quality.score <= 1


def test_same_person_closer_than_different(engine, facedata):
    items = _photos(facedata, 6, 2)
    embs = {}
    for identity, path in items:
        image = read_image(path)
        embs.setdefault(identity, []).append(central_face(engine.analyze(image), image.shape).embedding)
    same = [float(a @ b) for a, b in embs.values()]
    ids = list(embs)
    diff = [float(embs[a][0] @ embs[b][0]) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    assert min(same) > max(diff), (same, diff)
    assert np.mean(same) > 0.45 and np.mean(diff) < 0.2


def test_embedding_batch_equals_single(engine, facedata):
    crops = []
    for _, path in _photos(facedata, 3, 1):
        image = read_image(path)
        crops.append(central_face(engine.analyze(image, embed=False), image.shape).crop)
    batch = engine.embedder.embed(crops)
    singles = np.vstack([engine.embedder.embed([c]) for c in crops])
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    assert engine.embedder.embed([]).shape == (0, 512)


def test_opencv_backend_gives_same_embeddings(models_dir, engine, facedata):
    other = FaceEngine(EngineConfig(backend={"type": "opencv"}), models_dir)
    image = read_image(_photos(facedata, 1, 1)[0][1])
    a = central_face(engine.analyze(image), image.shape)
    b = central_face(other.analyze(image), image.shape)
    assert float(a.embedding @ b.embedding) > 0.999


def test_image_without_face_gives_empty_list(engine):
    assert engine.analyze(np.full((200, 300, 3), 90, np.uint8)) == []


def test_missing_model_is_clear(tmp_path):
    with pytest.raises(ModelError, match=r"scrfd_2\.5g_kps.*not found.*REVISIT_MODELS"):
        FaceEngine(models_dir=tmp_path)


def test_wrong_hash_names_file_and_both_hashes(tmp_path, models_dir):
    for name in ("scrfd_2.5g_kps.onnx", "w600k_mbf.onnx"):
        shutil.copy(models_dir / name, tmp_path / name)
    target = tmp_path / "w600k_mbf.onnx"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.chmod(0o644)
    target.write_bytes(bytes(data))
    actual = sha256_file(target)
    with pytest.raises(ModelError) as info:
        FaceEngine(models_dir=tmp_path)
    message = str(info.value)
    assert str(target) in message and actual in message and "5e03a553209a03fd" in message


def test_corrupt_custom_model_fails_at_load(tmp_path, models_dir):
    bogus = tmp_path / "mine.onnx"
    bogus.write_bytes(b"this is not an onnx graph")
    custom = CustomModel(name="mine", family="arcface", path=bogus, sha256=sha256_file(bogus))
    config = EngineConfig(recognizer="mine", custom_models=[custom])
    with pytest.raises(BackendError, match="cannot load"):
        FaceEngine(config, models_dir)


def test_custom_model_gets_its_own_recognizer_id(tmp_path, models_dir):
    copy = tmp_path / "my_arcface.onnx"
    shutil.copy(models_dir / "w600k_mbf.onnx", copy)
    custom = CustomModel(name="my_arcface", family="arcface", path=copy, sha256=sha256_file(copy))
    engine = FaceEngine(EngineConfig(recognizer="my_arcface", custom_models=[custom]), models_dir)
    assert engine.recognizer_id.startswith("my_arcface@")

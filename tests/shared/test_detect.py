"""Detector decoders (hand-made outputs) and the real detectors on real photos."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from revisit.models.manifest import Manifest
from revisit.shared.backends.base import Session
from revisit.shared.config import DetectorSettings, EngineConfig
from revisit.shared.detect import SCRFD, YuNet
from revisit.shared.engine import FaceEngine, central_face
from revisit.shared.errors import BackendError
from revisit.shared.image import read_image


class Canned(Session):
    """A session that returns fixed outputs: exercises decoding alone."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.input_name = "input"
        self.output_names = []
        self.shapes = []

    def run(self, tensor):
        self.shapes.append(tensor.shape)
        return self.outputs(*tensor.shape[2:]) if callable(self.outputs) else self.outputs


def _scrfd_outputs(h, w, hit_stride, hit_index, dist, kps):
    outs = {}
    for kind, width in (("score", 1), ("box", 4), ("kps", 10)):
        for s in (8, 16, 32):
            n = (h // s) * (w // s) * 2
            a = np.zeros((n, width), np.float32)
            if s == hit_stride:
                a[hit_index] = {"score": [0.9], "box": dist, "kps": kps}[kind]
            outs[f"{kind}{s}"] = a
    # Backends may order outputs differently: shuffle to prove decoding does not depend on order.
    keys = list(outs)
    np.random.default_rng(3).shuffle(keys)
    return {k: outs[k] for k in keys}


def test_scrfd_decoder_places_box_and_landmarks():
    h, w = 64, 96  # canvas; stride 16 grid is 4 x 6 cells, 2 anchors each
    row, col, anchor = 2, 3, 1
    index = (row * (w // 16) + col) * 2 + anchor
    dist = [1.0, 2.0, 3.0, 0.5]  # left, top, right, bottom in strides
    kps = [0.5, -0.5, 1, 1, 0, 0, -1, 2, 1.5, 2]
    spec = Manifest.load().get("scrfd_2.5g_kps")
    det = SCRFD(Canned(_scrfd_outputs(h, w, 16, index, dist, kps)), spec, DetectorSettings(closeup_retry=False))
    faces = det.detect(np.zeros((h, w, 3), np.uint8))
    assert len(faces) == 1
    cx, cy = col * 16, row * 16
    np.testing.assert_allclose(faces[0].box, [cx - 16, cy - 32, min(w, cx + 48), cy + 8])
    np.testing.assert_allclose(faces[0].landmarks[0], [cx + 8, cy - 8])
    np.testing.assert_allclose(faces[0].landmarks[3], [cx - 16, cy + 32])
    assert faces[0].score == pytest.approx(0.9)


def test_yunet_decoder_matches_formula():
    h, w = 64, 64
    outs = {}
    for s in (8, 16, 32):
        n = (h // s) * (w // s)
        outs |= {
            f"cls_{s}": np.zeros((1, n, 1), np.float32),
            f"obj_{s}": np.zeros((1, n, 1), np.float32),
            f"bbox_{s}": np.zeros((1, n, 4), np.float32),
            f"kps_{s}": np.zeros((1, n, 10), np.float32),
        }
    idx = 1 * (w // 8) + 2  # stride 8, row 1, col 2
    outs["cls_8"][0, idx] = 0.81
    outs["obj_8"][0, idx] = 1.0
    outs["bbox_8"][0, idx] = [0.5, 0.5, np.log(4), np.log(2)]
    outs["kps_8"][0, idx] = [0, 0, 1, 0, 0.5, 1, 0, 2, 1, 2]
    det = YuNet(Canned(outs), Manifest.load().get("yunet"), DetectorSettings(closeup_retry=False))
    (face,) = det.detect(np.zeros((h, w, 3), np.uint8))
    cx, cy = (2 + 0.5) * 8, (1 + 0.5) * 8
    np.testing.assert_allclose(face.box, [cx - 16, cy - 8, cx + 16, cy + 8])
    np.testing.assert_allclose(face.landmarks[1], [3 * 8, 8])
    assert face.score == pytest.approx(0.9)


def test_small_images_run_at_native_size_and_large_ones_shrink():
    spec = Manifest.load().get("scrfd_2.5g_kps")
    session = Canned(lambda h, w: _scrfd_outputs(h, w, 8, 0, [0, 0, 0, 0], [0] * 10))
    det = SCRFD(session, spec, DetectorSettings(closeup_retry=False, score_threshold=0.95))
    det.detect(np.zeros((150, 150, 3), np.uint8))
    det.detect(np.zeros((1080, 1920, 3), np.uint8))
    assert session.shapes == [(1, 3, 160, 160), (1, 3, 384, 640)]


def test_wrong_model_family_is_a_clear_error():
    # Outputs sized for another input size (a model that is not SCRFD) -> BackendError, not a crash.
    det = SCRFD(
        Canned(_scrfd_outputs(640, 640, 8, 0, [0] * 4, [0] * 10)),
        Manifest.load().get("scrfd_2.5g_kps"),
        DetectorSettings(),
    )
    with pytest.raises(BackendError, match="expected"):
        det.detect(np.zeros((100, 100, 3), np.uint8))


def test_rejects_wrong_array():
    det = SCRFD(Canned({}), Manifest.load().get("scrfd_2.5g_kps"), DetectorSettings())
    with pytest.raises(ValueError, match="BGR"):
        det.detect(np.zeros((10, 10), np.uint8))


# --- real models -------------------------------------------------------------------------------

DETECTORS = ["scrfd_2.5g_kps", "scrfd_500m_kps", "yunet"]


@pytest.fixture(scope="module")
def engines(models_dir):
    return {d: FaceEngine(EngineConfig(detector=DetectorSettings(model=d)), models_dir) for d in DETECTORS}


@pytest.fixture(scope="module")
def groups(facedata):
    with open(facedata / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "group"]
    if not rows:
        pytest.skip("no group photos in the face data")
    return [(facedata / r["path"], len(r["identity"].split(";"))) for r in rows]


@pytest.mark.parametrize("detector", DETECTORS)
def test_group_photos_find_most_people(engines, groups, detector):
    found = labelled = 0
    for path, people in groups:
        faces = engines[detector].detect(read_image(path))
        found += min(len(faces), people)
        labelled += people
    assert found / labelled >= 0.9, f"{detector} found {found} of {labelled} labelled people"


def test_yunet_matches_opencv_reference(models_dir, groups):
    path = groups[0][0]
    image = read_image(path)
    h, w = image.shape[:2]
    settings = DetectorSettings(model="yunet", max_side=4096, closeup_retry=False)
    ours = FaceEngine(EngineConfig(detector=settings), models_dir).detect(image)
    ref = cv2.FaceDetectorYN.create(str(models_dir / "yunet_2026may.onnx"), "", (w, h), 0.5, 0.4, 5000)
    _, rows = ref.detect(image)
    assert len(ours) == len(rows) > 0
    for face in ours:
        row = min(rows, key=lambda r: abs(r[0] - face.box[0]) + abs(r[1] - face.box[1]))
        np.testing.assert_allclose(face.box, [row[0], row[1], row[0] + row[2], row[1] + row[3]], atol=1.0)
        np.testing.assert_allclose(face.landmarks.reshape(-1), row[4:14], atol=1.0)
        assert face.score == pytest.approx(float(row[14]), abs=1e-3)


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("size", [480, 800, 1280])
def test_closeup_selfie_found(engines, facedata, detector, size):
    """A face filling the frame (a kiosk selfie) is still found, with landmarks inside the face."""
    engine = engines[detector]
    portrait = read_image(sorted((facedata / "photos").glob("*/*_0001.jpg"))[0])
    face = central_face(engine.detect(portrait), portrait.shape)
    x1, y1, x2, y2 = face.box.astype(int)
    tight = portrait[max(0, y1 - 4) : y2 + 4, max(0, x1 - 4) : x2 + 4]
    selfie = cv2.resize(tight, (size, int(size * tight.shape[0] / tight.shape[1])), interpolation=cv2.INTER_CUBIC)
    faces = engine.detect(selfie)
    assert len(faces) == 1
    assert faces[0].width > 0.5 * size
    for x, y in faces[0].landmarks:
        assert 0 <= x <= selfie.shape[1] and 0 <= y <= selfie.shape[0]


@pytest.mark.parametrize("detector", DETECTORS)
def test_no_face_in_blank_or_noise(engines, detector):
    rng = np.random.default_rng(0)
    assert engines[detector].detect(np.full((240, 320, 3), 127, np.uint8)) == []
    assert engines[detector].detect(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) == []

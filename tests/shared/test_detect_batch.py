"""Several images in one detector call (cameras batched on a GPU) give what one call per image gives."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from revisit.models.manifest import Manifest
from revisit.models.store import resolve
from revisit.shared.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig, OnnxRuntimeSession
from revisit.shared.config import DetectorSettings
from revisit.shared.detect import create_detector
from revisit.shared.image import read_image


class Counting(OnnxRuntimeSession):
    """The real ONNX Runtime session, counting its calls and the batch sizes it was given."""

    def __init__(self, inner: OnnxRuntimeSession, prefers_batches: bool):
        self.__dict__.update(inner.__dict__)
        self.prefers_batches = prefers_batches
        self.batches: list[int] = []

    def run(self, tensor):
        self.batches.append(tensor.shape[0])
        return super().run(tensor)


def detector(model_path, spec, prefers_batches: bool):
    session = OnnxRuntimeBackend(OnnxRuntimeConfig()).load(resolve(spec, model_path.parent))
    counting = Counting(session, prefers_batches)
    return create_detector(counting, spec, DetectorSettings(closeup_retry=False)), counting


@pytest.fixture(scope="module")
def frames(facedata):
    """Three 'camera frames' of one size (photos pasted on 640x480 canvases) and one of another size."""
    paths = sorted((facedata).rglob("*.jpg"))[:4]
    if len(paths) < 4:
        pytest.skip(f"fewer than 4 photos in {facedata}")
    out = []
    for i, path in enumerate(paths):
        photo = read_image(path)
        size = (640, 480) if i < 3 else (800, 448)
        canvas = np.full((size[1], size[0], 3), 90, np.uint8)
        scale = min(size[0] / photo.shape[1], size[1] / photo.shape[0])
        small = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)))
        canvas[: small.shape[0], : small.shape[1]] = small
        out.append(canvas)
    return out


@pytest.mark.parametrize("name", ["scrfd_2.5g_kps", "scrfd_500m_kps", "yunet"])
def test_stock_detector_graphs_take_no_batch_so_each_image_is_one_call(models_dir, frames, name):
    spec = Manifest.load().get(name)
    det, session = detector(models_dir / spec.file, spec, prefers_batches=True)
    assert session.batch_dim == 1  # the graph declares a fixed batch of 1
    assert not det.batch_capable() and not det.batching
    session.batches.clear()
    many = det.detect_many(frames)
    assert session.batches == [1, 1, 1, 1]
    assert [len(f) for f in many] == [len(det.detect(f)) for f in frames]


def test_a_batch_capable_graph_runs_one_call_per_canvas_size(models_dir, frames, tmp_path):
    pytest.importorskip("onnx", reason="writing the batch-capable YuNet needs the onnx package (dev extra)")
    from revisit.models.batchable import make_batchable_yunet
    from revisit.models.manifest import ModelSpec

    stock = Manifest.load().get("yunet")
    path = tmp_path / "yunet_batch.onnx"
    sha = make_batchable_yunet(models_dir / stock.file, path)
    spec = ModelSpec(name="yunet_batch", role="detector", family="yunet", file=str(path), sha256=sha)
    det, session = detector(path, spec, prefers_batches=True)
    assert det.batch_capable() and det.batching
    session.batches.clear()
    many = det.detect_many(frames)
    assert sorted(session.batches) == [1, 3]  # the three 640x480 frames together, the other one alone
    singles = [det.detect(f) for f in frames]
    assert sum(map(len, singles)) >= 3, "the photos should show faces"
    for got, want in zip(many, singles, strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=0.5)
            assert a.score == pytest.approx(b.score, abs=1e-3)
    # On the CPU (ONNX Runtime) the detector keeps one call per image: batches cost more there.
    cpu_det, cpu_session = detector(path, spec, prefers_batches=False)
    cpu_det.detect_many(frames)
    assert cpu_session.batches == [1, 1, 1, 1]


def test_engine_detect_many_matches_detect(engine, frames):
    assert [len(f) for f in engine.detect_many(frames[:2])] == [len(engine.detect(f)) for f in frames[:2]]

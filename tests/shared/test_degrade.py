"""CCTV-like degradations: deterministic per key, faces of the drawn size where they were put."""

from __future__ import annotations

import numpy as np
import pytest

from revisit.shared.degrade import FRAME_SIZE, LEVELS, degrade, nearest_face, rng_for
from revisit.shared.face import Face


def _photo() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    return image, np.array([45.0, 40.0, 105.0, 115.0])


@pytest.mark.parametrize("level", ["cctv", "hard"])
def test_levels_draw_face_sizes_in_range_and_are_deterministic(level):
    image, box = _photo()
    spec = LEVELS[level]
    sizes = []
    for i in range(30):
        v = degrade(image, box, level, rng_for(0, "a.jpg", level, i))
        assert v.frame.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3) and v.frame.dtype == np.uint8
        assert spec.face_px[0] <= v.face_px <= spec.face_px[1]
        x1, y1, x2, y2 = v.face_box
        assert x2 - x1 == pytest.approx(v.face_px, abs=1e-3) and 0 <= x1 < FRAME_SIZE[0]
        sizes.append(v.face_px)
    assert max(sizes) - min(sizes) > (spec.face_px[1] - spec.face_px[0]) / 3
    a = degrade(image, box, level, rng_for(0, "a.jpg", level, 3))
    b = degrade(image, box, level, rng_for(0, "a.jpg", level, 3))
    c = degrade(image, box, level, rng_for(1, "a.jpg", level, 3))
    assert np.array_equal(a.frame, b.frame) and not np.array_equal(a.frame, c.frame)


def test_none_is_the_photo_itself():
    image, box = _photo()
    v = degrade(image, box, "none", rng_for(0))
    assert v.frame is image and v.face_px == pytest.approx(60)


def test_degraded_frames_are_darker_and_blurred():
    image, box = _photo()
    v = degrade(image, box, "cctv", rng_for(5))
    x1, y1, x2, y2 = (int(round(t)) for t in v.face_box)
    patch = v.frame[max(y1, 0) : y2, max(x1, 0) : x2].astype(np.float32)
    assert patch.mean() < image.mean()  # dim light
    assert np.abs(np.diff(patch, axis=1)).mean() < np.abs(np.diff(image.astype(np.float32), axis=1)).mean()


def test_nearest_face_picks_the_pasted_one():
    def face(x1, y1, x2, y2):
        return Face(np.array([x1, y1, x2, y2]), 0.9, np.zeros((5, 2)))

    stray, pasted = face(0, 0, 20, 20), face(100, 100, 140, 150)
    assert nearest_face([stray, pasted], np.array([102, 98, 142, 146])) is pasted
    assert nearest_face([stray], np.array([102, 98, 142, 146])) is None

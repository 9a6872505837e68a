import cv2
import numpy as np
import pytest

from revisit.shared.align import ARCFACE_TEMPLATE
from revisit.shared.quality import assess, combine, estimate_pose

FRONTAL = ARCFACE_TEMPLATE.copy()


def _sharp_crop():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("nose_shift", "expected_sign"),
    [(0.0, 0), (8.0, 1), (-8.0, -1), (16.0, 1)],
)
def test_yaw_sign_follows_nose(nose_shift, expected_sign):
    pts = FRONTAL.copy()
    pts[2, 0] += nose_shift
    yaw, roll = estimate_pose(pts)
    if expected_sign == 0:
        assert abs(yaw) < 2  # the template itself is nearly, not exactly, symmetric
    else:
        assert np.sign(yaw) == expected_sign and abs(yaw) > 10
    assert abs(roll) < 1


def test_roll_from_eye_line():
    angle = np.deg2rad(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    _, roll = estimate_pose(FRONTAL @ rot.T)
    assert roll == pytest.approx(30, abs=1)


def test_components_and_combined_in_range_and_ordered():
    box = np.array([0, 0, 100, 120], np.float32)
    good = assess(0.9, box, FRONTAL, _sharp_crop())
    for v in (good.detector, good.size, good.sharpness, good.pose, good.score):
        assert 0 <= v <= 1
    blurred = assess(0.9, box, FRONTAL, cv2.GaussianBlur(_sharp_crop(), (0, 0), 4))
    small = assess(0.9, np.array([0, 0, 20, 24], np.float32), FRONTAL, _sharp_crop())
    turned = FRONTAL.copy()
    turned[2, 0] += 14
    profile = assess(0.9, box, turned, _sharp_crop())
    assert blurred.sharpness < good.sharpness and blurred.score < good.score
    assert small.size < good.size and small.score < good.score
    assert profile.pose < good.pose and profile.score < good.score


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ({"detector": 1, "size": 1, "sharpness": 1, "pose": 1}, 1.0),
        ({"detector": 1, "size": 0, "sharpness": 1, "pose": 1}, 0.0),
        ({"detector": 0.5, "size": 0.5, "sharpness": 0.5, "pose": 0.5}, 0.5),
    ],
)
def test_combine_table(parts, expected):
    assert combine(parts) == pytest.approx(expected)

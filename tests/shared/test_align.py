import cv2
import numpy as np
import pytest

from revisit.shared.align import ARCFACE_TEMPLATE, align_face, similarity_transform


def _apply(matrix, pts):
    return pts @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [(0, 1.0, (0, 0)), (30, 2.5, (100, 40)), (-75, 0.4, (-20, 300)), (180, 3.0, (7, 7))],
)
def test_recovers_exact_similarity(angle, scale, shift):
    # Landmarks made by a known similarity from the template map back onto it exactly.
    forward = cv2.getRotationMatrix2D((56, 56), angle, scale)
    forward[:, 2] += shift
    src = _apply(forward, ARCFACE_TEMPLATE)
    back = similarity_transform(src)
    np.testing.assert_allclose(_apply(back, src), ARCFACE_TEMPLATE, atol=1e-6)


def test_least_squares_with_noisy_landmarks():
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE * 2 + 50 + rng.normal(0, 1.0, (5, 2))
    mapped = _apply(similarity_transform(src), src)
    # Noise of 1 px at scale 2 stays about half a pixel on the template.
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 1.5
    # No rotation/shear: the matrix is a scaled rotation.
    m = similarity_transform(src)[:, :2]
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])


def test_align_face_puts_marked_points_on_template():
    # Draw five dots where landmarks are, rotate and scale the picture, then align: dots land on the template.
    canvas = np.zeros((400, 400, 3), np.uint8)
    forward = cv2.getRotationMatrix2D((56, 56), 20, 2.0)
    forward[:, 2] += (120, 90)
    pts = _apply(forward, ARCFACE_TEMPLATE)
    for x, y in pts:
        cv2.circle(canvas, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    crop = align_face(canvas, pts)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert crop[int(round(y)), int(round(x))].max() > 200

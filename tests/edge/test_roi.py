"""Dead zones and regions of interest, judged by the face centre in normalised coordinates."""

from __future__ import annotations

import pytest

from revisit.edge.config import CameraConfig
from revisit.edge.roi import RegionFilter
from tests.edge.conftest import make_face

W, H = 640, 480
TOP_LEFT = [(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)]
TRIANGLE = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0)]  # below the diagonal of the bottom-right quarter
RIGHT_HALF = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]


def face_at(cx: float, cy: float, size: float = 40):
    """A face centred at normalised (cx, cy)."""
    x, y = cx * W, cy * H
    return make_face(x - size / 2, y - size / 2, x + size / 2, y + size / 2)


CASES = {
    # name: (dead zones, roi, centre, kept)
    "no regions": ([], [], (0.1, 0.1), True),
    "in a dead zone": ([TOP_LEFT], [], (0.25, 0.25), False),
    "outside the dead zone": ([TOP_LEFT], [], (0.75, 0.25), True),
    "on the dead zone's edge": ([TOP_LEFT], [], (0.5, 0.25), False),
    "box overlaps, centre outside": ([TOP_LEFT], [], (0.53, 0.25), True),
    "inside the triangle": ([TRIANGLE], [], (0.9, 0.7), False),
    "beside the triangle": ([TRIANGLE], [], (0.6, 0.9), True),
    "second of two dead zones": ([TOP_LEFT, TRIANGLE], [], (0.9, 0.7), False),
    "inside the roi": ([], [RIGHT_HALF], (0.8, 0.5), True),
    "outside the roi": ([], [RIGHT_HALF], (0.2, 0.5), False),
    "roi and a dead zone inside it": ([TRIANGLE], [RIGHT_HALF], (0.9, 0.7), False),
    "roi, outside its dead zone": ([TRIANGLE], [RIGHT_HALF], (0.9, 0.3), True),
}


@pytest.mark.parametrize("dead,roi,centre,kept", CASES.values(), ids=CASES.keys())
def test_keep(dead, roi, centre, kept):
    assert RegionFilter(dead, roi).keep(face_at(*centre), W, H) is kept


def test_counters_and_camera_config():
    camera = CameraConfig(id="door", source="x.mp4", dead_zones=[TOP_LEFT], roi=[[(0, 0), (1, 0), (1, 0.8)]])
    regions = RegionFilter.for_camera(camera)
    assert regions.active
    results = [regions.keep(face_at(*c), W, H) for c in [(0.2, 0.1), (0.9, 0.2), (0.1, 0.9), (0.9, 0.5)]]
    assert results == [False, True, False, True]
    assert regions.stats.as_dict() == {"kept": 2, "in_dead_zone": 1, "outside_roi": 1}
    assert not RegionFilter().active


def test_normalised_to_any_frame_size():
    regions = RegionFilter([TOP_LEFT])
    assert not regions.keep(make_face(100, 100, 140, 140), 640, 480)
    assert regions.keep(make_face(100, 100, 140, 140), 200, 200)  # centre at (0.6, 0.6)

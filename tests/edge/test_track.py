"""The tracker on scripted boxes: births, confirmation, short and long misses, many faces, co-presence."""

from __future__ import annotations

import numpy as np
import pytest

from revisit.edge.config import TrackerConfig
from revisit.edge.track import BoxFilter, Tracker, iou_matrix, match
from tests.edge.conftest import make_face

DT = 0.2  # 5 fps
Box = tuple[float, float, float, float]


def moving(x: float, y: float, vx: float, vy: float = 0.0, size: float = 60.0) -> list[Box]:
    """The box of a face moving at (vx, vy) px per frame, for 30 frames."""
    return [(x + vx * i, y + vy * i, x + vx * i + size, y + vy * i + size) for i in range(30)]


def run(script: list[list[Box]], config: TrackerConfig | None = None, dt: float = DT):
    """Feed one list of boxes per frame; returns (ids of the matched confirmed tracks per frame, tracker,
    all ended tracks)."""
    tracker = Tracker(config or TrackerConfig())
    seen, ended = [], []
    for i, boxes in enumerate(script):
        step = tracker.update([make_face(*b) for b in boxes], i * dt)
        seen.append(step.together)
        ended += step.ended
    return seen, tracker, ended


A = moving(20, 40, 8)
B = moving(400, 300, -6, 2)
CASES = {
    # name: (frames of boxes, expected confirmed ids per frame)
    "one face, confirmed on its 2nd frame": ([[A[i]] for i in range(5)], [(), (1,), (1,), (1,), (1,)]),
    "two faces together": ([[A[i], B[i]] for i in range(4)], [(), (1, 2), (1, 2), (1, 2)]),
    "order of detections does not matter": (
        [[A[i], B[i]] if i % 2 else [B[i], A[i]] for i in range(4)],
        [(), (1, 2), (1, 2), (1, 2)],
    ),
    "short miss survived (0.4 s < max_age)": (
        [[A[0]], [A[1]], [A[2]], [], [], [A[5]], [A[6]]],
        [(), (1,), (1,), (), (), (1,), (1,)],
    ),
    "long miss: a new track (2.4 s > max_age)": (
        [[A[0]], [A[1]]] + [[]] * 12 + [[A[14]], [A[15]]],
        [(), (1,)] + [()] * 12 + [(), (2,)],
    ),
    "false start consumes no id": ([[B[0]], [], [A[2]], [A[3]]], [(), (), (), (1,)]),
    "a second face arriving later": ([[A[0]], [A[1]], [A[2], B[2]], [A[3], B[3]]], [(), (1,), (1,), (1, 2)]),
}


@pytest.mark.parametrize("script,expected", CASES.values(), ids=CASES.keys())
def test_track_ids(script, expected):
    seen, _, _ = run(script)
    assert seen == expected


def test_min_hits_one_confirms_at_birth():
    seen, _, _ = run([[A[0]], [A[1]]], TrackerConfig(min_hits=1))
    assert seen == [(1,), (1,)]


def test_track_ended_after_max_age_with_its_frames():
    tracker = Tracker(TrackerConfig(max_age_s=1.0))
    for i in range(4):
        tracker.update([make_face(*A[i])], i * DT)
    assert tracker.expire(0.6 + 0.9) == []  # 0.9 s unseen: alive
    ended = tracker.expire(0.6 + 1.1)
    assert [t.id for t in ended] == [1] and ended[0].hits == 4
    assert ended[0].first_ts == 0 and ended[0].last_ts == pytest.approx(0.6)
    assert not tracker.alive


def test_constant_velocity_carries_a_track_across_a_gap():
    """40 px/frame with 60 px boxes: after a missed frame the raw boxes barely overlap (IoU 0.09);
    the Kalman prediction still matches them."""
    fast = moving(0, 100, 25)
    script = [[fast[i]] for i in range(6)] + [[]] + [[fast[i]] for i in range(7, 10)]
    seen, tracker, ended = run(script)
    assert seen[-1] == (1,) and not ended
    assert iou_matrix(np.array([fast[5]]), np.array([fast[7]]))[0, 0] < 0.3


def test_irregular_frame_gaps():
    """The motion gate makes gaps irregular: velocity is per second, not per frame."""
    tracker = Tracker(TrackerConfig())
    times = [0.0, 0.2, 0.4, 1.4, 1.6, 2.6]
    ids = []
    for t in times:
        x = 30 * t / 0.2  # 30 px per 0.2 s
        ids.append(tracker.update([make_face(x, 50, x + 80, 130)], t).together)
    assert ids == [(), (1,), (1,), (1,), (1,), (1,)]


def test_many_faces_keep_their_ids():
    grid = [(40.0 + 70 * (k % 8), 40.0 + 70 * (k // 8)) for k in range(32)]
    tracker = Tracker(TrackerConfig())
    first = None
    rng = np.random.default_rng(0)
    for i in range(10):
        faces = [make_face(x + 3 * i, y + 2 * i, x + 3 * i + 50, y + 2 * i + 50) for x, y in grid]
        order = rng.permutation(len(faces))
        step = tracker.update([faces[j] for j in order], i * DT)
        ids = {id(face): track.id for track, face in step.matched}
        by_position = [ids[id(face)] for face in faces]
        if i == 1:
            first = by_position
        elif i > 1:
            assert by_position == first
    assert sorted(first) == list(range(1, 33))
    assert len(step.together) == 32


def test_tracks_carry_their_faces():
    tracker = Tracker(TrackerConfig())
    faces = [make_face(*A[i]) for i in range(3)]
    for i, face in enumerate(faces):
        tracker.update([face], i * DT)
        assert tracker.tracks[0].face is face
    tracker.update([], 3 * DT)
    assert tracker.tracks[0].face is None  # coasting: no face this frame


def test_first_id_and_end_all():
    tracker = Tracker(TrackerConfig(), first_id=1000)
    for i in range(2):
        tracker.update([make_face(*A[i]), make_face(*B[i])], i * DT)
    assert sorted(t.id for t in tracker.confirmed) == [1000, 1001]
    assert len(tracker.end_all()) == 2 and not tracker.tracks


IOU_CASES = [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),
    ((0, 0, 10, 10), (10, 10, 20, 20), 0.0),
    ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),
    ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),
]


@pytest.mark.parametrize("a,b,expected", IOU_CASES)
def test_iou(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_match_is_one_to_one_and_thresholded():
    iou = np.array([[0.9, 0.8], [0.85, 0.1], [0.2, 0.25]])
    assert sorted(match(iou, 0.3)) == [(0, 1), (1, 0)]
    assert match(np.zeros((0, 3)), 0.3) == []


def test_box_filter_learns_velocity():
    f = BoxFilter(np.array([0, 0, 50, 50]), 0.0)
    for i in range(1, 6):
        f.predict(i * 0.2)
        f.update(np.array([20 * i, 0, 20 * i + 50, 50]))
    predicted = f.predict(1.4)  # two steps ahead: x1 should be near 140
    assert predicted[0] == pytest.approx(140, abs=12)
    assert predicted[2] - predicted[0] == pytest.approx(50, abs=3)

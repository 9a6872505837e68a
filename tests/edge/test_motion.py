"""The motion gate on drawn frames: static skipped, movement detected, idle detection while tracks live."""

from __future__ import annotations

import pytest

from revisit.edge.config import MotionConfig
from revisit.edge.motion import MotionGate
from tests.edge.conftest import draw_frame

STILL = [(100, 80, 160, 140)]


def gate(**kw) -> MotionGate:
    return MotionGate(MotionConfig(**kw))


def decisions(frames, alive=False, dt=0.2, **kw) -> list[bool]:
    g = gate(**kw)
    return [g.should_detect(f, alive, i * dt) for i, f in enumerate(frames)]


def moving_frames(n: int, step: int, noise: float = 0.0):
    return [draw_frame([(50 + step * i, 80, 110 + step * i, 140)], noise=noise, seed=i) for i in range(n)]


CASES = {
    # name: (frames, tracks alive, expected decisions)
    "first frame always": ([draw_frame(STILL)], False, [True]),
    "static scene skipped": ([draw_frame(STILL)] * 5, False, [True, False, False, False, False]),
    "sensor noise is not motion": (
        [draw_frame(STILL, noise=4, seed=i) for i in range(5)],
        False,
        [True, False, False, False, False],
    ),
    "a moving rectangle": (moving_frames(5, 6), False, [True] * 5),
    "moving under noise": (moving_frames(5, 6, noise=4), False, [True] * 5),
    "static with tracks alive: every idle_detect_s (1 s at 5 fps)": (
        [draw_frame(STILL)] * 11,
        True,
        [True, False, False, False, False, True] + [False] * 4 + [True],
    ),
    "appearing object": ([draw_frame([])] * 2 + [draw_frame(STILL)] * 2, False, [True, False, True, False]),
}


@pytest.mark.parametrize("frames,alive,expected", CASES.values(), ids=CASES.keys())
def test_decisions(frames, alive, expected):
    assert decisions(frames, alive) == expected


def test_slow_drift_adds_up_against_the_last_detected_frame():
    """1 px per frame of 1280 is 1/8 px at 160 wide: too little frame to frame, but it accumulates."""
    frames = [draw_frame([(200 + i, 200, 360 + i, 360)], size=(1280, 960)) for i in range(40)]
    result = decisions(frames)
    assert result[:3] == [True, False, False]
    assert 5 <= sum(result) <= 20


def test_disabled_gate_always_detects():
    assert decisions([draw_frame(STILL)] * 4, enabled=False) == [True] * 4


def test_counters_and_size_change():
    g = gate()
    for i in range(4):
        g.should_detect(draw_frame(STILL), False, i * 0.2)
    assert (g.stats.frames, g.stats.motion, g.stats.motion_skipped) == (4, 1, 3)
    assert g.should_detect(draw_frame(STILL, size=(640, 480)), False, 1.0)  # a new resolution: detect
    g.reset()
    assert g.should_detect(draw_frame(STILL, size=(640, 480)), False, 1.2)


def test_takes_a_frame_record():
    from revisit.edge.capture import Frame

    g = gate()
    image = draw_frame(STILL)
    assert g.should_detect(Frame("cam", image, 0.0, 0.0, 0), False, 0.0)
    assert not g.should_detect(Frame("cam", image, 0.2, 0.2, 5), False, 0.2)

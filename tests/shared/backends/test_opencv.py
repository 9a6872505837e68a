"""The OpenCV DNN backend shared by several threads (the edge's processing loop, the CLI, a web worker)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from revisit.models.manifest import Manifest
from revisit.models.store import resolve
from revisit.shared.backends.opencv import OpenCVBackend, OpenCVConfig


@pytest.mark.parametrize(
    ("model", "shapes"),
    [
        ("scrfd_500m_kps", [(1, 3, 160, 160), (1, 3, 256, 320)]),  # two camera sizes
        ("w600k_mbf", [(4, 3, 112, 112), (2, 3, 112, 112)]),  # two batch sizes
    ],
)
def test_two_threads_on_one_session_get_their_own_outputs(models_dir, model, shapes):
    """setInput + forward on one shared net: without the session's lock a thread's forward runs on the other
    thread's input (OpenCV asserts on the shapes, or returns the other thread's outputs)."""
    session = OpenCVBackend(OpenCVConfig()).load(resolve(Manifest.load().get(model), models_dir))
    rng = np.random.default_rng(11)
    inputs = [rng.uniform(-1, 1, shape).astype(np.float32) for shape in shapes]
    expected = [{k: v.copy() for k, v in session.run(x).items()} for x in inputs]
    rounds = 30
    failures: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def work(i: int) -> None:
        start.wait()
        for _ in range(rounds):
            try:
                out = session.run(inputs[i])
            except Exception as exc:  # cv2.error: the other thread changed the input under this forward
                failures[i].append(type(exc).__name__)
                continue
            for name, want in expected[i].items():
                if out[name].shape != want.shape or not np.allclose(out[name], want, atol=1e-4):
                    failures[i].append(f"output {name} differs")
                    break

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert failures == [[], []], f"{sum(map(len, failures))} of {2 * rounds} concurrent runs went wrong"

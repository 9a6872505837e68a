"""Fixtures of the edge tests: drawn faces and frames, small video files, real clips, a loopback RTSP server.

The transport fixtures (Mosquitto, subscriber, observations) live in conftest_transport.py.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from revisit.shared.face import Face
from tests.edge.conftest_transport import *  # noqa: F403  (the transport tests' fixtures)

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared"
SYSTEM_PYTHON = "/usr/bin/python3"


# -- drawn faces and frames ---------------------------------------------------------------------------


def make_face(x1: float, y1: float, x2: float, y2: float, score: float = 0.9) -> Face:
    """A face record for a box, with plausible frontal landmarks."""
    w, h = x2 - x1, y2 - y1
    rel = [(0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8)]
    return Face(box=[x1, y1, x2, y2], score=score, landmarks=[(x1 + u * w, y1 + v * h) for u, v in rel])


def draw_frame(
    boxes: list[tuple[float, float, float, float]],
    size: tuple[int, int] = (320, 240),
    noise: float = 0.0,
    seed: int = 0,
    colours: list[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """A grey frame (width, height) with filled rectangles; optional Gaussian sensor noise (std in levels)."""
    w, h = size
    image = np.full((h, w, 3), 60, dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = colours[i] if colours else (200, 200, 200)
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), colour, -1)
    if noise:
        rng = np.random.default_rng(seed)
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    return image


def write_video(path: Path, frames: int, fps: float = 25.0, size: tuple[int, int] = (160, 120)) -> Path:
    """An MJPEG .avi with a square moving across (OpenCV writes MJPEG itself, no codec needed)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPEG"
    for i in range(frames):
        x = 10 + (i * 3) % (size[0] - 40)
        writer.write(draw_frame([(x, 30, x + 30, 60)], size))
    writer.release()
    return path


@pytest.fixture
def small_video(tmp_path: Path) -> Path:
    """2 s at 25 fps, 160x120."""
    return write_video(tmp_path / "moving.avi", 50)


# -- real clips -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def videos(facedata: Path) -> Path:
    path = facedata / "videos"
    if not path.is_dir():
        pytest.skip(f"no videos in {path}: the dev face data has a videos/ folder with the clips")
    return path


@pytest.fixture(scope="session")
def grid_clip(videos: Path) -> Path:
    """A 3 s clip of one speaker (GRID corpus, 360x288, 25 fps)."""
    clips = sorted(videos.glob("grid_*.mpg"))
    if not clips:
        pytest.skip(f"no grid_*.mpg clip (one speaker) in {videos}")
    return clips[0]


@pytest.fixture(scope="session")
def optional_grid_clip() -> Path | None:
    """The one-speaker clip when the face data is here, else None (serve a generated pattern instead)."""
    folder = Path(os.environ.get("REVISIT_FACEDATA") or SHARED / "facedata" / "dev") / "videos"
    return next(iter(sorted(folder.glob("grid_*.mpg"))), None)


@pytest.fixture(scope="session")
def crowd_clip(videos: Path) -> Path:
    """4 s of pedestrians walking towards the camera (1080p): several faces at once."""
    clip = videos / "facenetpt_video.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found: the multi-face clip of the dev face data")
    return clip


# -- RTSP -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """tests/edge/rtsp_server.py as a subprocess on loopback; `url` carries a user and password."""

    def __init__(self, video: Path | None):
        self.video = video
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def url(self, user: str = "viewer", password: str = "s3cret-pw") -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}/cam"

    def start(self, port: int | None = None, timeout: float = 15.0) -> RtspServer:
        cmd = [SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), "--port", str(port if port is not None else self.port)]
        if self.video is not None:
            cmd += ["--video", str(self.video)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline or self.proc.poll() is not None:
                    break
        line = self.proc.stdout.readline().strip() if self.proc.poll() is None else ""
        if not line.isdigit():
            err = self.kill()
            raise RuntimeError(f"RTSP server did not start: {err.strip()[-2000:]}")
        self.port = int(line)
        return self

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing flows (a hung camera)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> str:
        """Kill the server (SIGKILL: a crash, no goodbye to the clients); returns its stderr."""
        if self.proc is None:
            return ""
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.send_signal(signal.SIGCONT)  # a stopped process dies only once it runs
        _, err = proc.communicate(timeout=10)
        return err or ""


def _rtsp_available() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or None when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True)
    if done.returncode:
        return (
            "GStreamer's RTSP server is not installed (Debian: gir1.2-gst-rtsp-server-1.0 python3-gi "
            f"gstreamer1.0-rtsp gstreamer1.0-plugins-ugly): {done.stderr.strip().splitlines()[-1:]}"
        )
    return None


@pytest.fixture(scope="session")
def rtsp_support() -> None:
    reason = _rtsp_available()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(rtsp_support) -> Iterator[Callable[..., RtspServer]]:
    """Factory: rtsp_server(video=None) starts a server (a file, or a generated live pattern when None)."""
    servers: list[RtspServer] = []

    def start(video: Path | None = None) -> RtspServer:
        server = RtspServer(video).start(0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


# -- decoders -------------------------------------------------------------------------------------------


@pytest.fixture(params=["ffmpeg", "gstreamer"])
def decoder(request) -> str:
    """Each capture test runs with both decoders; GStreamer's is skipped where PyGObject or its elements lack."""
    if request.param == "gstreamer":
        from revisit.edge import capture_gst

        reason = capture_gst.unavailable("url")
        if reason:
            pytest.skip(reason)
    return request.param


def pytest_report_header(config) -> str:
    return f"edge: system python for RTSP server: {SYSTEM_PYTHON} ({sys.platform})"

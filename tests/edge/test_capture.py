"""Capture: sampling, backoff and the newest-frame slot as tables; files; a real RTSP server on loopback."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from revisit.edge import capture
from revisit.edge.capture import (
    CameraReader,
    Frame,
    LatestFrame,
    Sampler,
    StreamClock,
    ensure_ffmpeg_tcp,
    iter_file_frames,
    source_kind,
)
from revisit.edge.config import CameraConfig
from revisit.shared.errors import RevisitError
from tests.edge.conftest import free_port, write_video

PASSWORD = "s3cret-pw"


def pts_series(fps_in: float, seconds: float) -> list[float]:
    return [i / fps_in for i in range(int(seconds * fps_in))]


SAMPLING = {
    # name: (sample fps, stream positions, expected number taken)
    "25 -> 5 fps": (5, pts_series(25, 2), 10),
    "23.976 -> 5 fps": (5, pts_series(24000 / 1001, 10), 50),
    "30 -> 7 fps": (7, pts_series(30, 3), 21),
    "slower than the target: every frame": (5, pts_series(2, 3), 6),
    "None: every frame": (None, pts_series(25, 1), 25),
    "a stream that restarts from 0": (5, pts_series(25, 1) + pts_series(25, 1), 10),
    "a forward jump": (5, [0.0, 0.04, 50.0, 50.04, 50.2], 3),
}


@pytest.mark.parametrize("fps,positions,taken", SAMPLING.values(), ids=SAMPLING.keys())
def test_sampler(fps, positions, taken):
    sampler = Sampler(fps)
    assert sum(sampler.take(p) for p in positions) == taken


def test_sampler_takes_the_first_frame_of_each_slot():
    sampler = Sampler(5)
    taken = [p for p in pts_series(25, 1) if sampler.take(p)]
    assert taken == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    with pytest.raises(ValueError):
        Sampler(0)


def test_stream_clock_falls_back_when_positions_do_not_move():
    clock = StreamClock(started=100.0)
    assert [clock.pts(ms, 100.0 + i) for i, ms in enumerate([0, 40, 80])] == pytest.approx([0, 0.04, 0.08])
    stuck = StreamClock(started=100.0)
    out = [stuck.pts(0.0, 100.0 + 0.1 * i) for i in range(6)]
    assert not stuck.from_stream and out[-1] == pytest.approx(0.5)
    assert StreamClock(started=5.0).pts(float("nan"), 6.0) == pytest.approx(1.0)


def test_latest_frame_slot_counts_drops():
    slot = LatestFrame()
    frames = [Frame("c", np.zeros((2, 2, 3), np.uint8), float(i), float(i), i) for i in range(4)]
    for f in frames[:3]:
        slot.put(f)
    assert slot.get(0.1) is frames[2] and slot.dropped == 2
    assert slot.get(0.05) is None  # taken already
    threading.Timer(0.05, slot.put, [frames[3]]).start()
    assert slot.get(2.0) is frames[3]
    slot.close()
    assert slot.get(5.0) is None


SOURCES = {
    "rtsp://u:p@10.0.0.5/stream1": "url",
    "http://cam/video.mjpg": "url",
    "/var/video/door.mp4": "file",
    "door.mkv": "file",
    "nvarguscamerasrc ! nvvidconv ! appsink": "gstreamer",
    "rtspsrc location=rtsp://x/ ! rtph264depay ! nvv4l2decoder ! appsink": "gstreamer",
}


@pytest.mark.parametrize("source,kind", SOURCES.items())
def test_source_kind(source, kind):
    assert source_kind(source) == kind


def test_ffmpeg_options_ask_for_tcp_and_keep_others(monkeypatch):
    monkeypatch.delenv(capture.FFMPEG_OPTIONS_ENV, raising=False)
    ensure_ffmpeg_tcp()
    assert capture.os.environ[capture.FFMPEG_OPTIONS_ENV] == "rtsp_transport;tcp"
    monkeypatch.setenv(capture.FFMPEG_OPTIONS_ENV, "stimeout;5000000")
    ensure_ffmpeg_tcp()
    assert capture.os.environ[capture.FFMPEG_OPTIONS_ENV] == "stimeout;5000000|rtsp_transport;tcp"
    monkeypatch.setenv(capture.FFMPEG_OPTIONS_ENV, "rtsp_transport;udp")
    ensure_ffmpeg_tcp()  # an explicit choice is respected
    assert capture.os.environ[capture.FFMPEG_OPTIONS_ENV] == "rtsp_transport;udp"


# -- files ----------------------------------------------------------------------------------------------


class CountingCapture:
    """Wraps a cv2.VideoCapture and counts grab/retrieve calls."""

    def __init__(self, cap):
        self.cap, self.grabs, self.retrieves = cap, 0, 0

    def grab(self):
        self.grabs += 1
        return self.cap.grab()

    def retrieve(self):
        self.retrieves += 1
        return self.cap.retrieve()

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_iter_file_frames_samples_by_timestamp_and_skips_retrieve(small_video, monkeypatch):
    wrapped: list[CountingCapture] = []
    real_open = capture.open_capture

    def counting_open(*args):
        wrapped.append(CountingCapture(real_open(*args)))
        return wrapped[-1]

    monkeypatch.setattr(capture, "open_capture", counting_open)
    stats = capture.CaptureStats()
    frames = list(iter_file_frames(small_video, 5, camera="c", start_ts=1000.0, stats=stats))
    assert [f.pts_s for f in frames] == pytest.approx([0.2 * i for i in range(10)])
    assert [f.index for f in frames] == list(range(0, 50, 5))
    assert [f.ts for f in frames] == pytest.approx([1000 + 0.2 * i for i in range(10)])
    assert frames[0].camera == "c" and frames[0].image.shape == (120, 160, 3) and frames[0].size == (160, 120)
    assert (stats.frames_read, stats.frames_sampled) == (50, 10)
    assert wrapped[0].retrieves == 10 and wrapped[0].grabs == 51  # the last grab finds the end


def test_iter_file_frames_every_frame_and_errors(small_video, tmp_path, decoder):
    stats = capture.CaptureStats()
    frames = list(iter_file_frames(small_video, None, stats=stats, decoder=decoder))
    assert len(frames) == 50 and stats.decoder.startswith(decoder)
    assert frames[0].image.shape == (120, 160, 3)
    assert [round(f.pts_s, 2) for f in frames[:3]] == [0.0, 0.04, 0.08]
    with pytest.raises(RevisitError, match="no such file"):
        list(iter_file_frames(tmp_path / "missing.mp4", 5, decoder=decoder))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(RevisitError, match="cannot open video"):
        list(iter_file_frames(tmp_path / "junk.mp4", 5, decoder=decoder))


def test_reader_plays_a_file_at_its_pace_and_loops(tmp_path, decoder):
    clip = write_video(tmp_path / "short.avi", 15)  # 0.6 s at 25 fps
    reader = CameraReader(CameraConfig(id="file", source=str(clip), fps=5), decoder=decoder).start()
    frames = []
    start = time.monotonic()
    while time.monotonic() - start < 1.5:
        frame = reader.get(0.5)
        if frame is not None:
            frames.append(frame)
    reader.stop()
    assert not reader.alive
    assert 5 <= len(frames) <= 10  # ~5 fps of real time, not as fast as it decodes
    assert reader.stats.frames_read > 15 and reader.stats.reconnects == 0  # looped, not reconnected
    assert all(b.ts >= a.ts for a, b in zip(frames, frames[1:], strict=False))


def test_reader_counts_frames_not_taken_as_dropped(small_video, decoder):
    reader = CameraReader(CameraConfig(id="file", source=str(small_video), fps=10), decoder=decoder).start()
    time.sleep(1.0)
    newest = reader.get(1.0)
    reader.stop()
    assert newest is not None and newest.index > 10  # the newest, not the first
    assert reader.stats.dropped >= 5


def test_gstreamer_pipeline_without_gstreamer_is_a_clear_error(caplog):
    import cv2

    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV has GStreamer")
    reader = CameraReader(CameraConfig(id="jetson", source="videotestsrc ! appsink"), backoff_base_s=5).start()
    deadline = time.monotonic() + 5
    while reader.stats.last_error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    reader.stop(timeout=2)
    assert "no GStreamer backend" in reader.stats.last_error
    assert not reader.stats.connected


# -- RTSP -----------------------------------------------------------------------------------------------


def rtsp_camera(url: str, fps: float = 5) -> CameraConfig:
    return CameraConfig(id="door", source=url, fps=fps)


def reader_for(url: str, decoder: str, **kwargs) -> CameraReader:
    return CameraReader(rtsp_camera(url), decoder=decoder, **kwargs)


def collect(reader: CameraReader, seconds: float, first_timeout: float = 15.0) -> list[Frame]:
    """Frames for `seconds` after the first one (which may take `first_timeout`)."""
    first = reader.get(first_timeout)
    if first is None:
        return []
    frames, end = [first], time.monotonic() + seconds
    while time.monotonic() < end:
        frame = reader.get(0.5)
        if frame is not None:
            frames.append(frame)
    return frames


def assert_no_password(caplog, capfd, reader: CameraReader) -> None:
    out, err = capfd.readouterr()
    assert PASSWORD not in caplog.text and PASSWORD not in out + err
    assert PASSWORD not in str(reader.stats.as_dict())


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.mark.slow
def test_rtsp_reader_samples_a_served_clip(rtsp_server, optional_grid_clip, debug_logs, capfd, decoder):
    clip = optional_grid_clip
    server = rtsp_server(clip)
    reader = reader_for(server.url(password=PASSWORD), decoder, stall_s=5).start()
    frames = collect(reader, 1.5)
    reader.stop()
    assert len(frames) >= 5, reader.stats
    assert frames[0].camera == "door" and frames[0].image.ndim == 3
    if clip is not None:
        assert frames[0].size == (360, 288)
    gaps = np.diff([f.pts_s for f in frames])
    assert np.all(gaps > 0) and np.median(gaps) == pytest.approx(0.2, abs=0.05)
    assert reader.stats.frames_read >= 4 * reader.stats.frames_sampled  # 25 fps read, 5 fps sampled
    assert "connected to rtsp://viewer:***@127.0.0.1" in debug_logs.text
    assert reader.stats.decoder == ("gstreamer/avdec_h264" if decoder == "gstreamer" else "ffmpeg")
    assert_no_password(debug_logs, capfd, reader)


@pytest.mark.slow
def test_rtsp_reader_reconnects_after_the_server_restarts(rtsp_server, debug_logs, capfd, decoder):
    server = rtsp_server(None)  # a live test pattern
    port = server.port
    reader = reader_for(
        server.url(password=PASSWORD), decoder, stall_s=3, reconnect_max_s=1.0, backoff_base_s=0.2
    ).start()
    try:
        assert collect(reader, 0.5), f"no frames before the restart: {reader.stats}"
        server.kill()
        deadline = time.monotonic() + 10
        while reader.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not reader.stats.connected, "the reader did not notice the server going away"
        time.sleep(1.0)  # a few refused attempts
        server.start(port)
        while reader.get(0.1) is not None:  # frames from before the restart
            pass
        after = collect(reader, 0.5)
    finally:
        reader.stop()
    assert after, f"no frames after the restart: {reader.stats}"
    assert reader.stats.reconnects >= 1 and reader.stats.last_error is not None
    assert "retrying in" in debug_logs.text
    assert_no_password(debug_logs, capfd, reader)


@pytest.mark.slow
def test_rtsp_stall_is_detected_and_recovered(rtsp_server, debug_logs, capfd, decoder):
    """A hung camera: the connection stays open but no frame comes (the server is SIGSTOPped)."""
    server = rtsp_server(None)
    reader = reader_for(
        server.url(password=PASSWORD), decoder, stall_s=1.5, reconnect_max_s=0.5, backoff_base_s=0.1
    ).start()
    try:
        assert collect(reader, 0.3), f"no frames: {reader.stats}"
        server.pause()
        deadline = time.monotonic() + 10
        while (reader.stats.stalls == 0 or "stalled" not in debug_logs.text) and time.monotonic() < deadline:
            time.sleep(0.05)  # the stall is logged once the stream is released (GStreamer: after its TEARDOWN)
        assert reader.stats.stalls >= 1, f"stall not detected: {reader.stats}"
        assert "stalled: no frame for" in debug_logs.text
        server.resume()
        while reader.get(0.1) is not None:
            pass
        after = collect(reader, 0.3)
    finally:
        server.resume()
        reader.stop()
    assert after, f"no frames after the camera came back: {reader.stats}"
    assert reader.stats.reconnects >= 1
    assert_no_password(debug_logs, capfd, reader)


@pytest.mark.slow
def test_unreachable_camera_retries_with_backoff(debug_logs, capfd, decoder):
    url = f"rtsp://viewer:{PASSWORD}@127.0.0.1:{free_port()}/cam"
    reader = reader_for(url, decoder, stall_s=2, reconnect_max_s=0.3, backoff_base_s=0.05).start()
    time.sleep(1.5)
    assert reader.get(0.1) is None
    assert reader.alive and not reader.stats.connected
    assert reader.stats.reconnects >= 3
    started = time.monotonic()
    reader.stop()
    assert not reader.alive and time.monotonic() - started < 2
    warnings = [r for r in debug_logs.records if r.levelno == logging.WARNING and r.name == capture.log.name]
    assert len(warnings) >= 3
    assert "camera door: cannot open rtsp://viewer:***@127.0.0.1" in warnings[0].getMessage()
    assert "retrying in" in warnings[0].getMessage()
    assert "cannot open" in reader.stats.last_error
    assert_no_password(debug_logs, capfd, reader)


def test_frame_is_a_plain_record():
    frame = Frame("door", np.zeros((4, 6, 3), np.uint8), ts=1.5, pts_s=0.5, index=3)
    assert frame.size == (6, 4) and frame.index == 3
    with pytest.raises(AttributeError):
        frame.ts = 2.0  # type: ignore[misc]

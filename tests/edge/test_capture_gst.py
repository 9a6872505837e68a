"""The GStreamer capture path: raw-frame conversion, decoder choice, `auto`, pipeline strings, sampled-only
conversion. The reconnect/stall/sampling tests of both decoders are in test_capture.py (parametrized)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from revisit.edge import capture, capture_gst
from revisit.edge.capture import CameraReader, iter_file_frames, resolve_decoder
from revisit.edge.config import CameraConfig, EdgeConfig, camera_decoder


@pytest.fixture
def gst():
    reason = capture_gst.unavailable("gstreamer")
    if reason:
        pytest.skip(reason)


def photo(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)


# -- raw frames to BGR ------------------------------------------------------------------------------------


def test_i420_with_padded_rows_converts_like_opencv():
    bgr = photo()
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)  # (h*3/2, w): Y then U then V, tightly packed
    expected = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    y, u, v = i420[:h], i420[h : h + h // 4].reshape(h // 2, w // 2), i420[h + h // 4 :].reshape(h // 2, w // 2)
    # The same frame laid out as a decoder may: rows padded to 80 / 48 bytes.
    planes = [np.pad(y, ((0, 0), (0, 16))), np.pad(u, ((0, 0), (0, 16))), np.pad(v, ((0, 0), (0, 16)))]
    data = b"".join(p.tobytes() for p in planes)
    offsets = [0, planes[0].nbytes, planes[0].nbytes + planes[1].nbytes]
    out = capture_gst.to_bgr(data, "I420", w, h, [80, 48, 48], offsets)
    assert out.shape == (h, w, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_nv12_converts_like_opencv():
    bgr = photo()
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y = i420[:h]
    u = i420[h : h + h // 4].reshape(h // 2, w // 2)
    v = i420[h + h // 4 :].reshape(h // 2, w // 2)
    uv = np.dstack([u, v]).reshape(h // 2, w)
    out = capture_gst.to_bgr(y.tobytes() + uv.tobytes(), "NV12", w, h, [w, w], [0, w * h])
    expected = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2  # same colours (rounding aside)


def test_packed_formats_and_an_unknown_one():
    bgr = photo(10, 12)
    np.testing.assert_array_equal(capture_gst.to_bgr(bgr.tobytes(), "BGR", 12, 10, [36], [0]), bgr)
    rgb = bgr[:, :, ::-1].copy()
    np.testing.assert_array_equal(capture_gst.to_bgr(rgb.tobytes(), "RGB", 12, 10, [36], [0]), bgr)
    bgrx = np.dstack([bgr, np.zeros((10, 12), np.uint8)])
    np.testing.assert_array_equal(capture_gst.to_bgr(bgrx.tobytes(), "BGRx", 12, 10, [48], [0]), bgr)
    with pytest.raises(ValueError, match="unsupported raw video format YUY2"):
        capture_gst.to_bgr(bytes(240), "YUY2", 12, 10, [24], [0])


# -- which decoder ----------------------------------------------------------------------------------------


def test_hardware_decoders_are_preferred_in_order(monkeypatch):
    usable = {"avdec_h264", "vaapih264dec"}
    monkeypatch.setattr(capture_gst, "element_usable", lambda name: name in usable)
    assert capture_gst.decoder_for("h264").element == "vaapih264dec"
    usable.add("nvv4l2decoder")
    choice = capture_gst.decoder_for("h264")
    assert choice.element == "nvv4l2decoder" and choice.description == "nvv4l2decoder ! nvvidconv" and choice.hardware
    usable.clear()
    usable.add("avdec_h265")
    assert capture_gst.decoder_for("h265").description.startswith("avdec_h265 max-threads=1")
    assert capture_gst.decoder_for("h264") is None and capture_gst.decoder_for("vp9") is None


def test_a_missing_element_is_not_usable(gst):
    assert capture_gst.element_usable("avdec_h264")
    assert not capture_gst.element_usable("no_such_decoder_element")
    # On this machine (no GPU): the software decoder, and the log line says so.
    assert capture_gst.decoder_for("h264").element == "avdec_h264"
    assert "h264: avdec_h264 (software)" in capture_gst.describe()


def test_auto_takes_gstreamer_for_hardware_decoding_else_ffmpeg_and_logs_once(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(capture, "_auto_logged", set())
    monkeypatch.setattr(capture_gst, "unavailable", lambda kind: "PyGObject is not importable (test)")
    assert resolve_decoder("auto", "rtsp://cam/1") == "ffmpeg"
    assert resolve_decoder("auto", "rtsp://cam/2") == "ffmpeg"
    assert caplog.text.count("decoder auto: ffmpeg") == 1 and "PyGObject is not importable (test)" in caplog.text
    # GStreamer is there but decodes only in software: FFmpeg costs less.
    monkeypatch.setattr(capture, "_auto_logged", set())
    monkeypatch.setattr(capture_gst, "unavailable", lambda kind: None)
    usable = {"avdec_h264"}
    monkeypatch.setattr(capture_gst, "element_usable", lambda name: name in usable)
    assert resolve_decoder("auto", "rtsp://cam/1") == "ffmpeg"
    assert "no hardware decoder here" in caplog.text
    assert resolve_decoder("auto", "videotestsrc ! appsink") == "gstreamer"  # a pipeline: only GStreamer runs it
    # A Jetson: NVDEC opens.
    monkeypatch.setattr(capture, "_auto_logged", set())
    usable.add("nvv4l2decoder")
    assert resolve_decoder("auto", "/videos/door.mp4") == "gstreamer"
    assert "decoder auto: gstreamer for file sources (h264: nvv4l2decoder (hardware)" in caplog.text
    assert resolve_decoder("ffmpeg", "rtsp://x") == "ffmpeg" and resolve_decoder("gstreamer", "x") == "gstreamer"
    with pytest.raises(ValueError, match="auto, ffmpeg or gstreamer"):
        resolve_decoder("nvdec")


def test_decoder_config_per_edge_and_camera():
    base = {"site": "s", "device": "d", "cameras": [{"id": "a", "source": "x.mp4"}]}
    config = EdgeConfig.model_validate(base)
    assert config.decoder == "auto" and camera_decoder(config, config.cameras[0]) == "auto"
    config = EdgeConfig.model_validate(
        {
            **base,
            "decoder": "ffmpeg",
            "cameras": [{"id": "a", "source": "x", "decoder": "gstreamer"}, {"id": "b", "source": "y"}],
        }
    )
    assert [camera_decoder(config, c) for c in config.cameras] == ["gstreamer", "ffmpeg"]
    with pytest.raises(ValueError, match="decoder"):
        EdgeConfig.model_validate({**base, "decoder": "nvdec"})
    with pytest.raises(ValueError, match="decodr"):
        EdgeConfig.model_validate({**base, "cameras": [{"id": "a", "source": "x", "decodr": "ffmpeg"}]})


# -- pipelines ------------------------------------------------------------------------------------------


def test_only_sampled_frames_are_converted(gst, small_video, monkeypatch):
    converted = []
    real = capture_gst.to_bgr

    def counting(*args):
        converted.append(args[1])
        return real(*args)

    monkeypatch.setattr(capture_gst, "to_bgr", counting)
    stats = capture.CaptureStats()
    frames = list(iter_file_frames(small_video, 5, stats=stats, decoder="gstreamer"))
    assert (stats.frames_read, stats.frames_sampled, len(frames)) == (50, 10, 10)
    assert len(converted) == 10 and set(converted) <= {"I420", "NV12"}  # raw YUV out of the decoder
    assert stats.decoder == "gstreamer/decodebin (image/jpeg)"  # MJPEG: not H.264, so decodebin


def test_h264_file_is_decoded_by_the_chosen_decoder(gst, crowd_clip):
    stats = capture.CaptureStats()
    frames = list(iter_file_frames(crowd_clip, 5, stats=stats, decoder="gstreamer"))
    assert stats.decoder == f"gstreamer/{capture_gst.decoder_for('h264').element}"
    assert stats.frames_read == 105 and 20 <= len(frames) <= 22
    assert frames[0].image.shape == (1080, 1920, 3)
    reference = next(iter_file_frames(crowd_clip, None, decoder="ffmpeg"))
    # The same picture through both decoders (colour conversion differs by a few levels at most).
    assert np.abs(frames[0].image.astype(int) - reference.image.astype(int)).mean() < 3


def test_a_pipeline_string_runs_on_the_gstreamer_path(gst):
    source = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1 ! appsink"
    reader = CameraReader(CameraConfig(id="pipe", source=source, fps=5), decoder="gstreamer").start()
    frames = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        frame = reader.get(0.3)
        if frame is not None:
            frames.append(frame)
    reader.stop()
    assert len(frames) >= 4 and frames[0].image.shape == (120, 160, 3)
    assert reader.stats.decoder == "gstreamer/pipeline" and reader.stats.frames_read >= 4 * len(frames) - 4
    gaps = np.diff([f.pts_s for f in frames])
    assert np.median(gaps) == pytest.approx(0.2, abs=0.05)


def test_bad_pipelines_are_clear_errors(gst):
    reader = CameraReader(
        CameraConfig(id="p", source="videotestsrc ! fakesink"), decoder="gstreamer", backoff_base_s=5
    ).start()
    deadline = time.monotonic() + 5
    while reader.stats.last_error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    reader.stop(timeout=2)
    assert "must end in an appsink" in reader.stats.last_error
    with pytest.raises(capture.OpenFailed, match="bad GStreamer pipeline"):
        capture.open_source("videotestsrc ! no_such_element ! appsink", 1.0, "gstreamer")


def test_onnxruntime_errors_still_raise_after_gstreamer_starts(gst, tmp_path):
    """GStreamer brings libunwind; ONNX Runtime loaded after it crashed on its first C++ exception (a corrupt model)
    until capture_gst loads libgcc_s first. In a subprocess: the failure mode is a crash."""
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not an onnx graph")
    code = (
        "import cv2\n"
        "from revisit.edge import capture_gst\n"
        "assert capture_gst._import() is not None\n"
        "import onnxruntime as ort\n"
        "try:\n"
        f"    ort.InferenceSession({str(bogus)!r}, providers=['CPUExecutionProvider'])\n"
        "except Exception as exc:\n"
        "    print('raised', type(exc).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "raised" in done.stdout, (done.returncode, done.stderr[-2000:])

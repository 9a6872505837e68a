"""Capture: one reader thread per camera, frames sampled by timestamp into a newest-frame slot.

Two decoders behind one `FrameSource` interface (grab / position_ms / retrieve / release), chosen by the
`decoder` setting (`auto | ffmpeg | gstreamer`, see `resolve_decoder`):

- ffmpeg: OpenCV's FFmpeg (CPU decoding), RTSP over TCP; GStreamer pipeline strings (they contain '!')
  through `cv2.CAP_GSTREAMER` (the pip wheel of OpenCV has no GStreamer: there they fail with a clear error).
- gstreamer: PyGObject pipelines into an appsink (capture_gst.py), with the box's hardware decoder
  (NVDEC on a Jetson, VA-API on Intel) or avdec in software; pipeline strings run there directly.

Video files are played at their own pace and restarted at their end, like a camera that never stops.

Sampling: the first frame of each 1/fps slot of stream time is taken. Frames not taken are only grabbed:
the decoder still decodes them (inter-coded streams need every frame) but the conversion to BGR and the
copy into a numpy array (`retrieve()`) are skipped.

Failures never end a reader: it reconnects with exponential backoff and full jitter, and a stream with
no frame for `stall_s` is released and reopened. Logs name the source by `CameraConfig.safe_source`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from revisit.edge.config import CameraConfig, redact
from revisit.shared.backoff import backoff

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
SourceKind = Literal["url", "gstreamer", "file"]
DecoderName = Literal["ffmpeg", "gstreamer"]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ts: UTC epoch seconds; pts_s: position in the stream in seconds."""

    camera: str
    image: np.ndarray
    ts: float
    pts_s: float
    index: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass
class CaptureStats:
    frames_read: int = 0
    frames_sampled: int = 0
    dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    connected: bool = False
    last_error: str | None = None
    decoder: str = ""  # what decodes the stream: "ffmpeg", or "gstreamer/<element>"

    def as_dict(self) -> dict[str, int | bool | str | None]:
        return asdict(self)


def source_kind(source: str) -> SourceKind:
    if "!" in source:
        return "gstreamer"
    if "://" in source:
        return "url"
    return "file"


class Sampler:
    """Takes the first frame of each 1/fps slot of stream time; fps None takes every frame.

    A jump back of more than one slot (a restarted stream or a looped file) starts over.
    """

    def __init__(self, fps: float | None):
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self._slot: int | None = None

    def reset(self) -> None:
        self._slot = None

    def take(self, pts_s: float) -> bool:
        if self.fps is None:
            return True
        slot = math.floor(pts_s * self.fps + 1e-6)
        if self._slot is None or slot > self._slot or slot < self._slot - 1:
            self._slot = slot
            return True
        return False


class StreamClock:
    """Stream positions in seconds: CAP_PROP_POS_MSEC while it advances, else a monotonic clock.

    Some sources (live pipelines, odd containers) report no position or one that never moves; after
    `patience` frames without progress this connection falls back to the time since it opened.
    """

    def __init__(self, started: float, patience: int = 3):
        self.started = started
        self.patience = patience
        self.from_stream = True
        self._last: float | None = None
        self._stuck = 0

    def pts(self, pos_msec: float, monotonic_now: float) -> float:
        if self.from_stream and math.isfinite(pos_msec) and pos_msec >= 0:
            pts = pos_msec / 1000.0
            self._stuck = self._stuck + 1 if self._last is not None and pts <= self._last else 0
            if self._stuck < self.patience:
                self._last = pts
                return pts
        self.from_stream = False
        return monotonic_now - self.started


class LatestFrame:
    """A one-frame slot: `put` replaces the frame; a frame replaced before it was taken is dropped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout` s; None on timeout or when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def ensure_ffmpeg_tcp() -> None:
    """Ask OpenCV's FFmpeg for RTSP over TCP (no lost UDP packets, passes firewalls); read at each open."""
    options = os.environ.get(FFMPEG_OPTIONS_ENV, "")
    if "rtsp_transport" not in options:
        os.environ[FFMPEG_OPTIONS_ENV] = "|".join(p for p in (options, "rtsp_transport;tcp") if p)


def open_capture(source: str, timeout_s: float) -> cv2.VideoCapture:
    """Open a source with the right backend and timeouts; the capture may be unopened (check isOpened)."""
    kind = source_kind(source)
    if kind == "gstreamer":
        return cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    ensure_ffmpeg_tcp()
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)


def _why_not_open(source: str) -> str:
    kind = source_kind(source)
    if kind == "gstreamer" and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        return "this OpenCV build has no GStreamer backend (use a build with GStreamer, e.g. JetPack's)"
    if kind == "file" and not Path(source).is_file():
        return "no such file"
    return "cannot open the stream (unreachable, refused, wrong path or credentials, or timed out)"


class FrameSource(Protocol):
    """One open stream. `grab` decodes the next frame (no conversion), `retrieve` returns it as BGR."""

    name: str
    error: str | None  # why the last grab failed, when the decoder said so

    def grab(self) -> bool: ...
    def position_ms(self) -> float: ...
    def retrieve(self) -> np.ndarray | None: ...
    def release(self) -> None: ...


class OpenFailed(Exception):
    """A source could not be opened; the message says why (credentials redacted)."""


class FFmpegSource:
    """`FrameSource` over a cv2.VideoCapture (FFmpeg, or OpenCV's own GStreamer for pipeline strings)."""

    name = "ffmpeg"
    error: str | None = None

    def __init__(self, source: str, timeout_s: float):
        self.cap = open_capture(source, timeout_s)
        if not self.cap.isOpened():
            self.cap.release()
            raise OpenFailed(_why_not_open(source))

    def grab(self) -> bool:
        return bool(self.cap.grab())

    def position_ms(self) -> float:
        return float(self.cap.get(cv2.CAP_PROP_POS_MSEC))

    def retrieve(self) -> np.ndarray | None:
        ok, image = self.cap.retrieve()
        return image if ok else None

    def release(self) -> None:
        self.cap.release()


_auto_logged: set[str] = set()


def resolve_decoder(choice: str, source: str = "rtsp://") -> DecoderName:
    """`auto` → gstreamer where it brings something: a hardware H.264 decoder (NVDEC, VA-API) that opens here, or
    a GStreamer pipeline source; else ffmpeg, whose software decoding costs less CPU than GStreamer's avdec
    (README, "Edge benchmark"). Logged once per kind of source."""
    if choice in ("ffmpeg", "gstreamer"):
        return choice  # type: ignore[return-value]
    if choice != "auto":
        raise ValueError(f"decoder must be auto, ffmpeg or gstreamer, not {choice!r}")
    from revisit.edge import capture_gst

    kind = source_kind(source)
    reason = capture_gst.unavailable(kind)
    if reason is None and kind != "gstreamer":
        h264 = capture_gst.decoder_for("h264")
        if h264 is None or not h264.hardware:
            reason = "no hardware decoder here (FFmpeg decodes in software for less CPU than GStreamer's avdec)"
    decoder: DecoderName = "ffmpeg" if reason else "gstreamer"
    if kind not in _auto_logged:
        _auto_logged.add(kind)
        if reason:
            log.info("decoder auto: ffmpeg (OpenCV) for %s sources; GStreamer not used: %s", kind, reason)
        else:
            log.info("decoder auto: gstreamer for %s sources (%s)", kind, capture_gst.describe())
    return decoder


def open_source(
    source: str, timeout_s: float, decoder: DecoderName = "ffmpeg", stop: threading.Event | None = None
) -> FrameSource:
    """Open a source with a decoder; raises OpenFailed with the reason."""
    if decoder == "gstreamer":
        from revisit.edge import capture_gst

        try:
            return capture_gst.GstSource(source, source_kind(source), timeout_s, stop)
        except capture_gst.OpenError as exc:
            raise OpenFailed(redact(str(exc))) from exc
    return FFmpegSource(source, timeout_s)


def _decoder_label(src: FrameSource) -> str:
    element = getattr(src, "decoder", None)
    return f"{src.name}/{element}" if element else src.name


class CameraReader:
    """Reads one camera on its own thread and keeps the newest sampled frame for `get`.

    `start()` returns at once; connecting, reconnecting and sampling happen on the thread. `stop()`
    ends the thread and joins it (a blocked open or read can take up to the open/read timeout).
    """

    def __init__(
        self,
        camera: CameraConfig,
        *,
        decoder: str = "ffmpeg",
        stall_s: float = 10.0,
        reconnect_max_s: float = 60.0,
        backoff_base_s: float = 0.5,
        open_timeout_s: float | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.camera = camera
        self.decoder = resolve_decoder(decoder, camera.source)
        self.stall_s = stall_s
        self.reconnect_max_s = reconnect_max_s
        self.backoff_base_s = backoff_base_s
        self.open_timeout_s = open_timeout_s or stall_s
        self.kind = source_kind(camera.source)
        self.stats = CaptureStats(decoder=self.decoder)
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self._slot = LatestFrame()
        self._sampler = Sampler(camera.fps)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CameraReader:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera.id}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.open_timeout_s + 5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest sampled frame not yet taken (None after `timeout` s or once stopped)."""
        return self._slot.get(timeout)

    # -- the thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        name, source = self.camera.id, self.camera.safe_source
        attempt = 0
        first = True
        while not self._stop.is_set():
            if not first:
                self.stats.reconnects += 1
            first = False
            try:
                src = open_source(self.camera.source, self.open_timeout_s, self.decoder, self._stop)
            except OpenFailed as exc:
                if self._stop.is_set():
                    break
                self._fail(f"cannot open {source}: {exc}", attempt)
                attempt += 1
                continue
            self.stats.connected = True
            self.stats.decoder = _decoder_label(src)
            log.info("camera %s: connected to %s (decoder %s)", name, source, self.stats.decoder)
            try:
                frames, reason = self._read(src)
            except Exception as exc:  # a decoder or driver error must not end the reader
                frames, reason = 0, f"error while reading: {redact(str(exc))}"
            finally:
                src.release()
                self.stats.connected = False
            if self._stop.is_set():
                break
            if frames:
                attempt = 0
            if reason == "end of file" and frames:
                log.info("camera %s: end of %s, playing it again", name, source)
                first = True  # a file camera looping is not a reconnect
                continue
            self._fail(f"{source}: {reason}", attempt)
            attempt += 1
        log.info("camera %s: reader stopped", name)

    def _fail(self, message: str, attempt: int) -> None:
        delay = backoff(attempt, self.backoff_base_s, self.reconnect_max_s, jitter=self._rng)
        self.stats.last_error = redact(message)
        log.warning(
            "camera %s: %s; retrying in %.1f s (attempt %d)", self.camera.id, redact(message), delay, attempt + 1
        )
        self._stop.wait(delay)

    def _read(self, cap: FrameSource) -> tuple[int, str]:
        """Read until the stream fails, stalls or ends: (frames read, why it stopped)."""
        opened = time.monotonic()
        clock = StreamClock(opened)
        self._sampler.reset()
        frames = 0
        last_good = opened
        pace_origin: tuple[float, float] | None = None  # (monotonic, pts) of a file's first frame
        while not self._stop.is_set():
            ok = cap.grab()
            now = time.monotonic()
            if not ok:
                if self.kind == "file":
                    return frames, "end of file"
                if now - last_good >= self.stall_s:
                    self.stats.stalls += 1
                    return frames, f"stalled: no frame for {now - last_good:.1f} s"
                return frames, f"stream ended or read failed{f' ({cap.error})' if cap.error else ''}"
            frames += 1
            self.stats.frames_read += 1
            pts = clock.pts(cap.position_ms(), now)
            if self.kind == "file":
                # Play a file at its own pace, as a camera would deliver it.
                if pace_origin is None:
                    pace_origin = (now, pts)
                wait = pace_origin[0] + (pts - pace_origin[1]) - now
                if wait > 0 and self._stop.wait(wait):
                    break
            if not self._sampler.take(pts):
                last_good = now
                continue
            image = cap.retrieve()
            if image is None:
                if now - last_good >= self.stall_s:
                    self.stats.stalls += 1
                    return frames, f"stalled: no decodable frame for {now - last_good:.1f} s"
                continue
            last_good = now
            self.stats.frames_sampled += 1
            self._slot.put(Frame(self.camera.id, image, self._wall(), pts, self.stats.frames_read - 1))
            self.stats.dropped = self._slot.dropped
        return frames, "stopped"


def iter_file_frames(
    path: str | Path,
    fps: float | None,
    *,
    camera: str = "video",
    start_ts: float | None = None,
    stats: CaptureStats | None = None,
    decoder: str = "ffmpeg",
) -> Iterator[Frame]:
    """Sampled frames of a video file as fast as it decodes (no pacing): the evaluation's reader.

    The same timestamp sampling as `CameraReader` (fps None: every frame); frames not sampled are only
    grabbed. ts is `start_ts` (default: now) plus the stream position. `stats`, when given, is updated
    as frames are read (frames_read, frames_sampled).
    """
    from revisit.shared.errors import RevisitError

    stats = stats if stats is not None else CaptureStats()
    try:
        src = open_source(str(path), 30.0, resolve_decoder(decoder, str(path)))
    except OpenFailed as exc:
        raise RevisitError(f"cannot open video {path}: {exc}") from exc
    stats.connected = True
    stats.decoder = _decoder_label(src)
    start_ts = time.time() if start_ts is None else start_ts
    native_fps = (src.cap.get(cv2.CAP_PROP_FPS) if isinstance(src, FFmpegSource) else 0.0) or 25.0
    clock = StreamClock(0.0)
    sampler = Sampler(fps)
    index = -1
    try:
        while src.grab():
            index += 1
            stats.frames_read += 1
            # A file whose positions do not advance falls back to frame counting at its nominal rate.
            pts = clock.pts(src.position_ms(), index / native_fps)
            if not sampler.take(pts):
                continue
            image = src.retrieve()
            if image is None:
                continue
            stats.frames_sampled += 1
            yield Frame(camera, image, start_ts + pts, pts, index)
    finally:
        src.release()
        stats.connected = False

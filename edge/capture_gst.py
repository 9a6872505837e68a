"""Capture through GStreamer (PyGObject): hardware decoding where the box has it, appsink into the reader.

The same `CameraReader` (capture.py) drives this path: it opens a `GstSource`, grabs every frame, converts
only the sampled ones to BGR. Pipelines:

    rtsp://…   rtspsrc (TCP) ! parsebin ! DECODER ! videoconvert ! video/x-raw,format={I420,NV12} ! appsink
    a file     filesrc ! parsebin ! … (the same tail)
    a string   the configured pipeline (contains '!'), which must end in an appsink

DECODER is chosen per codec by what this box has and can open, in this order: `nvv4l2decoder ! nvvidconv`
(Jetson NVDEC), `vah264dec` (VA-API, GStreamer >= 1.20), `vaapih264dec` (gstreamer-vaapi), `avdec_h264`
(FFmpeg in software, one thread: each camera has its own thread already); H.265 likewise. Other codecs
(MJPEG, MPEG-2 …) go through `decodebin`. Decoded frames stay I420/NV12 (what decoders emit: the
`videoconvert` passes them through); `to_bgr` converts a sampled frame with OpenCV, so frames that are not
analysed are never converted.

PyGObject comes from the `gstreamer` extra (pip, against the system's GObject introspection) or, on a
Jetson, from the system's python3-gi (a venv with --system-site-packages).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from revisit.edge.config import redact

log = logging.getLogger(__name__)

FORMATS = "{I420,NV12}"
PIPELINE_FORMATS = "{I420,NV12,BGR,BGRx,BGRA,RGB,GRAY8}"  # what a configured pipeline's appsink may give
POLL_S = 0.2  # a blocked grab checks the stop flag this often
APPSINK_QUEUE = 25  # decoded frames waiting for the reader (1 s at 25 fps); live streams drop older ones


@dataclass(frozen=True)
class DecoderChoice:
    codec: str  # "h264" | "h265"
    element: str  # the decoder element
    description: str  # the bin: decoder and what it needs after it
    hardware: bool


# Per codec, in order of preference. Hardware entries are used only when their element exists and opens.
DECODERS: dict[str, tuple[DecoderChoice, ...]] = {
    codec: (
        DecoderChoice(codec, "nvv4l2decoder", "nvv4l2decoder ! nvvidconv", True),
        DecoderChoice(codec, f"va{codec}dec", f"va{codec}dec", True),
        DecoderChoice(codec, f"vaapi{codec}dec", f"vaapi{codec}dec", True),
        DecoderChoice(codec, f"avdec_{codec}", f"avdec_{codec} max-threads=1 output-corrupt=false", False),
    )
    for codec in ("h264", "h265")
}
# Elements every pipeline of this path needs (rtspsrc only for RTSP sources).
BASE_ELEMENTS = ("parsebin", "videoconvert", "capsfilter", "appsink", "decodebin")

_gst: Any = None
_import_error: str | None = None
_probe_lock = threading.Lock()
_usable: dict[str, bool] = {}


def _import() -> Any:
    """Gst (initialised), or None with the reason in `_import_error`."""
    global _gst, _import_error
    if _gst is not None or _import_error is not None:
        return _gst
    # libgstreamer links libunwind, whose _Unwind_* symbols can then serve the C++ exceptions of libraries loaded
    # later (ONNX Runtime: a bad model or input shape crashed the process instead of raising). Measured here with
    # cv2 imported first; libgcc_s loaded globally before GStreamer keeps the right unwinder.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstApp", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import Gst, GstApp, GstVideo  # noqa: F401  (GstApp: appsink's try_pull_sample)

        Gst.init(None)
        _gst = Gst
    except (ImportError, ValueError) as exc:
        _import_error = (
            f"PyGObject with GStreamer is not importable ({exc}); install the 'gstreamer' extra "
            "(pip install 'revisit[gstreamer]', with gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 from apt) "
            "or use the system's python3-gi (a venv with --system-site-packages)"
        )
    return _gst


def element_usable(name: str) -> bool:
    """The element exists and reaches READY (a hardware decoder whose device is missing fails here)."""
    Gst = _import()
    if Gst is None:
        return False
    with _probe_lock:
        if name not in _usable:
            element = Gst.ElementFactory.make(name, None)
            ok = element is not None
            if ok:
                ok = element.set_state(Gst.State.READY) != Gst.StateChangeReturn.FAILURE
                element.set_state(Gst.State.NULL)
            if ok and name == "nvv4l2decoder":
                ok = Gst.ElementFactory.find("nvvidconv") is not None
            _usable[name] = ok
        return _usable[name]


def decoder_for(codec: str) -> DecoderChoice | None:
    """The preferred usable decoder for h264/h265 on this box, or None."""
    return next((d for d in DECODERS.get(codec, ()) if element_usable(d.element)), None)


def unavailable(source_kind: str = "url") -> str | None:
    """Why this path cannot run here for a source of this kind, or None when it can."""
    Gst = _import()
    if Gst is None:
        return _import_error
    needed = list(BASE_ELEMENTS) + (["rtspsrc"] if source_kind == "url" else [])
    missing = [name for name in needed if Gst.ElementFactory.find(name) is None]
    if missing:
        return f"GStreamer elements missing: {', '.join(missing)} (install gstreamer1.0-plugins-base/-good)"
    if source_kind != "gstreamer" and decoder_for("h264") is None:
        return "no H.264 decoder element (install gstreamer1.0-libav for avdec_h264)"
    return None


def describe() -> str:
    """The decoders this box would use, for logs: 'h264: nvv4l2decoder (hardware), h265: …'."""
    parts = []
    for codec in DECODERS:
        choice = decoder_for(codec)
        if choice is not None:
            parts.append(f"{codec}: {choice.element} ({'hardware' if choice.hardware else 'software'})")
    return ", ".join(parts) or "none"


class OpenError(Exception):
    """The source could not be opened; the message says why (credentials redacted)."""


def to_bgr(data: bytes, fmt: str, width: int, height: int, strides: list[int], offsets: list[int]) -> np.ndarray:
    """A new HxWx3 BGR image from one raw frame (I420, NV12, BGR, BGRx/BGRA, RGB or GRAY8)."""
    import cv2

    buf = np.frombuffer(data, np.uint8)

    def plane(i: int, rows: int, row_bytes: int) -> np.ndarray:
        return np.lib.stride_tricks.as_strided(
            buf[offsets[i] :], shape=(rows, row_bytes), strides=(strides[i], 1), writeable=False
        )

    cw, ch = (width + 1) // 2, (height + 1) // 2
    if fmt == "I420":
        if width % 2 == 0 and height % 2 == 0:
            packed = np.concatenate(
                [plane(0, height, width).reshape(-1), plane(1, ch, cw).reshape(-1), plane(2, ch, cw).reshape(-1)]
            )
            return cv2.cvtColor(packed.reshape(height * 3 // 2, width), cv2.COLOR_YUV2BGR_I420)
        y = plane(0, height, width)
        u = cv2.resize(plane(1, ch, cw), (width, height), interpolation=cv2.INTER_NEAREST)
        v = cv2.resize(plane(2, ch, cw), (width, height), interpolation=cv2.INTER_NEAREST)
        return cv2.cvtColor(np.dstack([y, u, v]), cv2.COLOR_YUV2BGR)
    if fmt == "NV12":
        y = np.ascontiguousarray(plane(0, height, width))
        uv = np.ascontiguousarray(plane(1, ch, cw * 2)).reshape(ch, cw, 2)
        if width % 2 == 0 and height % 2 == 0:
            return cv2.cvtColorTwoPlane(y, uv, cv2.COLOR_YUV2BGR_NV12)
        uv_full = cv2.resize(uv, (width, height), interpolation=cv2.INTER_NEAREST)
        return cv2.cvtColor(np.dstack([y, uv_full]), cv2.COLOR_YUV2BGR)
    if fmt in ("BGR", "RGB"):
        image = np.ascontiguousarray(plane(0, height, width * 3)).reshape(height, width, 3)
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if fmt == "RGB" else image
    if fmt in ("BGRx", "BGRA"):
        return np.ascontiguousarray(plane(0, height, width * 4).reshape(height, width, 4)[:, :, :3])
    if fmt == "GRAY8":
        return cv2.cvtColor(np.ascontiguousarray(plane(0, height, width)), cv2.COLOR_GRAY2BGR)
    raise ValueError(f"unsupported raw video format {fmt}: end the pipeline in video/x-raw,format=BGR or I420")


class GstSource:
    """One open GStreamer pipeline ending in an appsink; the `FrameSource` interface of capture.py.

    `grab` takes the next decoded frame (no conversion), `retrieve` converts it to BGR, `position_ms` is its
    presentation time. A grab waits at most `read_timeout_s` (checking `stop` every POLL_S); `error` says
    why the last grab failed when GStreamer said so.
    """

    name = "gstreamer"

    def __init__(self, source: str, kind: str, read_timeout_s: float, stop: threading.Event | None = None):
        Gst = _import()
        reason = unavailable(kind)
        if reason is not None:
            raise OpenError(reason)
        self._Gst = Gst
        self.source = source
        self.kind = kind
        self.read_timeout_s = read_timeout_s
        self._stop = stop or threading.Event()
        self.error: str | None = None
        self.decoder = "pipeline" if kind == "gstreamer" else "pending"
        self._sample: Any = None
        self._pending: Any = None  # the first sample, pulled while opening
        self._linked = False
        self._lock = threading.Lock()
        self.pipeline = self._build()
        self.sink = self._find_appsink()
        self.sink.set_property("sync", False)
        self.sink.set_property("max-buffers", APPSINK_QUEUE)
        self.sink.set_property("drop", kind != "file")  # a file waits for its reader; a live stream does not
        self.sink.set_property("emit-signals", False)
        self._bus = self.pipeline.get_bus()
        self._open(read_timeout_s)

    # -- building ---------------------------------------------------------------------------------------------

    def _build(self) -> Any:
        Gst = self._Gst
        if self.kind == "gstreamer":
            try:
                return Gst.parse_launch(self.source)
            except Exception as exc:  # GLib.Error: a bad pipeline description
                raise OpenError(f"bad GStreamer pipeline: {redact(str(exc))}") from exc
        pipeline = Gst.Pipeline.new(None)
        if self.kind == "url":
            src = Gst.ElementFactory.make("rtspsrc" if self.source.startswith("rtsp") else "urisourcebin", None)
            if src is None:
                raise OpenError(f"no GStreamer source element for {redact(self.source)}")
            if self.source.startswith("rtsp"):
                src.set_property("location", self.source)
                src.set_property("protocols", "tcp")  # no lost UDP packets, passes firewalls
                src.set_property("latency", 200)  # jitter buffer (ms); TCP needs little
                src.set_property("tcp-timeout", int(self.read_timeout_s * 1_000_000))
            else:
                src.set_property("uri", self.source)
        else:
            if not Path(self.source).is_file():
                raise OpenError("no such file")
            src = Gst.ElementFactory.make("filesrc", None)
            src.set_property("location", self.source)
        parse = Gst.ElementFactory.make("parsebin", None)
        tail = Gst.parse_bin_from_description(f"videoconvert ! video/x-raw,format={FORMATS} ! appsink name=sink", True)
        for element in (src, parse, tail):
            pipeline.add(element)
        if self.kind == "url":  # rtspsrc / urisourcebin: a pad per stream, once the stream is described
            src.connect("pad-added", lambda _src, pad: self._on_source_pad(pad, parse, pipeline))
        else:
            src.link(parse)
        parse.connect("pad-added", lambda _parse, pad: self._on_stream(pad, pipeline, tail))
        self._tail = tail
        return pipeline

    def _on_source_pad(self, pad: Any, parse: Any, pipeline: Any) -> None:
        """The camera's first video stream goes to parsebin; audio and other streams to a fakesink."""
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media") if caps and caps.get_size() else None
        sink = parse.get_static_pad("sink")
        if media in (None, "video") and not sink.is_linked():
            pad.link(sink)
            return
        fake = self._Gst.ElementFactory.make("fakesink", None)
        fake.set_property("sync", False)
        pipeline.add(fake)
        fake.sync_state_with_parent()
        pad.link(fake.get_static_pad("sink"))

    def _link_to(self, pad: Any, element: Any) -> None:
        sink = element.get_static_pad("sink")
        if not sink.is_linked():
            pad.link(sink)

    def _on_stream(self, pad: Any, pipeline: Any, tail: Any) -> None:
        """parsebin found a stream: the first video stream is decoded into the tail, anything else discarded."""
        Gst = self._Gst
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name() if caps and caps.get_size() else ""
        with self._lock:
            take = name.startswith(("video/", "image/")) and not self._linked  # image/jpeg: MJPEG
            if take:
                self._linked = True
        if not take:
            sink = Gst.ElementFactory.make("fakesink", None)
            sink.set_property("sync", False)
            pipeline.add(sink)
            sink.sync_state_with_parent()
            pad.link(sink.get_static_pad("sink"))
            return
        codec = {"video/x-h264": "h264", "video/x-h265": "h265"}.get(name)
        choice = decoder_for(codec) if codec else None
        if choice is None:  # another codec: whatever decoder GStreamer has for it (its pads come later)
            self.decoder = f"decodebin ({name})"
            decode = Gst.ElementFactory.make("decodebin", None)
            decode.connect("pad-added", lambda _dec, out: self._link_to(out, tail))
        else:
            self.decoder = choice.element
            decode = Gst.parse_bin_from_description(choice.description, True)
        pipeline.add(decode)
        if choice is not None:
            decode.link(tail)
        decode.sync_state_with_parent()
        if pad.link(decode.get_static_pad("sink")) != Gst.PadLinkReturn.OK:
            self.error = f"cannot link {name} to {self.decoder}"

    def _find_appsink(self) -> Any:
        if self.kind != "gstreamer":
            return self._tail.get_by_name("sink")
        sinks = [e for e in self._iterate(self.pipeline) if e.get_factory() and e.get_factory().get_name() == "appsink"]
        if not sinks:
            raise OpenError("the GStreamer pipeline must end in an appsink (… ! videoconvert ! appsink)")
        sink = sinks[-1]
        if sink.get_property("caps") is None:  # ask upstream for a format `to_bgr` reads
            sink.set_property("caps", self._Gst.Caps.from_string(f"video/x-raw,format={PIPELINE_FORMATS}"))
        return sink

    def _iterate(self, bin_: Any) -> list[Any]:
        out: list[Any] = []
        iterator = bin_.iterate_recurse()
        while True:
            result, element = iterator.next()
            if result != self._Gst.IteratorResult.OK:
                return out
            out.append(element)

    # -- running ----------------------------------------------------------------------------------------------

    def _open(self, timeout_s: float) -> None:
        Gst = self._Gst
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            message = self._bus_error() or "the pipeline cannot start"
            self.release()
            raise OpenError(message)
        sample = self._pull(timeout_s)
        if sample is None:
            reason = self.error or f"no frame within {timeout_s:g} s"
            self.release()
            raise OpenError(reason)
        self._pending = sample

    def _bus_error(self) -> str | None:
        Gst = self._Gst
        message = self._bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        while message is not None:
            if message.type == Gst.MessageType.ERROR:
                err, debug = message.parse_error()
                text = err.message
                if debug and "Could not" not in text:
                    text = f"{text} ({debug.splitlines()[0]})"
                self.error = redact(text)
            elif self.error is None:
                self.error = "end of stream"
            message = self._bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        return self.error

    def _pull(self, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set():
            wait = min(POLL_S, max(0.0, deadline - time.monotonic()))
            sample = self.sink.try_pull_sample(int(wait * 1e9))
            if sample is not None:
                return sample
            if self.sink.is_eos():
                self._bus_error()
                self.error = self.error or "end of stream"
                return None
            if self._bus_error() is not None:
                return None
            if time.monotonic() >= deadline:
                return None
        return None

    def grab(self) -> bool:
        """Take the next decoded frame (no conversion); False at the end, on an error or after the timeout."""
        if self._pending is not None:
            self._sample, self._pending = self._pending, None
            return True
        self._sample = self._pull(self.read_timeout_s)
        return self._sample is not None

    def position_ms(self) -> float:
        if self._sample is None:
            return -1.0
        pts = self._sample.get_buffer().pts
        return -1.0 if pts == self._Gst.CLOCK_TIME_NONE else pts / 1e6

    def retrieve(self) -> np.ndarray | None:
        """The grabbed frame as a new BGR image."""
        from gi.repository import GstVideo

        if self._sample is None:
            return None
        caps, buf = self._sample.get_caps(), self._sample.get_buffer()
        info = GstVideo.VideoInfo.new_from_caps(caps)
        fmt = GstVideo.VideoFormat.to_string(info.finfo.format)
        data = buf.extract_dup(0, buf.get_size())
        return to_bgr(data, fmt, info.width, info.height, list(info.stride), list(info.offset))

    def release(self) -> None:
        self._sample = self._pending = None
        if self.pipeline is not None:
            self.pipeline.set_state(self._Gst.State.NULL)
            self.pipeline = None

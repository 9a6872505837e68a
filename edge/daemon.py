"""The edge daemon: camera readers → one processing loop → publisher (spool + MQTT), plus the live view.

Threads: one reader per camera (capture.py), one processing loop (this file), paho's network thread and the
publisher's sender (publish.py), the live HTTP server (live.py). The processing loop visits the cameras
round-robin, taking each one's newest sampled frame, so one busy camera cannot starve the others; it is the
only caller of the face engine. It pings the systemd watchdog, so a hung loop gets the unit restarted.

Shutdown (SIGTERM/SIGINT): stop the loop and the readers, end every open track (`pipeline.flush`) into the
spool, wait briefly for PUBACKs, publish the retained `offline` status, exit 0.
"""

from __future__ import annotations

import collections
import logging
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revisit import __version__
from revisit.edge.capture import CameraReader, Frame
from revisit.edge.config import CameraConfig, EdgeConfig, camera_decoder
from revisit.edge.live import LiveServer
from revisit.edge.metrics import EdgeCollector, make_registry, render
from revisit.edge.notify import Notifier
from revisit.edge.pipeline import CameraPipeline
from revisit.edge.publish import Publisher
from revisit.shared.engine import FaceEngine
from revisit.shared.errors import ConfigError
from revisit.shared.logfmt import event

log = logging.getLogger(__name__)

LIVE_MAX_WIDTH = 960  # live-view JPEGs are shrunk to this width
STATUS_EVERY_S = 10.0  # systemd STATUS= line
SHUTDOWN_DRAIN_S = 5.0  # how long a stop waits for the broker to acknowledge the last observations


class RateMeter:
    """Events per second over the last `window_s` seconds."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        return len(self._times) / self.window_s


@dataclass
class CameraRuntime:
    config: CameraConfig
    reader: CameraReader
    pipeline: CameraPipeline
    latest: Frame | None = None  # the newest analysed frame, for the live view
    frame_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=512))
    fps: RateMeter = field(default_factory=RateMeter)
    errors: int = 0
    idle_flushed: bool = False
    _jpeg: tuple[int, bytes] | None = None  # (frame index, JPEG) cache shared by viewers
    _jpeg_lock: threading.Lock = field(default_factory=threading.Lock)


class EdgeDaemon:
    def __init__(
        self,
        config: EdgeConfig,
        models_dir: str | Path | None = None,
        *,
        engine: FaceEngine | None = None,
        notifier: Notifier | None = None,
    ):
        self.config = config
        cameras = [c for c in config.cameras if c.enabled]
        if not cameras:
            raise ConfigError("no enabled camera: set enabled = true on at least one [[cameras]]")
        try:
            Path(config.state_dir).mkdir(parents=True, exist_ok=True)
            self.publisher = Publisher.from_config(config, stats_fn=self.heartbeat_stats)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"state_dir {config.state_dir}: cannot create the spool there: {exc}") from exc
        self.engine = engine or FaceEngine(config.engine, models_dir)
        self.notifier = notifier or Notifier(default_watchdog_s=config.watchdog_s)
        # Track ids (per camera) start at the start time in ms: they never repeat across restarts, so the central
        # service never mistakes a new track for an interval-published continuation of an old one.
        first_id = int(time.time() * 1000)
        self.cameras: dict[str, CameraRuntime] = {}
        for cam in cameras:
            reader = CameraReader(
                cam,
                decoder=camera_decoder(config, cam),
                stall_s=config.stall_s,
                reconnect_max_s=config.reconnect_max_s,
            )
            pipeline = CameraPipeline(cam, config, self.engine, first_track_id=first_id)
            self.cameras[cam.id] = CameraRuntime(cam, reader, pipeline)
        self.registry = make_registry(EdgeCollector(lambda: self.cameras, self.publisher, self._loop_gauges))
        self.live = LiveServer(config.live, self) if config.live.enabled else None
        self._stop = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._last_tick = time.monotonic()
        self._started = time.monotonic()
        self._placeholder: bytes | None = None
        self.loop_errors = 0
        self.flushed = 0  # observations of the tracks still open at shutdown

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        log.info(
            event(
                "edge_start",
                version=__version__,
                site=cfg.site,
                device=cfg.device,
                cameras=",".join(self.cameras),
                recognizer=self.engine.recognizer_id,
                state_dir=cfg.state_dir,
            )
        )
        for cam in self.cameras.values():
            log.info(event("camera_start", camera=cam.config.id, source=cam.config.safe_source, fps=cam.config.fps))
            cam.reader.start()
        self.publisher.start()
        if self.live is not None:
            try:
                self.live.start()
            except OSError as exc:
                # The live view is an extra: the cameras and the publishing carry on without it.
                log.error(event("live_failed", bind=cfg.live.bind, port=cfg.live.port, error=exc))
                self.live = None
        self._loop_thread = threading.Thread(target=self._loop, name="processing", daemon=True)
        self._loop_thread.start()
        self.notifier.ready(f"{len(self.cameras)} camera(s) started")

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (or `request_stop`), shut down; the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop.wait(1.0):
                if self._loop_thread is not None and not self._loop_thread.is_alive():
                    log.critical(event("processing_loop_died"))
                    self.shutdown()
                    return 1
            self.shutdown()
            return 0
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info(event("signal", name=signal.Signals(signum).name, action="stopping"))
        self._stop.set()

    def shutdown(self) -> None:
        self.notifier.stopping("stopping: flushing tracks")
        self._stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=30)
        stoppers = [threading.Thread(target=c.reader.stop, daemon=True) for c in self.cameras.values()]
        for t in stoppers:  # in parallel: each may wait out an open/read timeout
            t.start()
        for t in stoppers:
            t.join(timeout=self.config.stall_s + 10)
        flushed = 0
        now = time.time()
        for cam in self.cameras.values():
            for obs in cam.pipeline.flush(now):
                self.publisher.publish(obs)
                flushed += 1
        self.flushed = flushed
        log.info(event("tracks_flushed", observations=flushed, spool_depth=self.publisher.spool.stats.depth))
        self.publisher.stop(drain_s=SHUTDOWN_DRAIN_S)
        if self.live is not None:
            self.live.stop()
        log.info(event("edge_stopped", flushed=flushed, spool_depth=self.publisher.spool.stats.depth))

    # -- the processing loop -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        cams = list(self.cameras.values())
        next_status = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            self._last_tick = now
            self.notifier.watchdog(now)
            if now >= next_status:
                self.notifier.status(self.status_line())
                next_status = now + STATUS_EVERY_S
            busy = False
            if self._batching:  # the frames ready now, detected together
                ready: list[tuple[CameraRuntime, Frame]] = []
                for cam in cams:
                    frame = cam.reader.get(timeout=0)
                    if frame is None:
                        self._maybe_flush_idle(cam)
                    else:
                        ready.append((cam, frame))
                busy = bool(ready)
                if len(ready) > 1:
                    self._process_together(ready)
                elif ready:
                    self._process(*ready[0])
            else:  # each camera's newest frame, taken just before it is analysed
                for cam in cams:
                    frame = cam.reader.get(timeout=0)
                    if frame is None:
                        self._maybe_flush_idle(cam)
                        continue
                    busy = True
                    self._process(cam, frame)
            if not busy:
                self._stop.wait(0.01)  # nothing new on any camera: a short nap (cheap polling)

    @property
    def _batching(self) -> bool:
        return self.config.batch_detect and self.engine.detector.batching

    def _process(self, cam: CameraRuntime, frame: Frame) -> None:
        try:
            observations = cam.pipeline.process(frame)
        except Exception:
            self._failed(cam)
            return
        self._done(cam, frame, observations)

    def _process_together(self, ready: list[tuple[CameraRuntime, Frame]]) -> None:
        """The frames of several cameras: one detector call for those the motion gate lets through."""
        wanted: list[tuple[CameraRuntime, Frame]] = []
        for cam, frame in ready:
            try:
                if cam.pipeline.begin(frame):
                    wanted.append((cam, frame))
                else:
                    self._done(cam, frame, cam.pipeline.finish(frame, None))
            except Exception:
                self._failed(cam)
        if not wanted:
            return
        started = time.perf_counter()
        try:
            all_faces = self.engine.detect_many([frame.image for _, frame in wanted])
        except Exception:
            log.exception(event("batch_detect_error", frames=len(wanted)))
            all_faces = [None] * len(wanted)  # each frame on its own below
        share_ms = (time.perf_counter() - started) * 1000 / len(wanted)
        batched = len(wanted) > 1
        for (cam, frame), faces in zip(wanted, all_faces, strict=True):
            try:
                if faces is None:
                    started = time.perf_counter()
                    faces = self.engine.detect(frame.image)
                    share_ms, batched = (time.perf_counter() - started) * 1000, False
                observations = cam.pipeline.finish(frame, faces, share_ms, batched)
            except Exception:
                self._failed(cam)
                continue
            self._done(cam, frame, observations)

    def _failed(self, cam: CameraRuntime) -> None:
        # One bad frame must not stop the site; a persistent failure shows in the log and the metrics.
        cam.errors += 1
        self.loop_errors += 1
        if cam.errors <= 3 or cam.errors % 100 == 0:
            log.exception(event("process_error", camera=cam.config.id, errors=cam.errors))

    def _done(self, cam: CameraRuntime, frame: Frame, observations: list) -> None:
        cam.frame_ms.append((time.time() - frame.ts) * 1000.0)
        cam.latest = frame
        cam.idle_flushed = False
        cam.fps.tick()
        for obs in observations:
            self.publisher.publish(obs, origin_ts=frame.ts)

    def _maybe_flush_idle(self, cam: CameraRuntime) -> None:
        """A camera that delivered nothing for stall_s (down, reconnecting) ends its tracks now rather than
        when its stream returns; they would all have expired by then anyway."""
        if cam.idle_flushed or cam.latest is None or time.time() - cam.latest.ts < self.config.stall_s:
            return
        cam.idle_flushed = True
        observations = cam.pipeline.flush(time.time())
        for obs in observations:
            self.publisher.publish(obs)
        if observations:
            log.info(event("camera_idle_tracks_ended", camera=cam.config.id, observations=len(observations)))

    # -- views (heartbeat, live page, metrics) ----------------------------------------------------------------

    def status_line(self) -> str:
        connected = sum(1 for c in self.cameras.values() if c.reader.stats.connected)
        fps = sum(c.fps.rate() for c in self.cameras.values())
        return (
            f"cameras {connected}/{len(self.cameras)} connected, {fps:.1f} fps analysed, "
            f"mqtt {'up' if self.publisher.connected else 'down'}, spool {self.publisher.spool.stats.depth}"
        )

    def heartbeat_stats(self) -> dict[str, float]:
        out: dict[str, float] = {"uptime_s": time.monotonic() - self._started, "loop_errors": self.loop_errors}
        for cam_id, cam in self.cameras.items():
            r, p = cam.reader.stats, cam.pipeline.stats
            for key, value in (
                ("connected", float(r.connected)),
                ("fps", cam.fps.rate()),
                ("frames_read", r.frames_read),
                ("dropped", r.dropped),
                ("reconnects", r.reconnects),
                ("frames_analyzed", p.frames_analyzed),
                ("tracks", p.tracks_started),
                ("observations", p.observations),
            ):
                out[f"{cam_id}.{key}"[-64:]] = float(value)
        return out

    def _loop_gauges(self) -> dict[str, float]:
        return {
            "loop_tick_age_seconds": time.monotonic() - self._last_tick,
            "uptime_seconds": time.monotonic() - self._started,
        }

    # LiveSource

    def camera_ids(self) -> list[str]:
        return list(self.cameras)

    def snapshot_jpeg(self, camera_id: str) -> bytes:
        cam = self.cameras[camera_id]
        frame = cam.latest
        if frame is None:
            return self._placeholder_jpeg()
        with cam._jpeg_lock:
            if cam._jpeg is not None and cam._jpeg[0] == frame.index:
                return cam._jpeg[1]
            image = frame.image
            if image.shape[1] > LIVE_MAX_WIDTH:
                scale = LIVE_MAX_WIDTH / image.shape[1]
                image = cv2.resize(image, (LIVE_MAX_WIDTH, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", cam.pipeline.annotate(image), [cv2.IMWRITE_JPEG_QUALITY, 75])
            jpeg = buf.tobytes() if ok else self._placeholder_jpeg()
            cam._jpeg = (frame.index, jpeg)
            return jpeg

    def _placeholder_jpeg(self) -> bytes:
        if self._placeholder is None:
            image = np.zeros((240, 320, 3), np.uint8)
            cv2.putText(image, "waiting for camera", (40, 125), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (200, 200, 200), 1)
            self._placeholder = cv2.imencode(".jpg", image)[1].tobytes()
        return self._placeholder

    def status(self) -> dict[str, Any]:
        cams = []
        for cam_id, cam in self.cameras.items():
            r, p = cam.reader.stats, cam.pipeline.stats
            cams.append(
                {
                    "id": cam_id,
                    "source": cam.config.safe_source,
                    "connected": r.connected,
                    "fps": cam.fps.rate(),
                    "frames_read": r.frames_read,
                    "dropped": r.dropped,
                    "reconnects": r.reconnects,
                    "last_error": r.last_error,
                    **p.counters(),
                }
            )
        pub = self.publisher.counters()
        return {
            "site": self.config.site,
            "device": self.config.device,
            "uptime_s": time.monotonic() - self._started,
            "cameras": cams,
            "publisher": {k: int(pub[k]) for k in ("connected", "spool_depth", "acked", "spool_dropped")},
        }

    def metrics(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST

        return render(self.registry), CONTENT_TYPE_LATEST

    def health(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_tick
        if self._loop_thread is None or not self._loop_thread.is_alive():
            return False, "processing loop not running"
        if age > 30:
            return False, f"processing loop stuck for {age:.0f} s"
        # The delivery backlog is shown, not a failure: the spool holds it.
        c = self.publisher.counters()
        if c.get("spool_depth", 0):
            return True, f"ok; spool {int(c['spool_depth'])} undelivered, oldest {c.get('spool_oldest_s', 0):.0f} s"
        return True, "ok"

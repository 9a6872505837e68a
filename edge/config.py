"""Typed configuration of the edge daemon (TOML). Unknown keys are errors that name the key.

Example (see deploy/edge.example.toml):

    site = "store-1"
    device = "box-a"
    state_dir = "/var/lib/revisit-edge"

    [broker]
    host = "mqtt.example.com"
    port = 8883
    [broker.tls]
    ca = "/etc/revisit/ca.pem"
    cert = "/etc/revisit/device.pem"
    key = "/etc/revisit/device.key"

    [[cameras]]
    id = "door"
    source = "rtsp://user:pass@10.0.0.5/stream1"
    fps = 5
    dead_zones = [[[0.0, 0.0], [0.3, 0.0], [0.3, 0.2], [0.0, 0.2]]]

    [engine.detector]
    model = "scrfd_2.5g_kps"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from revisit.shared.config import (  # noqa: F401  (TLSConfig: part of this module's interface)
    BrokerConnection,
    DetectorSettings,
    EngineConfig,
    Strict,
    TLSConfig,
    load_toml,
)
from revisit.shared.schema import Ident

# auto: GStreamer (hardware decoding where the box has it) when PyGObject and its elements exist, else FFmpeg.
Decoder = Literal["auto", "ffmpeg", "gstreamer"]
Point = tuple[Annotated[float, Field(ge=0, le=1)], Annotated[float, Field(ge=0, le=1)]]
Polygon = Annotated[list[Point], Field(min_length=3)]


class BrokerConfig(BrokerConnection):
    client_id: str | None = Field(None, description="default: revisit-edge-<site>-<device>")
    heartbeat_s: float = Field(30, ge=1, le=3600, description="status heartbeat period")
    protocol: Literal["3.1.1", "5"] = Field("3.1.1", description="MQTT version (amqtt speaks only 3.1.1)")
    reconnect_max_s: int = Field(30, ge=1, le=600, description="cap of the exponential reconnect backoff")
    delivery: Literal["stored", "broker"] = Field(
        "stored",
        description="stored: keep an observation until central confirms it stored it (acks topic); "
        "broker: until the broker's PUBACK (for a central without acknowledgements)",
    )
    confirm_timeout_s: float = Field(60, ge=1, le=86400, description="resend an unconfirmed observation after this")
    confirm_backoff_max_s: float = Field(900, ge=1, le=86400, description="cap of the doubling resend timeout")
    unconfirmed_warn_s: float = Field(600, ge=1, description="warn when the oldest unconfirmed one is this old")


class CameraConfig(Strict):
    id: Ident
    source: str = Field(description="rtsp:// URL, a video file path, or a GStreamer pipeline (contains '!')")
    fps: float = Field(5.0, gt=0, le=60, description="frames analysed per second, sampled by timestamp")
    dead_zones: list[Polygon] = Field(default_factory=list, description="faces centred here are dropped")
    roi: list[Polygon] = Field(default_factory=list, description="if set, only faces centred inside count")
    min_face_px: float = Field(24, ge=0, description="smaller faces are tracked but never embedded")
    enabled: bool = True
    decoder: Decoder | None = Field(None, description="this camera's decoder; default: the edge's `decoder`")

    @property
    def safe_source(self) -> str:
        """The source with any password replaced: what logs and pages may show."""
        return redact(self.source)


class MotionConfig(Strict):
    enabled: bool = True
    width: int = Field(160, ge=32, le=1280, description="frames are compared at this width")
    pixel_threshold: int = Field(18, ge=1, le=255, description="grey-level change that counts as motion")
    area_fraction: float = Field(0.002, gt=0, lt=1, description="fraction of changed pixels that is motion")
    idle_detect_s: float = Field(1.0, ge=0, description="while tracks live, detect at least this often")


class TrackerConfig(Strict):
    iou_threshold: float = Field(0.3, gt=0, lt=1)
    min_hits: int = Field(2, ge=1, description="detections before a track is confirmed")
    max_age_s: float = Field(2.0, gt=0, description="a track unseen this long has ended")


class RecogniseConfig(Strict):
    min_quality: float = Field(0.25, ge=0, le=1, description="shots below this are never embedded")
    reembed_size_ratio: float = Field(1.5, ge=1, description="re-embed when the face is this much larger")
    reembed_quality_delta: float = Field(0.2, ge=0, le=1, description="... or quality improved this much")
    max_embeds_per_track: int = Field(3, ge=1, le=100)
    mean_shots: int = Field(
        2, ge=1, le=10, description="publish the mean embedding of the track's best K shots (1: the best shot's)"
    )
    publish_interval_s: float = Field(300, ge=10, description="long tracks publish this often (same track id)")
    crop_padding: float = Field(0.3, ge=0, le=2, description="padding around the face box in the crop")
    crop_max_side: int = Field(256, ge=64, le=1024)
    crop_jpeg_quality: int = Field(90, ge=30, le=100)


class SpoolConfig(Strict):
    max_mb: float = Field(512, gt=0, description="oldest observations are dropped beyond this")


class LiveConfig(Strict):
    enabled: bool = True
    bind: str = "0.0.0.0"
    port: int = Field(8090, ge=0, le=65535, description="0 picks a free port")
    mjpeg_fps: float = Field(5, gt=0, le=30)


class EdgeConfig(Strict):
    site: Ident
    device: Ident
    state_dir: Path = Path("/var/lib/revisit-edge")
    broker: BrokerConfig = BrokerConfig()
    cameras: list[CameraConfig] = Field(min_length=1)
    engine: EngineConfig = EngineConfig(detector=DetectorSettings(closeup_retry=False))
    motion: MotionConfig = MotionConfig()
    tracker: TrackerConfig = TrackerConfig()
    recognise: RecogniseConfig = RecogniseConfig()
    spool: SpoolConfig = SpoolConfig()
    live: LiveConfig = LiveConfig()
    stall_s: float = Field(10, gt=0, description="no frame for this long: reconnect the camera")
    reconnect_max_s: float = Field(60, gt=0, description="cap of the exponential reconnect backoff")
    watchdog_s: float = Field(30, gt=0, description="systemd watchdog period when not given by systemd")
    decoder: Decoder = Field("auto", description="video decoding: auto, ffmpeg (OpenCV) or gstreamer")
    batch_detect: bool = Field(
        True, description="one detector call for the frames of several cameras, where the backend gains from it"
    )

    @field_validator("engine", mode="before")
    @classmethod
    def _no_closeup_retry(cls, engine: object) -> object:
        # Cameras never see a face that fills the frame, so the close-up retry (a second detector pass on every
        # frame without a face: most CCTV frames) is off on the edge unless the configuration turns it on.
        if isinstance(engine, dict):
            detector = engine.get("detector")
            detector = dict(detector) if isinstance(detector, dict) else {}
            detector.setdefault("closeup_retry", False)
            return {**engine, "detector": detector}
        return engine

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        ids = [c.id for c in cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate camera ids: {', '.join(dupes)}")
        return cameras


def camera_decoder(config: EdgeConfig, camera: CameraConfig) -> Decoder:
    return camera.decoder or config.decoder


def load(path: str | Path) -> EdgeConfig:
    config = load_toml(path, EdgeConfig)
    assert isinstance(config, EdgeConfig)
    return config


_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]*)@")


def redact(text: str) -> str:
    """Replace passwords in URLs (rtsp://user:pass@host → rtsp://user:***@host)."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)

"""Prometheus metrics of the edge daemon, read from the live counters at scrape time.

A custom collector (no counters of our own to keep in step): each scrape reads the readers' `CaptureStats`,
the pipelines' `PipelineStats` and the publisher's counters. Latencies are quantiles of the most recent samples
each stage keeps (a sliding window, as Prometheus summaries have), exposed as gauges with a `quantile` label
because there is no cumulative sum/count behind them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

PREFIX = "revisit_edge"
QUANTILES = (0.5, 0.9, 0.99)

# (metric name, attribute of CaptureStats, help)
READER_COUNTERS = (
    ("camera_frames_read", "frames_read", "Frames read (decoded or grabbed) from the camera"),
    ("camera_frames_sampled", "frames_sampled", "Frames taken by the fps sampler"),
    ("camera_frames_dropped", "dropped", "Sampled frames replaced before analysis (the analysis was busy)"),
    ("camera_reconnects", "reconnects", "Reconnections to the camera"),
    ("camera_stalls", "stalls", "Streams that stalled (no frame for stall_s) and were reopened"),
)
# (metric name, attribute of PipelineStats, help)
PIPELINE_COUNTERS = (
    ("frames_analyzed", "frames_analyzed", "Sampled frames analysed"),
    ("frames_motion_skipped", "motion_skipped", "Analysed frames the motion gate kept from the detector"),
    ("detector_calls", "detector_calls", "Detector runs"),
    ("detections_batched", "detections_batched", "Frames detected in one call with other cameras' frames"),
    ("faces_detected", "faces_detected", "Faces found by the detector"),
    ("faces_dead_zone", "faces_in_dead_zones", "Faces dropped because their centre is in a dead zone"),
    ("faces_outside_roi", "faces_outside_roi", "Faces dropped because their centre is outside the ROI"),
    ("tracks_started", "tracks_started", "Tracks confirmed"),
    ("tracks_published", "tracks_published", "Tracks that produced an observation"),
    ("tracks_unembeddable", "tracks_unembeddable", "Tracks that ended without an embeddable shot"),
    ("observations", "observations", "Observations produced"),
    ("embeddings", "embed_calls", "Face embeddings computed"),
)


class CameraSource(Protocol):
    """What the collector reads per camera (the daemon's per-camera runtime)."""

    reader: Any  # .stats: CaptureStats
    pipeline: Any  # .stats: PipelineStats
    frame_ms: Iterable[float]  # frame capture → analysed, ms


class PublisherSource(Protocol):
    stats: Any  # PublisherStats (latency_ms)

    def counters(self) -> dict[str, float]: ...


def quantiles(samples: Iterable[float]) -> list[tuple[float, float]]:
    values = np.fromiter(samples, dtype=np.float64)
    if values.size == 0:
        return []
    return [(q, float(v)) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)]


class EdgeCollector(Collector):
    def __init__(
        self,
        cameras: Callable[[], Mapping[str, CameraSource]],
        publisher: PublisherSource | None,
        extra: Callable[[], dict[str, float]] | None = None,
    ):
        """`extra`: more gauges by name (without prefix), e.g. the processing loop's tick age."""
        self.cameras = cameras
        self.publisher = publisher
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        cams = self.cameras()
        yield from self._camera_metrics(cams)
        if self.publisher is not None:
            yield from self._publisher_metrics(self.publisher)
        if self.extra is not None:
            for name, value in self.extra().items():
                yield GaugeMetricFamily(f"{PREFIX}_{name}", name.replace("_", " "), value=value)

    def _camera_metrics(self, cams: Mapping[str, CameraSource]) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            f"{PREFIX}_camera_connected", "1 while the camera stream is open", labels=["camera"]
        )
        for cam_id, cam in cams.items():
            connected.add_metric([cam_id], float(bool(cam.reader.stats.connected)))
        yield connected
        for name, attr, doc in READER_COUNTERS:
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["camera"])
            for cam_id, cam in cams.items():
                family.add_metric([cam_id], float(getattr(cam.reader.stats, attr, 0)))
            yield family
        for name, attr, doc in PIPELINE_COUNTERS:
            family = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["camera"])
            for cam_id, cam in cams.items():
                family.add_metric([cam_id], float(getattr(cam.pipeline.stats, attr, 0)))
            yield family
        stage = GaugeMetricFamily(
            f"{PREFIX}_stage_latency_ms",
            "Per-stage latency quantiles over the recent samples (ms)",
            labels=["camera", "stage", "quantile"],
        )
        frame = GaugeMetricFamily(
            f"{PREFIX}_frame_latency_ms",
            "Frame capture to analysis done, quantiles over the recent frames (ms)",
            labels=["camera", "quantile"],
        )
        for cam_id, cam in cams.items():
            for stage_name, samples in cam.pipeline.stats.latencies().items():
                for q, v in quantiles(samples):
                    stage.add_metric([cam_id, stage_name, str(q)], v)
            for q, v in quantiles(list(cam.frame_ms)):
                frame.add_metric([cam_id, str(q)], v)
        yield stage
        yield frame

    def _publisher_metrics(self, pub: PublisherSource) -> Iterator[Metric]:
        c = pub.counters()
        counters = (
            ("observations_sent", "published", "Observations handed to MQTT (replays count again)"),
            ("observations_acked", "acked", "Observations acknowledged by the broker (PUBACK)"),
            ("observations_unspooled", "unspooled", "Observations the spool could not store (sent from memory)"),
            ("spool_dropped", "spool_dropped", "Oldest spooled observations dropped to respect spool.max_mb"),
            ("spool_disk_full", "spool_disk_full", "Spool writes refused because the disk was full"),
            ("spool_errors", "spool_errors", "Other spool failures"),
            ("mqtt_connects", "connects", "Connections to the broker"),
            ("mqtt_disconnects", "disconnects", "Connections to the broker lost"),
            ("mqtt_connect_failures", "connect_failures", "Failed connection attempts"),
            ("observations_confirmed", "confirmed", "Observations central confirmed stored (delivery = stored)"),
            ("observations_resent", "resent", "Unconfirmed observations sent again after their timeout"),
            ("observations_rejected_by_central", "rejected_by_central", "Observations central refused for good"),
            ("bad_acks", "bad_acks", "Acknowledgements from central that did not follow the schema"),
        )
        for name, key, doc in counters:
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=c.get(key, 0.0))
        gauges = (
            ("spool_depth", "spool_depth", "Observations in the spool: not yet delivered (stored mode: unconfirmed)"),
            ("spool_oldest_seconds", "spool_oldest_s", "Age of the oldest observation in the spool"),
            ("observations_unconfirmed", "unconfirmed", "Observations PUBACKed and not yet confirmed by central"),
            ("spool_bytes", "spool_bytes", "Payload bytes in the spool"),
            ("mqtt_connected", "connected", "1 while connected to the broker"),
            ("mqtt_inflight", "inflight", "Observations sent and not yet acknowledged"),
        )
        for name, key, doc in gauges:
            yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=c.get(key, 0.0))
        latency = GaugeMetricFamily(
            f"{PREFIX}_publish_latency_ms",
            "Frame that completed an observation to its delivery (PUBACK, or central's confirmation), quantiles (ms)",
            labels=["quantile"],
        )
        for q, v in quantiles(list(pub.stats.latency_ms)):
            latency.add_metric([str(q)], v)
        yield latency


def make_registry(collector: EdgeCollector, process: bool = True) -> CollectorRegistry:
    """A registry of its own (not the global one), so several daemons can live in one process (tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)  # CPU seconds, memory, open fds of this process
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

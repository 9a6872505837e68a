"""The live server: status page, MJPEG, snapshots, /metrics (parsed by prometheus_client), /healthz, 404s."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections import deque
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from revisit.edge.capture import CaptureStats
from revisit.edge.config import LiveConfig, redact
from revisit.edge.live import BOUNDARY, LiveServer
from revisit.edge.metrics import EdgeCollector, make_registry, render
from revisit.edge.pipeline import PipelineStats
from revisit.edge.publish import PublisherStats


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes()


class FakePublisher:
    def __init__(self) -> None:
        self.stats = PublisherStats()
        self.stats.latency_ms.extend([5.0, 7.0, 40.0])

    def counters(self) -> dict[str, float]:
        return {"published": 3, "acked": 2, "spool_depth": 1, "connected": 1}


class FakeSource:
    """A LiveSource over real stats objects, with a frame counter that changes per snapshot."""

    def __init__(self) -> None:
        self.cams = {
            "door": SimpleNamespace(
                reader=SimpleNamespace(
                    stats=CaptureStats(frames_read=100, frames_sampled=20, dropped=2, reconnects=1, connected=True)
                ),
                pipeline=SimpleNamespace(
                    stats=PipelineStats(
                        frames_analyzed=20, motion_skipped=12, detector_calls=8, faces_detected=5, embed_calls=2
                    )
                ),
                frame_ms=deque([30.0, 35.0, 90.0]),
                source="rtsp://user:hunter2@10.0.0.5/<script>alert(1)</script>",
            ),
        }
        self.cams["door"].pipeline.stats.detect_ms.extend([20.0, 25.0, 30.0])
        self.snapshots = 0
        self.registry = make_registry(EdgeCollector(lambda: self.cams, FakePublisher()))
        self.healthy = True

    def camera_ids(self) -> list[str]:
        return list(self.cams)

    def snapshot_jpeg(self, camera_id: str) -> bytes:
        self.snapshots += 1
        return _jpeg(self.snapshots % 256)

    def status(self) -> dict:
        cam = self.cams["door"]
        return {
            "site": "s1",
            "device": "d<1>",
            "uptime_s": 12.0,
            "publisher": {"connected": 1, "spool_depth": 0},
            "cameras": [
                {
                    "id": "door",
                    "source": redact(cam.source),
                    "connected": True,
                    "fps": 4.9,
                    "last_error": "<b>boom</b>",
                    **cam.pipeline.stats.counters(),
                }
            ],
        }

    def metrics(self) -> tuple[bytes, str]:
        return render(self.registry), CONTENT_TYPE_LATEST

    def health(self) -> tuple[bool, str]:
        return self.healthy, "ok" if self.healthy else "processing loop stuck"


@pytest.fixture
def live():
    source = FakeSource()
    server = LiveServer(LiveConfig(bind="127.0.0.1", port=0, mjpeg_fps=20), source).start()
    yield server, source
    server.stop()


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_port_zero_binds_a_free_port(live):
    server, _ = live
    assert server.port > 0 and server.url.endswith(f":{server.port}")


def test_status_page_escapes_and_redacts(live):
    server, _ = live
    status, headers, body = _get(server.url + "/")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "hunter2" not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<b>boom</b>" not in text and "d&lt;1&gt;" in text
    assert "/camera/door.mjpg" in text


def test_snapshot_and_unknown_camera(live):
    server, _ = live
    status, headers, body = _get(server.url + "/camera/door.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body.startswith(b"\xff\xd8")
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert _get(server.url + "/camera/nope.jpg")[0] == 404
    assert _get(server.url + "/camera/nope.mjpg")[0] == 404
    assert _get(server.url + "/camera/../etc/passwd")[0] == 404
    assert _get(server.url + "/nothing")[0] == 404


def test_mjpeg_stream_parts(live):
    server, _ = live
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/camera/door.mjpg")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    frames = []
    for _ in range(3):
        assert resp.fp.readline() == f"--{BOUNDARY}\r\n".encode()
        headers = {}
        while (line := resp.fp.readline()) != b"\r\n":
            key, value = line.decode().split(":", 1)
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        data = resp.fp.read(int(headers["content-length"]))
        assert resp.fp.read(2) == b"\r\n"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (48, 64, 3)
        frames.append(int(image[0, 0, 0]))
    assert len(set(frames)) == 3  # new frames keep coming
    conn.close()


def test_metrics_parse(live):
    server, _ = live
    status, headers, body = _get(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"] == CONTENT_TYPE_LATEST
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    cam = (("camera", "door"),)
    assert samples[("revisit_edge_camera_frames_read_total", cam)] == 100
    assert samples[("revisit_edge_frames_analyzed_total", cam)] == 20
    assert samples[("revisit_edge_frames_motion_skipped_total", cam)] == 12
    assert samples[("revisit_edge_detector_calls_total", cam)] == 8
    assert samples[("revisit_edge_embeddings_total", cam)] == 2
    assert samples[("revisit_edge_camera_frames_dropped_total", cam)] == 2
    assert samples[("revisit_edge_camera_reconnects_total", cam)] == 1
    assert samples[("revisit_edge_camera_connected", cam)] == 1
    assert samples[("revisit_edge_spool_depth", ())] == 1
    assert (
        samples[("revisit_edge_stage_latency_ms", (("camera", "door"), ("quantile", "0.5"), ("stage", "detect")))]
        == 25.0
    )
    assert ("revisit_edge_frame_latency_ms", (("camera", "door"), ("quantile", "0.99"))) in samples
    assert ("revisit_edge_publish_latency_ms", (("quantile", "0.5"),)) in samples
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


def test_healthz(live):
    server, source = live
    assert _get(server.url + "/healthz")[:1] == (200,)
    source.healthy = False
    status, _, body = _get(server.url + "/healthz")
    assert status == 503 and b"stuck" in body


def test_stop_ends_streams(live):
    server, _ = live
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/camera/door.mjpg")
    resp = conn.getresponse()
    resp.fp.readline()
    server.stop()
    data = resp.read()  # returns (connection closed) instead of hanging until the timeout
    assert isinstance(data, bytes)
    conn.close()

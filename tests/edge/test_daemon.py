"""The daemon end to end with the real parts: RTSP (GStreamer) → EdgeDaemon → Mosquitto → a test subscriber.

A real clip of one speaker, the real models, real 512-d embeddings; SIGTERM flushes the open track and exits 0;
systemd's notification socket sees READY, WATCHDOG and STOPPING; an unreachable camera is retried without
stopping the other one, and no password reaches the log.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from revisit.edge.config import EdgeConfig
from revisit.shared.schema import DeviceStatus, Observation, decode
from tests.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
REVISIT = Path(sys.executable).with_name("revisit")
SITE, DEVICE = "site1", "box1"

pytestmark = [pytest.mark.models, pytest.mark.slow]


def _config_text(tmp_path: Path, broker_port: int, live_port: int, cameras: list[tuple[str, str]]) -> str:
    cams = "".join(f'[[cameras]]\nid = "{cid}"\nsource = "{src}"\nfps = 5\n' for cid, src in cameras)
    return (
        f'site = "{SITE}"\ndevice = "{DEVICE}"\nstate_dir = "{tmp_path / "state"}"\nstall_s = 8\n'
        "reconnect_max_s = 2\n"
        f"[broker]\nport = {broker_port}\nheartbeat_s = 1\nreconnect_max_s = 2\n"
        f'[live]\nbind = "127.0.0.1"\nport = {live_port}\n'
        f"{cams}"
    )


def _metric(port: int, name: str, camera: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels.get("camera") == camera:
                return s.value
    return -1


def _check_observation(obs: Observation) -> None:
    assert (obs.site, obs.device, obs.camera) == (SITE, DEVICE, "door")
    assert obs.embedding_dim == 512 and abs(float(np.linalg.norm(obs.vector())) - 1) < 1e-3
    assert obs.recognizer_id.startswith("w600k_mbf")
    crop = cv2.imdecode(np.frombuffer(obs.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and min(crop.shape[:2]) >= 32
    assert tuple(obs.frame_size) == (360, 288)


def test_rtsp_to_mqtt_end_to_end(rtsp_server, grid_clip, models_dir, mosquitto, mqtt_subscriber, tmp_path):
    server = rtsp_server(grid_clip)
    sub = mqtt_subscriber(f"revisit/v1/{SITE}/{DEVICE}/#")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.5)
    live_port = free_port()
    dead = f"rtsp://viewer:pw-dead-cam@127.0.0.1:{free_port()}/nothing"
    config = tmp_path / "edge.toml"
    config.write_text(_config_text(tmp_path, mosquitto.port, live_port, [("door", server.url()), ("dead", dead)]))
    log = tmp_path / "edge.log"
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(REVISIT), "edge", "run", "--config", str(config), "--models", str(models_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    messages: list[bytes] = []

    def drain(until: float, want: bytes | None = None) -> bool:
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                messages.append(notify.recv(4096))
            if want is not None and any(want in m for m in messages):
                return True
            if proc.poll() is not None:
                return False
        return want is None

    try:
        assert drain(time.monotonic() + 60, b"READY=1"), f"no READY=1: {log.read_text()[-3000:]}"
        deadline = time.monotonic() + 45
        while _metric(live_port, "revisit_edge_embeddings_total", "door") < 1 and time.monotonic() < deadline:
            drain(time.monotonic() + 0.5)
        assert _metric(live_port, "revisit_edge_embeddings_total", "door") >= 1, log.read_text()[-3000:]
        assert _metric(live_port, "revisit_edge_camera_connected", "dead") == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{live_port}/healthz", timeout=2) as r:
            assert r.status == 200
        drain(time.monotonic() + 1.2)
        assert any(b"WATCHDOG=1" in m for m in messages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
        notify.setblocking(False)
        while True:  # what the daemon sent before it exited
            try:
                messages.append(notify.recv(4096))
            except BlockingIOError:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert any(b"STOPPING=1" in m for m in messages)

    text = log.read_text()
    assert "event=tracks_flushed" in text and "event=edge_stopped" in text
    assert "s3cret-pw" not in text and "pw-dead-cam" not in text  # passwords never logged
    assert "camera dead" in text and "viewer:***@" in text  # the dead camera is named, retried, redacted

    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/faces") for m in msgs), 15), text[-3000:]
    observations = [decode(p) for p in sub.payloads("/faces")]
    for obs in observations:
        _check_observation(obs)
    assert len({o.observation_id for o in observations}) == len(observations)
    assert sub.wait_for(lambda msgs: decode(msgs[-1].payload, DeviceStatus).state == "offline", 10)
    statuses = [decode(p, DeviceStatus) for p in sub.payloads("/status")]
    assert statuses[0].state == "online" and statuses[-1].state == "offline"
    assert "door.frames_analyzed" in statuses[0].stats or any("door.frames_analyzed" in s.stats for s in statuses)


def test_in_process_daemon_flushes_and_annotates(grid_clip, models_dir, engine, mosquitto, mqtt_subscriber, tmp_path):
    """A file camera (played at its own pace) through the daemon in this process: the live view draws the
    track, request_stop + shutdown spools and sends the open track, the spool ends empty."""
    from revisit.edge.daemon import EdgeDaemon
    from revisit.edge.notify import Notifier

    sub = mqtt_subscriber(f"revisit/v1/{SITE}/{DEVICE}/faces")
    config = EdgeConfig.model_validate(
        {
            "site": SITE,
            "device": DEVICE,
            "state_dir": str(tmp_path / "state"),
            "broker": {"port": mosquitto.port, "delivery": "broker"},  # no central here to confirm
            "live": {"bind": "127.0.0.1", "port": 0},
            "cameras": [{"id": "door", "source": str(grid_clip)}],
        }
    )
    daemon = EdgeDaemon(config, engine=engine, notifier=Notifier({}))
    daemon.start()
    try:
        cam = daemon.cameras["door"]
        deadline = time.monotonic() + 30
        while cam.pipeline.stats.embed_calls < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cam.pipeline.stats.embed_calls >= 1
        assert daemon.health() == (True, "ok")
        with urllib.request.urlopen(f"{daemon.live.url}/camera/door.jpg", timeout=5) as r:
            image = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
        b, g, r = (image[:, :, i].astype(int) for i in range(3))
        cv2.imwrite(str(tmp_path / "snapshot.jpg"), image)
        assert ((g - np.maximum(b, r)) > 80).sum() > 100, tmp_path / "snapshot.jpg"  # the track's green box
        with urllib.request.urlopen(f"{daemon.live.url}/", timeout=5) as r:
            assert b"door" in r.read()
        open_before = cam.pipeline.tracker.alive
        sent_before = cam.pipeline.stats.observations
    finally:
        daemon.request_stop()
        daemon.shutdown()
    assert open_before and sent_before == 0  # one speaker, one track still open when the stop came
    assert daemon.flushed >= 1
    assert sub.wait_for(lambda msgs: len(msgs) >= 1, 10)
    for payload in sub.payloads():
        _check_observation(decode(payload))
    assert daemon.publisher.spool.stats.depth == 0


@pytest.mark.parametrize("batch_detect", [True, False])
def test_cameras_share_one_detector_call_where_the_backend_gains(videos, models_dir, mosquitto, tmp_path, batch_detect):
    """Three file cameras on a batch-capable YuNet whose session says batches pay (as TensorRT's does): frames
    ready together go to the detector in one call (unless batch_detect = false), and the tracks still come out."""
    pytest.importorskip("onnx", reason="writing the batch-capable YuNet needs the onnx package (dev extra)")
    from revisit.edge.daemon import EdgeDaemon
    from revisit.edge.notify import Notifier
    from revisit.models.batchable import make_batchable_yunet

    clips = sorted(videos.glob("grid_*.mpg"))[:3]
    if len(clips) < 3:
        pytest.skip(f"fewer than 3 grid_*.mpg clips in {videos}")
    path = tmp_path / "yunet_batch.onnx"
    sha = make_batchable_yunet(models_dir / "yunet_2026may.onnx", path)
    config = EdgeConfig.model_validate(
        {
            "site": SITE,
            "device": DEVICE,
            "state_dir": str(tmp_path / "state"),
            "broker": {"port": mosquitto.port},
            "live": {"enabled": False},
            "batch_detect": batch_detect,
            "motion": {"enabled": False},  # every frame to the detector: frames of the cameras meet
            "engine": {
                "detector": {"model": "yunet_batch"},
                "custom_models": [{"name": "yunet_batch", "family": "yunet", "path": str(path), "sha256": sha}],
            },
            "cameras": [{"id": f"cam{i}", "source": str(clip)} for i, clip in enumerate(clips)],
        }
    )
    daemon = EdgeDaemon(config, models_dir, notifier=Notifier({}))
    daemon.engine.detector.session.prefers_batches = True  # ONNX Runtime on a CPU says no (README)
    assert daemon.engine.detector.batching
    daemon.start()
    try:
        deadline = time.monotonic() + 30
        cams = list(daemon.cameras.values())
        while time.monotonic() < deadline and (
            sum(c.pipeline.stats.detections_batched for c in cams) < (6 if batch_detect else 0)
            or min(c.pipeline.stats.tracks_started for c in cams) < 1
            or min(c.pipeline.stats.detector_calls for c in cams) < 10
        ):
            time.sleep(0.1)
    finally:
        daemon.request_stop()
        daemon.shutdown()
    stats = [c.pipeline.stats for c in cams]
    batched = sum(s.detections_batched for s in stats)
    assert batched >= 6 if batch_detect else batched == 0, [s.counters() for s in stats]
    assert all(s.tracks_started >= 1 for s in stats), [s.counters() for s in stats]
    assert daemon.loop_errors == 0

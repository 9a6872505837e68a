"""Benchmark of the edge daemon: N cameras streamed over RTSP on loopback at 25 fps, sampled at 5 fps.

    .venv/bin/python bench/edge.py [--cameras 4] [--seconds 60] [--naive-seconds 60] [--models DIR]

Phase 1 runs the daemon's real components (`EdgeDaemon`: readers, motion gate, detector, tracker, recogniser,
spool, MQTT to a throwaway Mosquitto) and measures, after a warm-up, over `--seconds`:
  cpu_pct           CPU of this process (all its threads) / wall time, in % of one core (this box has
                    `os.cpu_count()` cores); the RTSP servers (x264 encoders) are measured apart
  fps               analysed frames per second, per camera
  drops             sampled frames replaced before the loop took them (the analysis was busy), per camera
  frame_ms p50/p95  frame capture → analysis done
  publish_ms p50/p95  frame that completed an observation → the broker's PUBACK (long tracks publish every
                    `publish_interval_s`, set to 10 s here so a minute has observations)
Phase 2 is the per-frame naive baseline on the same streams: every frame (25 fps), detect + embed every face,
newest frame first; what it cannot keep up with is dropped.

Prints a table and, as the last line, one JSON object. Not a test. Needs /usr/bin/python3 with GStreamer's RTSP
server (tests/edge/rtsp_server.py), /usr/sbin/mosquitto and the real models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.mosquitto

from revisit.edge.capture import CameraReader  # noqa: E402
from revisit.edge.config import CameraConfig, EdgeConfig  # noqa: E402
from revisit.edge.daemon import EdgeDaemon  # noqa: E402
from revisit.edge.notify import Notifier  # noqa: E402
from revisit.edge.pipeline import NaivePipeline  # noqa: E402
from revisit.shared.engine import FaceEngine  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

RTSP_SERVER = REPO / "tests" / "edge" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
VIDEOS = REPO.parent / "shared" / "facedata" / "dev" / "videos"
TICKS = os.sysconf("SC_CLK_TCK")


def start_rtsp(video: Path | None) -> tuple[subprocess.Popen, str]:
    cmd = [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", "0", "--fps", "25"]
    if video is not None:
        cmd += ["--video", str(video), "--loop"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.isdigit():
        proc.kill()
        raise SystemExit(f"RTSP server did not start ({' '.join(cmd)})")
    return proc, f"rtsp://127.0.0.1:{line}/cam"


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(samples: list[float], q: float) -> float | None:
    return round(float(np.percentile(samples, q)), 1) if samples else None


def wait_connected(readers: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.stats.connected and r.stats.frames_read > 0 for r in readers):
        if time.monotonic() > deadline:
            raise SystemExit("cameras did not connect: " + ", ".join(str(r.stats.last_error) for r in readers))
        time.sleep(0.2)


def phase_daemon(
    engine: FaceEngine, urls: list[str], seconds: float, warmup: float, state: Path, broker_port: int
) -> dict:
    config = EdgeConfig.model_validate(
        {
            "site": "bench",
            "device": "edge",
            "state_dir": str(state),
            "stall_s": 15,
            "broker": {"port": broker_port},
            "live": {"enabled": False},
            "recognise": {"publish_interval_s": 10},
            "cameras": [{"id": f"cam{i}", "source": url, "fps": 5} for i, url in enumerate(urls)],
        }
    )
    daemon = EdgeDaemon(config, engine=engine, notifier=Notifier({}))
    daemon.start()
    try:
        cams = list(daemon.cameras.values())
        wait_connected([c.reader for c in cams], 60)
        time.sleep(warmup)
        before = {
            c.config.id: (
                c.pipeline.stats.frames_analyzed,
                c.reader.stats.dropped,
                c.reader.stats.frames_sampled,
                c.reader.stats.frames_read,
                c.pipeline.stats.detector_calls,
                c.pipeline.stats.embed_calls,
            )
            for c in cams
        }
        for c in cams:
            c.frame_ms.clear()
        daemon.publisher.stats.latency_ms.clear()
        acked0 = daemon.publisher.stats.acked
        cpu0, t0 = self_cpu_s(), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = self_cpu_s(), time.monotonic()
        wall = t1 - t0
        frame_ms: list[float] = []
        per_cam = {}
        for c in cams:
            a0, d0, s0, r0, det0, emb0 = before[c.config.id]
            samples = list(c.frame_ms)
            frame_ms += samples
            per_cam[c.config.id] = {
                "fps": round((c.pipeline.stats.frames_analyzed - a0) / wall, 2),
                "read_fps": round((c.reader.stats.frames_read - r0) / wall, 1),
                "sampled": c.reader.stats.frames_sampled - s0,
                "drops": c.reader.stats.dropped - d0,
                "detector_calls": c.pipeline.stats.detector_calls - det0,
                "embed_calls": c.pipeline.stats.embed_calls - emb0,
                "frame_ms_p50": pct(samples, 50),
                "frame_ms_p95": pct(samples, 95),
            }
        publish_ms = list(daemon.publisher.stats.latency_ms)
        return {
            "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "wall_s": round(wall, 1),
            "cameras": per_cam,
            "fps_total": round(sum(v["fps"] for v in per_cam.values()), 2),
            "drops_total": sum(v["drops"] for v in per_cam.values()),
            "sampled_total": sum(v["sampled"] for v in per_cam.values()),
            "frame_ms_p50": pct(frame_ms, 50),
            "frame_ms_p95": pct(frame_ms, 95),
            "publish_ms_p50": pct(publish_ms, 50),
            "publish_ms_p95": pct(publish_ms, 95),
            "observations_acked": daemon.publisher.stats.acked - acked0,
            "embed_calls": sum(v["embed_calls"] for v in per_cam.values()),
        }
    finally:
        daemon.request_stop()
        daemon.shutdown()


def phase_naive(engine: FaceEngine, urls: list[str], seconds: float, warmup: float) -> dict:
    """Every frame (the readers take all 25 fps), detect + embed every face, round-robin, newest first."""
    cams = [CameraConfig(id=f"cam{i}", source=url, fps=60) for i, url in enumerate(urls)]
    readers = [CameraReader(c, stall_s=15, reconnect_max_s=5).start() for c in cams]
    pipes = [NaivePipeline(engine) for _ in cams]
    stop = threading.Event()
    frame_ms: list[list[float]] = [[] for _ in cams]
    measuring = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            busy = False
            for i, (reader, pipe) in enumerate(zip(readers, pipes, strict=True)):
                frame = reader.get(timeout=0)
                if frame is None:
                    continue
                busy = True
                pipe.process(frame)
                if measuring.is_set():
                    frame_ms[i].append((time.time() - frame.ts) * 1000)
            if not busy:
                stop.wait(0.01)

    worker = threading.Thread(target=loop, daemon=True)
    try:
        wait_connected(readers, 60)
        worker.start()
        time.sleep(warmup)
        before = [
            (p.stats.frames_analyzed, r.stats.dropped, r.stats.frames_sampled, r.stats.frames_read)
            for p, r in zip(pipes, readers, strict=True)
        ]
        embeds0 = sum(p.stats.embed_calls for p in pipes)
        measuring.set()
        cpu0, t0 = self_cpu_s(), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = self_cpu_s(), time.monotonic()
        wall = t1 - t0
        per_cam = {}
        for c, p, r, (a0, d0, s0, r0), samples in zip(cams, pipes, readers, before, frame_ms, strict=True):
            per_cam[c.id] = {
                "fps": round((p.stats.frames_analyzed - a0) / wall, 2),
                "read_fps": round((r.stats.frames_read - r0) / wall, 1),
                "sampled": r.stats.frames_sampled - s0,
                "drops": r.stats.dropped - d0,
                "frame_ms_p50": pct(samples, 50),
                "frame_ms_p95": pct(samples, 95),
            }
        all_ms = [v for s in frame_ms for v in s]
        return {
            "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "wall_s": round(wall, 1),
            "cameras": per_cam,
            "fps_total": round(sum(v["fps"] for v in per_cam.values()), 2),
            "drops_total": sum(v["drops"] for v in per_cam.values()),
            "sampled_total": sum(v["sampled"] for v in per_cam.values()),
            "frame_ms_p50": pct(all_ms, 50),
            "frame_ms_p95": pct(all_ms, 95),
            "embed_calls": sum(p.stats.embed_calls for p in pipes) - embeds0,
        }
    finally:
        stop.set()
        for r in readers:
            r.stop()
        if worker.is_alive():
            worker.join(timeout=30)


def table(name: str, result: dict) -> str:
    drop_pct = 100 * result["drops_total"] / max(1, result["sampled_total"])
    lines = [
        f"{name}: CPU {result['cpu_pct']}% of one core over {result['wall_s']} s, "
        f"{result['fps_total']} fps analysed in all, drops {result['drops_total']} of "
        f"{result['sampled_total']} sampled ({drop_pct:.1f}%), "
        f"frame→analysed p50/p95 {result['frame_ms_p50']}/{result['frame_ms_p95']} ms"
        + (
            f", frame→PUBACK p50/p95 {result['publish_ms_p50']}/{result['publish_ms_p95']} ms "
            f"({result['observations_acked']} observations)"
            if "publish_ms_p50" in result
            else ""
        )
    ]
    lines.append(
        f"  {'camera':<8}{'read fps':>10}{'analysed fps':>14}{'sampled':>9}{'drops':>7}{'p50 ms':>9}{'p95 ms':>9}"
    )
    for cam, v in result["cameras"].items():
        lines.append(
            f"  {cam:<8}{v['read_fps']:>10}{v['fps']:>14}{v['sampled']:>9}{v['drops']:>7}"
            f"{v['frame_ms_p50']!s:>9}{v['frame_ms_p95']!s:>9}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60, help="measured time of the daemon phase")
    parser.add_argument("--naive-seconds", type=float, default=None, help="of the naive phase (default: --seconds)")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--models", help="model directory (default: $REVISIT_MODELS, else ../shared/models)")
    parser.add_argument(
        "--video",
        type=Path,
        action="append",
        help="video to stream (repeat; default: the grid_*.mpg clips, else a test pattern)",
    )
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    models = args.models or os.environ.get("REVISIT_MODELS") or str(REPO.parent / "shared" / "models")
    videos = args.video or sorted(VIDEOS.glob("grid_*.mpg")) or [None]
    engine = FaceEngine(models_dir=models)
    servers = [start_rtsp(videos[i % len(videos)]) for i in range(args.cameras)]
    urls = [url for _, url in servers]
    rtsp_cpu0 = sum(proc_cpu_s(p.pid) for p, _ in servers)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="revisit-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        try:
            daemon = phase_daemon(engine, urls, args.seconds, args.warmup, Path(tmp) / "state", broker.port)
            naive = (
                None if args.skip_naive else phase_naive(engine, urls, args.naive_seconds or args.seconds, args.warmup)
            )
        finally:
            broker.stop()
            rtsp_cpu = sum(proc_cpu_s(p.pid) for p, _ in servers) - rtsp_cpu0
            rtsp_wall = time.monotonic() - t_start
            for proc, _ in servers:
                proc.kill()
                proc.wait()
    result = {
        "cameras": args.cameras,
        "stream_fps": 25,
        "sample_fps": 5,
        "cores": os.cpu_count(),
        "videos": [v.name if v else "pattern" for v in videos[: args.cameras]],
        "detector": engine.config.detector.model,
        "recognizer_id": engine.recognizer_id,
        "rtsp_servers_cpu_pct": round(100 * rtsp_cpu / rtsp_wall, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "daemon": daemon,
        "naive": naive,
    }
    print(
        f"{args.cameras} cameras over RTSP at 25 fps on {os.cpu_count()} cores; RTSP servers (x264) used "
        f"{result['rtsp_servers_cpu_pct']}% of one core; peak RSS {result['max_rss_mb']} MB"
    )
    print(table("daemon (5 fps sampled, motion gate, tracking, embed once per track)", daemon))
    if naive:
        print(table("naive (every frame, detect + embed every face)", naive))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

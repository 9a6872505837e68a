"""Benchmark of the edge daemon: N cameras streamed over RTSP on loopback at 25 fps, sampled at 5 fps.

    .venv/bin/python bench/edge.py [--cameras 4] [--seconds 30] [--decoders ffmpeg,gstreamer] [--models DIR]

The cameras: by default the 1080p25 H.264 clip `facedata/dev/videos/facenetpt_video.mp4` (read at run time),
served by one GStreamer RTSP server per camera *without re-encoding* (tests/edge/rtsp_server.py --passthrough:
the server costs next to nothing, so the figures are the edge's), looped forever. `--video` other clips are
re-encoded by x264 (costly at 1080p: the servers' CPU is printed apart).

Phases, one after the other on the same streams, each after a warm-up:
  capture (per decoder)  the camera readers alone (decode, sample 5 fps, convert the sampled frames): the
                         decoding share of the CPU
  daemon (per decoder)   `EdgeDaemon` with its real components (readers, motion gate, detector, tracker,
                         recogniser, spool, MQTT to a throwaway Mosquitto)
  naive                  the per-frame baseline: every frame (25 fps), detect + embed every face, newest frame
                         first; what it cannot keep up with is dropped
Per phase: cpu_pct (this process, all threads, % of one core over the wall time), analysed fps (total and the
slowest/fastest camera), drops (sampled frames replaced before the loop took them), stalls, frame→analysed
p50/p95 (frame captured → its analysis done), frame→PUBACK p50/p95 (the frame that completed an observation →
the broker's acknowledgement; long tracks publish every `publish_interval_s`, 10 s here), RSS at the end.

Prints a table and, as the last line, one JSON object. Not a test. Needs /usr/bin/python3 with GStreamer's RTSP
server, /usr/sbin/mosquitto, the real models, and PyGObject in the venv for the gstreamer decoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
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
from revisit.shared.config import DetectorSettings, EngineConfig  # noqa: E402
from revisit.shared.engine import FaceEngine  # noqa: E402
from tests.mosquitto import Mosquitto  # noqa: E402

RTSP_SERVER = REPO / "tests" / "edge" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
VIDEOS = Path(os.environ.get("REVISIT_FACEDATA") or REPO.parent / "shared" / "facedata" / "dev") / "videos"
DEFAULT_CLIP = "facenetpt_video.mp4"  # 1080p25 H.264, several people walking towards the camera
TICKS = os.sysconf("SC_CLK_TCK")


def start_rtsp(video: Path | None, passthrough: bool) -> tuple[subprocess.Popen, str]:
    cmd = [SYSTEM_PYTHON, str(RTSP_SERVER), "--port", "0", "--fps", "25"]
    if video is not None:
        cmd += ["--video", str(video), "--passthrough" if passthrough else "--loop"]
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


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pct(samples: list[float], q: float) -> float | None:
    return round(float(np.percentile(samples, q)), 1) if samples else None


def wait_connected(readers: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(r.stats.connected and r.stats.frames_read > 0 for r in readers):
        if time.monotonic() > deadline:
            raise SystemExit("cameras did not connect: " + ", ".join(str(r.stats.last_error) for r in readers))
        time.sleep(0.2)


def phase_capture(urls: list[str], decoder: str, seconds: float, warmup: float) -> dict:
    """The readers alone at 5 fps, their frames taken at once: what decoding (and sampling) costs."""
    cams = [CameraConfig(id=f"cam{i}", source=url, fps=5) for i, url in enumerate(urls)]
    readers = [CameraReader(c, decoder=decoder, stall_s=15, reconnect_max_s=5).start() for c in cams]
    stop = threading.Event()

    def take() -> None:
        while not stop.is_set():
            if not any(r.get(timeout=0) is not None for r in readers):
                stop.wait(0.01)

    taker = threading.Thread(target=take, daemon=True)
    try:
        wait_connected(readers, 60)
        taker.start()
        time.sleep(warmup)
        read0 = [r.stats.frames_read for r in readers]
        cpu0, t0 = self_cpu_s(), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = self_cpu_s(), time.monotonic()
        wall = t1 - t0
        read_fps = [round((r.stats.frames_read - a) / wall, 1) for r, a in zip(readers, read0, strict=True)]
        return {
            "decoder": readers[0].stats.decoder,
            "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "cpu_ms_per_frame": round(1000 * (cpu1 - cpu0) / max(1, sum(read_fps) * wall), 2),
            "read_fps": read_fps,
            "wall_s": round(wall, 1),
            "stalls": sum(r.stats.stalls for r in readers),
        }
    finally:
        stop.set()
        for r in readers:
            r.stop()


def phase_daemon(
    engine: FaceEngine, urls: list[str], seconds: float, warmup: float, state: Path, broker_port: int, decoder: str
) -> dict:
    config = EdgeConfig.model_validate(
        {
            "site": "bench",
            "device": "edge",
            "state_dir": str(state),
            "stall_s": 15,
            "decoder": decoder,
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
        stalls0 = sum(c.reader.stats.stalls for c in cams)
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
        read = sum(v["read_fps"] for v in per_cam.values()) * wall
        analysed = sum(c.pipeline.stats.frames_analyzed - before[c.config.id][0] for c in cams)
        return {
            "cpu_s": round(cpu1 - cpu0, 2),
            "frames_read": round(read),
            "frames_analysed": analysed,
            "decoder": cams[0].reader.stats.decoder,
            "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "rss_mb": rss_mb(),
            "stalls": sum(c.reader.stats.stalls for c in cams) - stalls0,
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
        shutil.rmtree(state, ignore_errors=True)


def phase_naive(engine: FaceEngine, urls: list[str], seconds: float, warmup: float) -> dict:
    """Every frame (the readers take all 25 fps), detect + embed every face, round-robin, newest first."""
    cams = [CameraConfig(id=f"cam{i}", source=url, fps=60) for i, url in enumerate(urls)]
    readers = [CameraReader(c, decoder="ffmpeg", stall_s=15, reconnect_max_s=5).start() for c in cams]
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
            "decoder": readers[0].stats.decoder,
            "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "rss_mb": rss_mb(),
            "stalls": sum(r.stats.stalls for r in readers),
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


def table(name: str, result: dict, decode_pct: float | None = None) -> str:
    drop_pct = 100 * result["drops_total"] / max(1, result["sampled_total"])
    fps = [v["fps"] for v in result["cameras"].values()]
    decode = f" (decoding {decode_pct}%, the rest {round(result['cpu_pct'] - decode_pct, 1)}%)" if decode_pct else ""
    lines = [
        f"{name} [{result['decoder']}]: CPU {result['cpu_pct']}% of one core{decode} over {result['wall_s']} s, "
        f"{result['fps_total']} fps analysed (per camera {min(fps)}..{max(fps)}), drops {result['drops_total']} of "
        f"{result['sampled_total']} sampled ({drop_pct:.1f}%), stalls {result['stalls']}, "
        f"frame→analysed p50/p95 {result['frame_ms_p50']}/{result['frame_ms_p95']} ms, RSS {result['rss_mb']} MB"
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
    parser.add_argument("--seconds", type=float, default=30, help="measured time of each daemon phase")
    parser.add_argument("--naive-seconds", type=float, default=None, help="of the naive phase (default: --seconds)")
    parser.add_argument("--capture-seconds", type=float, default=15, help="of each capture-only phase")
    parser.add_argument("--warmup", type=float, default=6)
    parser.add_argument("--decoders", default="ffmpeg,gstreamer", help="comma-separated: ffmpeg, gstreamer")
    parser.add_argument("--models", help="model directory (default: $REVISIT_MODELS, else ../shared/models)")
    parser.add_argument(
        "--video",
        type=Path,
        action="append",
        help=f"video to stream, re-encoded (repeat; default: {DEFAULT_CLIP} as it is)",
    )
    parser.add_argument("--detector", help="detector model (default: the engine's, scrfd_2.5g_kps)")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    models = args.models or os.environ.get("REVISIT_MODELS") or str(REPO.parent / "shared" / "models")
    passthrough = not args.video
    videos = args.video or [VIDEOS / DEFAULT_CLIP]
    missing = [v for v in videos if not v.is_file()]
    if missing:
        raise SystemExit(f"video not found: {missing[0]} (set REVISIT_FACEDATA, or pass --video)")
    decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    engine_config = EngineConfig(
        detector=DetectorSettings(closeup_retry=False, **({"model": args.detector} if args.detector else {}))
    )
    engine = FaceEngine(engine_config, models_dir=models)
    servers = [start_rtsp(videos[i % len(videos)], passthrough) for i in range(args.cameras)]
    urls = [url for _, url in servers]
    rtsp_cpu0 = sum(proc_cpu_s(p.pid) for p, _ in servers)
    t_start = time.monotonic()
    capture: dict[str, dict] = {}
    daemon: dict[str, dict] = {}
    naive = None
    with tempfile.TemporaryDirectory(prefix="revisit-bench-") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto").start()
        try:
            for decoder in decoders:
                capture[decoder] = phase_capture(urls, decoder, args.capture_seconds, args.warmup)
                print(f"capture [{capture[decoder]['decoder']}]: {capture[decoder]}", flush=True)
            for decoder in decoders:
                daemon[decoder] = phase_daemon(
                    engine, urls, args.seconds, args.warmup, Path(tmp) / f"state-{decoder}", broker.port, decoder
                )
                print(table("daemon", daemon[decoder], capture[decoder]["cpu_pct"]), flush=True)
            if not args.skip_naive:
                naive = phase_naive(engine, urls, args.naive_seconds or args.seconds, args.warmup)
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
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "videos": [v.name for v in videos[: args.cameras]],
        "passthrough": passthrough,
        "detector": engine.config.detector.model,
        "recognizer_id": engine.recognizer_id,
        "rtsp_servers_cpu_pct": round(100 * rtsp_cpu / rtsp_wall, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "capture": capture,
        "daemon": daemon,
        "naive": naive,
    }
    print(
        f"{args.cameras} cameras over RTSP at 25 fps ({', '.join(result['videos'])}"
        f"{', not re-encoded' if passthrough else ', x264'}) on {os.cpu_count()} cores (load {result['load_avg_1m']}); "
        f"RTSP servers used {result['rtsp_servers_cpu_pct']}% of one core; peak RSS {result['max_rss_mb']} MB"
    )
    for decoder in decoders:
        c = capture[decoder]
        print(f"capture only [{c['decoder']}]: CPU {c['cpu_pct']}% of one core, {c['cpu_ms_per_frame']} ms a frame")
    for decoder in decoders:
        print(
            table(
                "daemon (5 fps sampled, motion gate, tracking, embed once per track)",
                daemon[decoder],
                capture[decoder]["cpu_pct"],
            )
        )
    # CPU time per unit of work is what a loaded machine still measures fairly: the cores N cameras would need.
    for decoder in decoders:
        d, c = daemon[decoder], capture[decoder]
        decode_ms = c["cpu_ms_per_frame"]
        analyse_ms = max(0.0, 1000 * (d["cpu_s"] - decode_ms * d["frames_read"] / 1000) / max(1, d["frames_analysed"]))
        need = (decode_ms * 25 + analyse_ms * 5) * args.cameras / 1000
        d["projection"] = {
            "decode_ms_per_frame": decode_ms,
            "analyse_ms_per_frame": round(analyse_ms, 1),
            "cores_for_all_cameras": round(need, 2),
        }
        print(
            f"projection [{c['decoder']}]: {decode_ms} ms CPU to decode a frame, {analyse_ms:.1f} ms to analyse one: "
            f"{args.cameras} cameras x (25 decoded + 5 analysed fps) need {need:.2f} cores"
        )
    if naive:
        print(table("naive (every frame, detect + embed every face)", naive))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

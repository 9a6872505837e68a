"""`revisit demo`: the whole product on one machine with embedded defaults.

The central service (in-process MQTT broker, the embedded vector index, SQLite, the pages) runs in this process; one
edge daemon runs as a child process and reads a video file as its camera (looping). Everything lives under
`--data` (default ./var/demo); Ctrl-C stops both.

On first start the database is seeded with four weeks of demo history at three "Demo-…" sites and a kiosk event
(`revisit.central.demo_data`: the dev photos through the real face engine and the ingest's backfill path), so the
loyal list, visitor timelines and analytics have content; a restart keeps it (`demo_seed.json`). `--fresh` starts
over, `--no-seed` skips the seeding.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from revisit.shared.errors import ConfigError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_VIDEOS = SHARED / "facedata" / "dev" / "videos"
PREFERRED_VIDEO = "simplefr_Video_2.mp4"


def register(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option

    p = sub.add_parser("demo", help="run central + one edge daemon on a video, embedded defaults")
    p.add_argument("--video", type=Path, help="the edge's camera: a video file or an rtsp:// URL")
    p.add_argument("--data", type=Path, default=Path("var/demo"), help="where the demo keeps its data")
    p.add_argument("--port", type=int, default=8080, help="port of the pages")
    p.add_argument("--fresh", action="store_true", help="delete the demo data first (and seed it again)")
    p.add_argument("--no-seed", action="store_true", help="no demo history or demo event: start empty")
    add_models_option(p)
    p.set_defaults(func=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_video() -> Path | None:
    """A clip from the labelled face data ($REVISIT_FACEDATA/videos, else ../shared/facedata/dev/videos)."""
    env = os.environ.get("REVISIT_FACEDATA")
    folder = Path(env) / "videos" if env else DEFAULT_VIDEOS
    if not folder.is_dir():
        return None
    preferred = folder / PREFERRED_VIDEO
    if preferred.is_file():
        return preferred
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".mp4", ".mkv", ".avi", ".mpg"})
    return videos[0] if videos else None


def _seed(service, data_dir: Path):
    """The demo history: seeded once per data directory (demo_seed.json), kept across restarts."""
    import time

    from revisit.central.demo_data import load_marker, seed_demo, top_up_today
    from revisit.shared.engine import FaceEngine

    env = os.environ.get("REVISIT_FACEDATA")
    facedata = Path(env) if env else DEFAULT_VIDEOS.parent
    seeded = load_marker(data_dir)
    if seeded is not None:
        print(f"revisit demo: demo history already seeded on {seeded.seeded_at[:10]} (--fresh starts over)", flush=True)
        if (facedata / "labels.csv").is_file():
            added = top_up_today(service, FaceEngine(service.config.engine), facedata, seeded)
            if added:
                print(f"revisit demo: added today's visits of {added} demo regulars", flush=True)
        return seeded
    if not (facedata / "labels.csv").is_file():
        print(f"revisit demo: no labelled photos in {facedata} (set REVISIT_FACEDATA): no demo history", flush=True)
        return None
    start = time.perf_counter()
    print("revisit demo: seeding four weeks of demo visits from the dev photos (once; about a minute)", flush=True)
    seeded = seed_demo(service, FaceEngine(service.config.engine), facedata)
    print(f"revisit demo: seeded {seeded.observations} observations in {time.perf_counter() - start:.0f} s", flush=True)
    return seeded


def _seed_lines(seeded) -> str:
    selfie = seeded.sample_selfies[0] if seeded.sample_selfies else ""
    lines = f"  demo:   sites {', '.join(seeded.sites)} (demo data from labelled test photos)\n"
    if seeded.event_code:
        lines += f"  kiosk event code: {seeded.event_code}   sample selfie: {selfie}\n"
    return lines


def _toml(value: object) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def run(args: argparse.Namespace) -> int:
    import shutil

    import uvicorn

    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService
    from revisit.central.web import create_app

    video = args.video or default_video()
    if video is None:
        raise ConfigError("no video found: pass --video FILE (or an rtsp:// URL) for the demo camera")
    source = str(video) if str(video).startswith("rtsp://") else str(Path(video).resolve())
    if not source.startswith("rtsp://") and not Path(source).is_file():
        raise ConfigError(f"--video {video}: no such file")
    from revisit.models import store
    from revisit.models.manifest import Manifest

    if not args.models and not os.environ.get(store.ENV_VAR) and (SHARED / "models").is_dir():
        args.models = SHARED / "models"
    if args.models:  # the edge gets --models; the kiosk's engine in this process reads the variable
        os.environ[store.ENV_VAR] = str(Path(args.models).resolve())
    manifest = Manifest.load()
    for role in ("detector", "recognizer"):  # fail now, not in the edge's log
        store.resolve(manifest.default(role))
    data = args.data.resolve()
    if args.fresh and data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)

    mqtt_port, live_port = _free_port(), _free_port()
    password = os.environ.get("REVISIT_ADMIN_PASSWORD") or secrets.token_urlsafe(9)
    os.environ["REVISIT_ADMIN_PASSWORD"] = password
    os.environ.setdefault("REVISIT_SECRET_KEY", secrets.token_urlsafe(32))
    central = CentralConfig.model_validate(
        {
            "data_dir": str(data / "central"),
            "embedded_broker": {"bind": "127.0.0.1", "port": mqtt_port},
            "web": {
                "bind": "127.0.0.1",
                "port": args.port,
                "live_urls": {"demo/edge-1": f"http://127.0.0.1:{live_port}"},
            },
        }
    )
    edge_toml = data / "edge.toml"
    edge_toml.write_text(
        f'site = "demo"\ndevice = "edge-1"\nstate_dir = {_toml(data / "edge")}\n\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {mqtt_port}\nheartbeat_s = 10\n\n'
        f'[[cameras]]\nid = "entrance"\nsource = {_toml(source)}\nfps = 5\n\n'
        f"[recognise]\npublish_interval_s = 30\n\n"
        f'[live]\nbind = "127.0.0.1"\nport = {live_port}\n'
    )

    service = CentralService(central)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)  # uvicorn handles them; we only need to reach `finally`
    service.start()
    edge: subprocess.Popen | None = None
    edge_failed: list[int] = []
    try:
        seeded = None if args.no_seed else _seed(service, Path(central.data_dir))
        app = create_app(service, live_urls=central.web.live_urls)
        app.state.demo_data = seeded is not None
        command = [sys.executable, "-m", "revisit.cli", "edge", "run", "--config", str(edge_toml)]
        if args.models:
            command += ["--models", str(args.models)]
        edge = subprocess.Popen(command)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None, server_header=False)
        )

        def watch_edge(proc: subprocess.Popen = edge) -> None:
            code = proc.wait()
            if not server.should_exit:
                edge_failed.append(code)
                print(f"revisit demo: the edge daemon exited with code {code}; stopping", file=sys.stderr, flush=True)
                server.should_exit = True

        threading.Thread(target=watch_edge, name="edge-watch", daemon=True).start()
        print(
            f"\nRevisit demo\n  pages:  http://127.0.0.1:{args.port}/   login: {central.admin.username} / {password}\n"
            f"  camera: {video} (looping) -> edge daemon -> MQTT 127.0.0.1:{mqtt_port} -> central\n"
            f"  edge live view: http://127.0.0.1:{live_port}/   event kiosk: http://127.0.0.1:{args.port}/kiosk\n"
            f"  data:   {data}   (Ctrl-C stops)\n" + (_seed_lines(seeded) if seeded else ""),
            flush=True,
        )
        server.run()
    finally:
        if edge is not None and edge.poll() is None:
            edge.send_signal(signal.SIGTERM)
            try:
                edge.wait(timeout=30)
            except subprocess.TimeoutExpired:
                edge.kill()
        service.stop()
    return 1 if edge_failed else 0

"""Central service benchmark: assignment latency and ingest rate at 1k / 10k / 100k visitors.

    .venv/bin/python bench/central.py                     # Qdrant local mode on disk, SQLite
    .venv/bin/python bench/central.py --sizes 1000,10000  # smaller
    .venv/bin/python bench/central.py --qdrant-url http://localhost:6333 [--api-key K]   # a Qdrant server
    .venv/bin/python bench/central.py --mqtt              # also end to end through a broker

For each size N: N visitors are bulk-loaded (database rows and prototypes, 512-d like w600k_mbf), then
`--observations` observations go through `Clusterer.ingest` (half of them near existing visitors, half new
people). Reported per size: the time to load the prototypes, the Qdrant search alone (p50/p95), the whole
assignment (search + decide + database commit + Qdrant upserts; p50/p95) and observations per second.
With --mqtt (at the first size): observations published to Mosquitto (or the embedded broker when
Mosquitto is missing) and timed until all are stored: the end-to-end rate.

A script that prints a table, not a test. A size whose load or assignments exceed --budget seconds is
reported as not serving.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from revisit.central.cluster import Clusterer, ClusterSettings  # noqa: E402
from revisit.central.store import CropStore, Store, Visitor, utcnow  # noqa: E402
from revisit.central.vectors import Vectors  # noqa: E402
from revisit.shared.schema import Observation, QualityFields, encode, faces_topic  # noqa: E402

DIM = 512
REC = "w600k_mbf@5e03a553209a"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def observation(vec: np.ndarray, i: int, crop: bytes) -> Observation:
    ts = 1_800_000_000.0 + 60.0 * i
    q = QualityFields(detector=0.9, size=0.8, sharpness=0.8, pose=0.9, score=0.8)
    return Observation(
        observation_id=str(uuid.uuid4()), site="bench", device="d1", camera="c1", track_id=i, first_ts=ts,
        last_ts=ts + 3, best_ts=ts + 1, recognizer_id=REC, embedding=Observation.pack_vector(vec), embedding_dim=DIM,
        det_score=0.9, quality=q, box=(0.0, 0.0, 80.0, 80.0), crop_jpeg=crop, frame_size=(640, 480), frames_seen=5,
    )  # fmt: skip


def tiny_jpeg() -> bytes:
    import cv2

    return bytes(cv2.imencode(".jpg", np.full((96, 96, 3), 120, np.uint8))[1])


def load_visitors(store: Store, vectors: Vectors, protos: np.ndarray) -> float:
    """Bulk-load visitors (rows + prototypes); returns the seconds spent on Qdrant."""
    with store.begin() as s:
        now = utcnow()
        rows = [
            dict(id=uuid.uuid4(), recognizer_id=REC, first_seen=now, last_seen=now, visit_count=1, sighting_count=1,
                 reference_quality=-1.0, label="", notes="", proto_sum=p.astype(np.float64).tobytes(),
                 proto_weight=1.0, created_at=now)
            for p in protos
        ]  # fmt: skip
        for k in range(0, len(rows), 5000):
            s.execute(Visitor.__table__.insert(), rows[k : k + 5000])  # type: ignore[attr-defined]
    vectors.ensure(REC, DIM)
    start = time.perf_counter()
    batch = 1000
    for k in range(0, len(rows), batch):
        vectors.upsert_prototypes(REC, [(r["id"], protos[k + j], "bench") for j, r in enumerate(rows[k : k + batch])])
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> dict:
    rng = np.random.default_rng(n)
    protos = unit(rng.normal(size=(n, DIM)))
    store = Store(f"sqlite:///{workdir / f'bench{n}.db'}")
    store.create_all()
    if args.qdrant_url:
        vectors = Vectors(url=args.qdrant_url, api_key=args.api_key, prefix=f"bench{n}_{uuid.uuid4().hex[:6]}")
    elif args.memory:
        vectors = Vectors.memory()
    else:
        vectors = Vectors(path=workdir / f"qdrant{n}")
    out: dict = {"visitors": n}
    try:
        out["load_s"] = load_visitors(store, vectors, protos)
        clusterer = Clusterer(store, vectors, CropStore(workdir / "crops"), ClusterSettings(visit_gap=timedelta(0)))
        crop = tiny_jpeg()
        # search alone
        searches = []
        for i in range(min(50, args.observations)):
            start = time.perf_counter()
            vectors.search_prototypes(REC, protos[i], 8)
            searches.append(time.perf_counter() - start)
            if sum(searches) > args.budget:
                break
        out["search_p50_ms"], out["search_p95_ms"] = pct(searches, 50), pct(searches, 95)
        # whole assignments: half returning visitors, half new people
        obs = [
            observation(unit(protos[rng.integers(n)] + 0.03 * rng.normal(size=DIM)) if i % 2 == 0
                        else unit(rng.normal(size=DIM)), i, crop)
            for i in range(args.observations)
        ]  # fmt: skip
        times = []
        begin = time.perf_counter()
        for o in obs:
            start = time.perf_counter()
            clusterer.ingest(o)
            times.append(time.perf_counter() - start)
            if time.perf_counter() - begin > args.budget:
                out["note"] = f"stopped after {len(times)} observations (budget {args.budget:.0f} s)"
                break
        wall = time.perf_counter() - begin
        out["assign_p50_ms"], out["assign_p95_ms"] = pct(times, 50), pct(times, 95)
        out["obs_per_s"] = len(times) / wall
        out["assigned"] = len(times)
    finally:
        vectors.close()
        store.dispose()
    return out


def bench_mqtt(n: int, args: argparse.Namespace, workdir: Path, batch_size: int = 64) -> dict:
    """End to end: publish to a broker, the service ingests (micro-batches of up to `batch_size`, 1 = one message
    per transaction as before the pipeline); observations per second until all are stored."""
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService

    broker_proc = None
    data = workdir / f"mqtt-{batch_size}"
    cfg: dict = {"data_dir": str(data), "ingest": {"batch_size": batch_size, "max_future_s": None}}  # 2027 data
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    import socket
    import subprocess

    if mosquitto:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 100000"]
        conf.write_text("\n".join(lines + (["user root"] if os.geteuid() == 0 else [])) + "\n")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
        broker_proc = subprocess.Popen([mosquitto, "-c", str(conf)], **quiet)
        time.sleep(0.3)
        cfg["broker"] = {"host": "127.0.0.1", "port": port}
        broker = "mosquitto"
    else:
        cfg["embedded_broker"] = {"port": 0}
        broker = "amqtt (embedded)"
    service = CentralService(CentralConfig.model_validate(cfg))
    service.open()
    rng = np.random.default_rng(7)
    protos = unit(rng.normal(size=(n, DIM)))
    load_visitors(service.store, service.vectors, protos)
    service.start()
    try:
        service.mqtt.subscribed.wait(10)
        host, port = service.broker_address
        import paho.mqtt.client as mqtt

        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
        pub.max_inflight_messages_set(100)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        crop = tiny_jpeg()
        payloads = [encode(observation(unit(protos[rng.integers(n)] + 0.03 * rng.normal(size=DIM)), i, crop))
                    for i in range(args.mqtt_messages)]  # fmt: skip
        start, cpu0 = time.perf_counter(), time.process_time()
        for p in payloads:
            info = pub.publish(faces_topic("bench", "d1"), p, qos=1)
        info.wait_for_publish(120)
        published = time.perf_counter() - start
        while service.counters.get("stored") < len(payloads) and time.perf_counter() - start < args.budget:
            time.sleep(0.05)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        stored = service.counters.get("stored")
        pub.loop_stop()
        pub.disconnect()
    finally:
        service.stop()
        if broker_proc:
            broker_proc.terminate()
            broker_proc.wait(10)
    return {"broker": broker, "visitors": n, "messages": len(payloads), "stored": stored,
            "publish_per_s": len(payloads) / published, "end_to_end_per_s": stored / wall, "batch_size": batch_size,
            "cpu_s": cpu}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--observations", type=int, default=200, help="assignments timed per size")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds allowed per phase and size")
    parser.add_argument("--memory", action="store_true", help="Qdrant local mode in memory instead of on disk")
    parser.add_argument("--qdrant-url", help="a Qdrant server instead of local mode")
    parser.add_argument("--api-key")
    parser.add_argument("--mqtt", action="store_true", help="also measure end to end through a broker")
    parser.add_argument("--mqtt-messages", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="1,64", help="ingest batch sizes compared end to end (1: unbatched)")
    args = parser.parse_args()
    mode = f"server {args.qdrant_url}" if args.qdrant_url else ("local, in memory" if args.memory else "local, on disk")
    print(f"Qdrant {mode}; SQLite; {DIM}-d; {os.cpu_count()} CPUs", flush=True)
    header = (f"{'visitors':>9} {'load s':>8} {'search p50':>11} {'p95 ms':>8} {'assign p50':>11} {'p95 ms':>8} "
              f"{'obs/s':>7}  note")  # fmt: skip
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="revisit-bench-") as tmp:
        workdir = Path(tmp)
        sizes = [int(s) for s in args.sizes.split(",")]
        for n in sizes:
            r = bench_size(n, args, workdir)
            print(f"{n:>9} {r['load_s']:>8.1f} {r['search_p50_ms']:>11.1f} {r['search_p95_ms']:>8.1f} "
                  f"{r['assign_p50_ms']:>11.1f} {r['assign_p95_ms']:>8.1f} {r['obs_per_s']:>7.1f}  {r.get('note', '')}",
                  flush=True)  # fmt: skip
        if args.mqtt:
            rates = {}
            for b in (int(x) for x in args.batch_sizes.split(",")):
                r = bench_mqtt(sizes[0], args, workdir, batch_size=b)
                rates[b] = r["end_to_end_per_s"]
                print(
                    f"\nend to end via {r['broker']} at {r['visitors']} visitors, batch {b}: {r['stored']}/"
                    f"{r['messages']} stored, published {r['publish_per_s']:.0f} msg/s, ingested "
                    f"{r['end_to_end_per_s']:.1f} obs/s, {r['cpu_s']:.1f} cpu_s",
                    flush=True,
                )
            if len(rates) > 1:
                first, last = list(rates)[0], list(rates)[-1]
                print(f"batch {last} / batch {first}: {rates[last] / max(rates[first], 1e-9):.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Central service benchmark: load, reopen, search, whole assignment, RSS and disk at 10k / 100k / 1M visitors.

    .venv/bin/python bench/central.py --real /tmp/dev.npz            # embedded engine, SQLite, real-like vectors
    .venv/bin/python bench/central.py --sizes 10000 --json           # one JSON line per size
    .venv/bin/python bench/central.py --database-url postgresql+psycopg://127.0.0.1:5432/bench
    .venv/bin/python bench/central.py --engine qdrant-local          # the old embedded default, for comparison
    .venv/bin/python bench/central.py --qdrant-url http://localhost:6333 [--api-key K]   # a Qdrant server
    .venv/bin/python bench/central.py --mqtt                          # also end to end through a broker

`--real FILE.npz` takes real embeddings (`revisit eval cluster --data DIR --cache FILE.npz` writes them from the
dev photos); `--generator calibrated` (default) makes visitors whose pairwise cosines follow the real impostors'
(bench/realism.py), `real_like` mixes three real faces plus noise (crowded: near-twins at 1M). Without `--real`
visitors are random unit vectors. `--mqtt --mqtt-only --store DIR` measures end to end on a copy of a store
bulk-loaded by bench/assign_profile.py (its --generator must match).

Per size N, in this process: N visitors are bulk-loaded through the service (database rows 5,000 per INSERT,
prototypes in one bulk index load: loading 1M through the whole assignment path would take hours), and the
service is closed. Then a fresh process reopens the service (`reopen_s`: open + start-up index check) and
measures: the prototype search alone (p50/p95) and how often its nearest prototype is the exact one
(`exact_top1`, against brute force in f32, for observations of returning visitors); whole assignments
(`Assigner.ingest`: search + decide + database commit + index upserts; half returning visitors, half new
people), observations/s and CPU per observation; its RSS and the data directory's size.
A script that prints a table (or JSON lines), not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from revisit.central.store import Sighting, Store, Visitor, ensure_camera, ensure_device, ensure_site, utcnow  # noqa: E402
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
        observation_id=str(uuid.uuid4()),
        site="bench",
        device="d1",
        camera="c1",
        track_id=i,
        first_ts=ts,
        last_ts=ts + 3,
        best_ts=ts + 1,
        recognizer_id=REC,
        embedding=Observation.pack_vector(vec),
        embedding_dim=DIM,
        det_score=0.9,
        quality=q,
        box=(0.0, 0.0, 80.0, 80.0),
        crop_jpeg=crop,
        frame_size=(640, 480),
        frames_seen=5,
    )


def tiny_jpeg() -> bytes:
    import cv2

    return bytes(cv2.imencode(".jpg", np.full((96, 96, 3), 120, np.uint8))[1])


def real_like(n: int, rng: np.random.Generator, real: np.ndarray | None) -> np.ndarray:
    """n identity directions. With real embeddings (dev photos): each is a mix of three real faces plus noise,
    so the set keeps the real embeddings' neighbourhood structure; without: random unit vectors."""
    if real is None:
        return unit(rng.normal(size=(n, DIM)))
    out = np.empty((n, DIM), dtype=np.float16)
    for k in range(0, n, 50_000):
        m = min(50_000, n - k)
        picks = real[rng.integers(len(real), size=(m, 3))]
        w = rng.dirichlet(np.ones(3), size=m)[:, :, None].astype(np.float32)
        mix = (picks * w).sum(axis=1) + 0.35 * rng.normal(size=(m, DIM)).astype(np.float32) / np.sqrt(DIM)
        out[k : k + m] = unit(mix)
    return out


_MODEL: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def calibrated(n: int, rng: np.random.Generator, real: np.ndarray | None) -> np.ndarray:
    """n identity directions whose pairwise cosines follow the real impostors' (the default with real embeddings):
    a Gaussian with the real faces' mean and covariance, mixed (weight CROWD) with `real_like`'s three-face mixes
    for the lookalike tail. Measured (bench/realism.py, dev photos): impostor pairs above cosine 0.3 / 0.37 are
    9.1e-5 / 4.5e-6 of real pairs, ~1e-4 / ~7e-6 of these; `real_like` alone has 1.4e-3 / 8.0e-4 (its visitors
    share two of three source faces: at 1M every visitor has a near-twin above 0.5, no real population does)."""
    if real is None:
        return unit(rng.normal(size=(n, DIM)))
    if id(real) not in _MODEL:
        mean = real.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov(real.T))
        _MODEL.clear()
        _MODEL[id(real)] = (mean, (vectors * np.sqrt(np.clip(values, 0, None))).T.astype(np.float32))
    mean, root = _MODEL[id(real)]
    crowd = real_like(n, rng, real)
    out = np.empty((n, DIM), dtype=np.float16)
    for k in range(0, n, 50_000):
        m = min(50_000, n - k)
        gauss = unit(mean + rng.normal(size=(m, DIM)).astype(np.float32) @ root)
        out[k : k + m] = unit(np.sqrt(1 - CROWD) * gauss + np.sqrt(CROWD) * crowd[k : k + m].astype(np.float32))
    return out


CROWD = 0.35
GENERATORS = {"calibrated": calibrated, "real_like": real_like}


def returning(proto: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another shot of a known visitor: cosine ~0.6-0.75 to the prototype (genuine pairs of w600k_mbf)."""
    return unit(proto.astype(np.float32) + 0.9 * rng.normal(size=DIM).astype(np.float32) / np.sqrt(DIM))


def load_real(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    data = np.load(path)
    return unit(data["vectors"][data["ok"]])


def load_visitors(
    store: Store, vectors: Vectors | None, protos: np.ndarray, sites: int = 1, ids: list | None = None
) -> tuple[float, list]:
    """Bulk-load visitors: database rows (5,000 per INSERT) and prototypes (one bulk index load, multi-threaded;
    the journal is skipped and one checkpoint ends it). Returns the seconds spent on the index. `vectors` None:
    the rows only (their index is a copy, `--index-from`), with these `ids`."""
    now = utcnow()
    ids = ids or [uuid.uuid4() for _ in range(len(protos))]
    for k in range(0, len(protos), 5000):  # a transaction per chunk: the write-ahead log stays small
        with store.begin() as s:
            rows = [
                dict(
                    id=ids[j],
                    recognizer_id=REC,
                    first_seen=now,
                    last_seen=now,
                    visit_count=1,
                    sighting_count=1,
                    reference_quality=-1.0,
                    label="",
                    notes="",
                    proto_sum=protos[j].astype(np.float64).tobytes(),
                    proto_weight=1.0,
                    created_at=now,
                )
                for j in range(k, min(k + 5000, len(protos)))
            ]
            s.execute(Visitor.__table__.insert(), rows)  # type: ignore[attr-defined]
    checkpoint_wal(store)
    if vectors is None:
        return 0.0, ids
    vectors.ensure(REC, DIM)
    start = time.perf_counter()
    with vectors.bulk():
        for k in range(0, len(protos), 20_000):
            items = [(ids[j], protos[j], f"site{j % sites}") for j in range(k, min(k + 20_000, len(protos)))]
            vectors.upsert_prototypes(REC, items)
    return time.perf_counter() - start, ids


def load_sightings(store: Store, ids: list, protos: np.ndarray, cameras: int) -> None:
    """One stored sighting per bulk-loaded visitor (its prototype as embedding), spread over `cameras` cameras of
    the site and device the timed observations use, over the 30 days before them: a store holds sightings, and the
    per-camera lookups of an assignment (same-frame tracks) grow with them. Nothing overlaps a timed observation."""
    from datetime import datetime, timezone

    start = 1_800_000_000.0 - 30 * 86400.0
    step = 30 * 86400.0 / max(len(ids), 1)
    with store.begin() as s:
        site = ensure_site(s, "bench")
        device = ensure_device(s, site, "d1")
        cams = [ensure_camera(s, site, device, f"c{k + 1}").id for k in range(cameras)]
        site_id, device_id = site.id, device.id
    for k in range(0, len(ids), 5000):
        with store.begin() as s:
            rows = []
            for j in range(k, min(k + 5000, len(ids))):
                t = datetime.fromtimestamp(start + j * step, timezone.utc)
                rows.append(
                    dict(
                        id=uuid.uuid4(),
                        observation_id=uuid.uuid4(),
                        visitor_id=ids[j],
                        visit_id=None,
                        site_id=site_id,
                        device_id=device_id,
                        camera_id=cams[j % cameras],
                        track_id=j,
                        first_ts=t,
                        last_ts=t,
                        best_ts=t,
                        quality=0.8,
                        det_score=0.9,
                        box=[0, 0, 80, 80],
                        frame_size=[640, 480],
                        co_tracks=[],
                        crop_path=None,
                        recognizer_id=REC,
                        embedding=protos[j].astype("<f4").tobytes(),
                        created_at=t,
                    )
                )
            s.execute(Sighting.__table__.insert(), rows)  # type: ignore[attr-defined]
    checkpoint_wal(store)


def checkpoint_wal(store: Store) -> None:
    """Fold SQLite's write-ahead log into the database file, as a service would have long before: otherwise the
    first timed commits pay for checkpointing gigabytes the loader wrote."""
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def exact_top1(protos: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and cosine of the nearest prototype of each query, brute force in f32 (chunks of 100k rows)."""
    best = np.full(len(queries), -1, dtype=np.int64)
    score = np.full(len(queries), -np.inf, dtype=np.float32)
    for k in range(0, len(protos), 100_000):
        sims = queries @ protos[k : k + 100_000].astype(np.float32).T
        arg = sims.argmax(axis=1)
        val = sims[np.arange(len(queries)), arg]
        better = val > score
        best[better], score[better] = arg[better] + k, val[better]
    return best, score


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def service_config(data: Path, args: argparse.Namespace) -> dict:
    cfg: dict = {"data_dir": str(data)}
    if args.database_url:
        cfg["database_url"] = args.database_url
    if args.qdrant_url:
        cfg["qdrant"] = {"url": args.qdrant_url}
    elif args.engine == "qdrant-local":
        cfg["vectors"] = {"engine": "qdrant"}
    return cfg


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> dict:
    """Load n visitors in this process, then measure the reopened service in a fresh one (`--serve`)."""
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService

    rng = np.random.default_rng(n)
    real = load_real(args.real)
    generate = GENERATORS[args.generator]
    protos = generate(n, rng, real)
    data = workdir / f"data{n}"
    reuse = args.index_from
    if reuse is not None:  # the same visitors (same generator and seed), their index copied
        shutil.copytree(reuse / "vectors", data / "vectors", ignore=shutil.ignore_patterns(".lock"))
    service = CentralService(CentralConfig.model_validate(service_config(data, args))).open()
    start = time.perf_counter()
    try:
        if reuse is not None:
            same = [uuid.UUID(bytes=row.tobytes()) for row in np.load(reuse / "ids.npy")]
            index_s, ids = load_visitors(service.store, None, protos, args.sites, ids=same)
        else:
            index_s, ids = load_visitors(service.store, service.vectors, protos, args.sites)
        if args.sightings:
            load_sightings(service.store, ids, protos, args.sightings)
    finally:
        service.stop()
    out: dict = {
        "visitors": n,
        "load_s": time.perf_counter() - start,
        "index_load_s": index_s,
        "vectors": args.generator if real is not None else "random",
    }
    # queries: returning visitors (for exactness and assignment) and new people
    picks = rng.integers(n, size=max(args.observations, args.exact_queries))
    queries = np.stack(
        [
            returning(protos[i], rng) if k % 2 == 0 else generate(1, rng, real)[0].astype(np.float32)
            for k, i in enumerate(picks)
        ]
    ).astype(np.float32)
    best, best_score = exact_top1(protos, queries)
    ids_bytes = np.frombuffer(b"".join(u.bytes for u in ids), dtype=np.uint8).reshape(-1, 16)
    np.save(data / "ids.npy", ids_bytes)  # the visitor id of each row (bench/hnsw_exact.py --store)
    np.savez(
        workdir / f"queries{n}.npz",
        queries=queries,
        exact=best,
        exact_score=best_score,
        observations=args.observations,
        ids=ids_bytes,
    )
    del protos
    cmd = [sys.executable, __file__, "--serve", str(n), "--workdir", str(workdir), "--budget", str(args.budget)]
    cmd += ["--engine", args.engine] + (["--database-url", args.database_url] if args.database_url else [])
    import subprocess

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget * 4 + 600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    out.update(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def serve(n: int, args: argparse.Namespace, workdir: Path) -> dict:
    """The reopened service: reopen time, search exactness and latency, whole assignments, RSS and disk."""
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService

    data = workdir / f"data{n}"
    q = np.load(workdir / f"queries{n}.npz")
    queries, exact = q["queries"], q["exact"]
    start = time.perf_counter()
    service = CentralService(CentralConfig.model_validate(service_config(data, args))).open()
    service.repair_index()
    out: dict = {"reopen_s": time.perf_counter() - start}
    try:
        vectors = service.vectors
        rows = [uuid.UUID(bytes=b.tobytes()) for b in q["ids"]]  # visitor id of each exact row
        searches, agree, ties, returning_n, cpu0 = [], 0, 0, 0, time.process_time()
        for k, vec in enumerate(queries):
            t = time.perf_counter()
            hits = vectors.search_prototypes(REC, vec, 8, floor=service.config.cluster.threshold)  # as in assignment
            searches.append(time.perf_counter() - t)
            if k % 2 == 0:
                returning_n += 1
                same = bool(hits) and hits[0][0] == rows[int(exact[k])]
                agree += same
                # not the exact row, but as near as it within f16 rounding (two prototypes that close tie)
                if not same and "exact_score" in q and hits and q["exact_score"][k] - hits[0][1] <= 2e-3:
                    ties += 1
        out["search_p50_ms"], out["search_p95_ms"] = pct(searches, 50), pct(searches, 95)
        out["search_cpu_ms"] = (time.process_time() - cpu0) * 1000 / len(queries)
        out["exact_top1"] = agree / max(returning_n, 1)
        out["exact_or_tie_top1"] = (agree + ties) / max(returning_n, 1)
        out["exact_checked"] = returning_n
        if "observations" in q:
            queries = queries[: int(q["observations"])]
        clusterer = service.clusterer
        crop = tiny_jpeg()
        times, cpu0, begin = [], time.process_time(), time.perf_counter()
        for i, vec in enumerate(queries):
            t = time.perf_counter()
            clusterer.ingest(observation(vec, i, crop))
            times.append(time.perf_counter() - t)
            if time.perf_counter() - begin > args.budget:
                out["note"] = f"stopped after {len(times)} observations (budget {args.budget:.0f} s)"
                break
        wall = time.perf_counter() - begin
        out["assign_p50_ms"], out["assign_p95_ms"] = pct(times, 50), pct(times, 95)
        out["obs_per_s"] = len(times) / wall
        out["cpu_ms_per_obs"] = (time.process_time() - cpu0) * 1000 / len(times)
        out["assigned"] = len(times)
        out["rss_mb"], out["rss_peak_mb"] = rss_mb()
    finally:
        service.stop()
    out["disk_mb"] = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 2**20
    vec_dir = data / "vectors"
    out["index_disk_mb"] = sum(f.stat().st_size for f in vec_dir.rglob("*") if f.is_file()) / 2**20
    return out


def bench_mqtt(n: int, args: argparse.Namespace, workdir: Path, batch_size: int = 64) -> dict:
    """End to end: publish to a broker, the service ingests (micro-batches of up to `batch_size`, 1 = one message
    per transaction as before the pipeline); observations per second until all are stored."""
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService

    broker_proc = None
    data = workdir / f"mqtt-{batch_size}"
    cfg: dict = {"data_dir": str(data), "ingest": {"batch_size": batch_size, "max_future_s": None}}  # 2027 data
    cfg["vectors"] = {"background_adds": not args.foreground_adds}
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
    rng = np.random.default_rng(7)
    store = args.store
    if store is None and (workdir / f"data{n}").exists():  # the store this run loaded: the same visitors
        store = workdir / f"data{n}"
    if store is not None:  # a bulk-loaded store (bench/assign_profile.py): copied, its visitors remade
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(store, data)
        real = load_real(args.real)
        protos = GENERATORS[args.generator](n, np.random.default_rng(n), real)
        service = CentralService(CentralConfig.model_validate(cfg))
        service.open()
    else:
        service = CentralService(CentralConfig.model_validate(cfg))
        service.open()
        protos = unit(rng.normal(size=(n, DIM)))
        load_visitors(service.store, service.vectors, protos)
    service.start()
    try:
        service.mqtt.subscribed.wait(10)
        host, port = service.broker_address
        crop = tiny_jpeg()
        real = load_real(args.real)
        new = rng.random(args.mqtt_messages) < args.new_share  # new people; the others return
        vectors = [
            GENERATORS[args.generator](1, rng, real)[0].astype(np.float32)
            if new[i]
            else unit(protos[rng.integers(n)] + 0.03 * rng.normal(size=DIM))
            for i in range(args.mqtt_messages)
        ]
        payloads = [encode(observation(vec, i, crop)) for i, vec in enumerate(vectors)]
        del protos
        feed = workdir / "payloads.msgpack"
        feed.write_bytes(b"".join(len(p).to_bytes(4, "big") + p for p in payloads))
        # the edges are other machines: the publisher is a process of its own, not a thread of central's
        publisher = subprocess.Popen(
            [sys.executable, __file__, "--publish", f"127.0.0.1:{port}", str(feed)], stdout=subprocess.PIPE, text=True
        )
        start, cpu0 = time.perf_counter(), time.process_time()
        while service.counters.get("stored") < len(payloads) and time.perf_counter() - start < args.budget:
            time.sleep(0.02)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        stored = service.counters.get("stored")
        out, _ = publisher.communicate(timeout=60)
        published = json.loads(out.strip().splitlines()[-1])
    finally:
        service.stop()
        if broker_proc:
            broker_proc.terminate()
            broker_proc.wait(10)
    return {
        "broker": broker,
        "visitors": n,
        "messages": len(payloads),
        "new_share": round(float(new.mean()), 3),
        "stored": stored,
        "publish_per_s": len(payloads) / published["publish_s"],
        "end_to_end_per_s": stored / wall,
        "batch_size": batch_size,
        "cpu_s": cpu,  # central's process (the publisher's is its own)
        "publisher_cpu_s": published["cpu_s"],
    }


def publish(address: str, feed: Path) -> dict:
    """The `--publish` process: every payload of the feed (4-byte length + msgpack) at QoS 1, as fast as the
    broker takes them; waits for the last PUBACK."""
    import paho.mqtt.client as mqtt

    host, port = address.rsplit(":", 1)
    data, payloads, at = feed.read_bytes(), [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        payloads.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(100)
    pub.connect(host, int(port))
    pub.loop_start()
    start, cpu0 = time.perf_counter(), time.process_time()
    for p in payloads:
        info = pub.publish(faces_topic("bench", "d1"), p, qos=1)
    info.wait_for_publish(300)
    out = {"published": len(payloads), "publish_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu0}
    pub.loop_stop()
    pub.disconnect()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--observations", type=int, default=400, help="assignments timed per size")
    parser.add_argument("--exact-queries", type=int, default=2000, help="searches checked against brute force")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds allowed for the assignments of a size")
    parser.add_argument("--engine", choices=["embedded", "qdrant-local"], default="embedded")
    parser.add_argument("--qdrant-url", help="a Qdrant server (engine qdrant) instead")
    parser.add_argument("--api-key")
    parser.add_argument("--database-url", help="default: SQLite in the work directory")
    parser.add_argument(
        "--real",
        type=Path,
        metavar="FILE.npz",
        help="real embeddings (`revisit eval cluster --cache FILE.npz`) to build real-like visitors",
    )
    parser.add_argument(
        "--generator", choices=sorted(GENERATORS), default="calibrated", help="how visitors are made from --real"
    )
    parser.add_argument("--sites", type=int, default=1, help="visitors spread over this many sites")
    parser.add_argument(
        "--sightings",
        type=int,
        default=0,
        metavar="CAMERAS",
        help="also store one sighting per visitor, over this many cameras of the timed site",
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per size")
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: a temporary directory)")
    parser.add_argument(
        "--index-from",
        type=Path,
        metavar="STORE",
        help="a kept store of the same size and generator: copy its index, load only the rows (e.g. into PostgreSQL)",
    )
    parser.add_argument("--keep", action="store_true", help="keep each size's store under --workdir")
    parser.add_argument(
        "--foreground-adds", action="store_true", help="end to end: ingest adds prototypes to the graph itself"
    )
    parser.add_argument("--new-share", type=float, default=0.0, help="end to end: share of new people (else returning)")
    parser.add_argument("--publish", nargs=2, metavar=("HOST:PORT", "FEED"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the reopened-service half of a size
    parser.add_argument("--mqtt", action="store_true", help="also measure end to end through a broker")
    parser.add_argument("--mqtt-messages", type=int, default=1000)
    parser.add_argument("--store", type=Path, help="--mqtt only: copy this bulk-loaded store (assign_profile.py)")
    parser.add_argument("--mqtt-only", action="store_true", help="skip the load/reopen/assignment part")
    parser.add_argument("--batch-sizes", default="1,64", help="ingest batch sizes compared end to end (1: unbatched)")
    args = parser.parse_args()
    if args.serve:
        print(json.dumps(serve(args.serve, args, args.workdir)), flush=True)
        return 0
    if args.publish:
        print(json.dumps(publish(args.publish[0], Path(args.publish[1]))), flush=True)
        return 0
    engine = f"Qdrant server {args.qdrant_url}" if args.qdrant_url else args.engine
    db = "PostgreSQL" if args.database_url else "SQLite"
    if not args.json:
        print(f"{engine}; {db}; {DIM}-d; {os.cpu_count()} CPUs", flush=True)
        print(
            f"{'visitors':>9} {'load s':>7} {'reopen s':>8} {'search p50':>10} {'p95':>5} {'assign p50':>10} "
            f"{'p95 ms':>7} {'obs/s':>6} {'exact':>6} {'RSS MB':>7} {'disk MB':>8}  note",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="revisit-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sizes = [int(s) for s in args.sizes.split(",")]
        for k, n in enumerate(sizes):
            r = {"visitors": n} if args.mqtt_only else bench_size(n, args, workdir)
            r.update(engine=engine, database=db, cpus=os.cpu_count())
            if args.mqtt and k == 0:  # end to end per ingest batch size (1: one message per transaction)
                e2e = {b: bench_mqtt(n, args, workdir, batch_size=b) for b in map(int, args.batch_sizes.split(","))}
                r["e2e_by_batch"] = {
                    b: {k: x[k] for k in ("end_to_end_per_s", "cpu_s", "publisher_cpu_s", "stored", "new_share")}
                    for b, x in e2e.items()
                }
                r["e2e_obs_per_s"] = list(e2e.values())[-1]["end_to_end_per_s"]
            if args.json or args.mqtt_only:
                print(json.dumps(r), flush=True)
            else:
                print(
                    f"{n:>9} {r['load_s']:>7.1f} {r['reopen_s']:>8.2f} {r['search_p50_ms']:>10.2f} "
                    f"{r['search_p95_ms']:>5.1f} {r['assign_p50_ms']:>10.1f} {r['assign_p95_ms']:>7.1f} "
                    f"{r['obs_per_s']:>6.1f} {r['exact_top1']:>6.3f} {r['rss_mb']:>7.0f} {r['disk_mb']:>8.0f}  "
                    f"{r.get('note', '')}",
                    flush=True,
                )
            if not args.keep:
                shutil.rmtree(workdir / f"data{n}", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

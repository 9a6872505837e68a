"""Event kiosk benchmark: selfie search latency against the number of faces in the event.

    .venv/bin/python bench/kiosk.py                          # 1k, 10k, 100k faces; the embedded engine on disk
    .venv/bin/python bench/kiosk.py --sizes 100,1000 --queries 20
    .venv/bin/python bench/kiosk.py --engine qdrant-local    # qdrant-client local mode (the old default)
    .venv/bin/python bench/kiosk.py --no-shared              # skip the shared-collection comparison
    .venv/bin/python bench/kiosk.py --extraction             # background extraction of full-size photos
    .venv/bin/python bench/kiosk.py --extraction --mp 24 --faces 20 --photos 8
    .venv/bin/python bench/kiosk.py --ingest-wait --sizes 100000  # ingest's latency while guests search

For each size N, one event gets N faces: the real faces of a few photos of one person (so a search finds
something and the database part of the search is exercised) and random 512-d unit vectors for the rest (a store
of that size; random vectors match nothing). Reported per size:
- load: seconds to upsert the N points (the engine's journal / local mode's SQLite file included);
- vector p50/p95: the vector search alone (`EventVectors.search` at the default threshold);
- search p50/p95: the whole kiosk search from the JPEG bytes of a real selfie: decode, detect, pick and check the
  face, embed it, search, keep each photo's best face and read the photos from the database (`FaceSearch.search`);
- shared p50: for comparison, the design not taken: one collection holding every event's faces (N in all), searched
  with an `event_id` payload filter for an event of 1,000 of them.

--extraction: photographers' full-size photos, made at run time from the dev portraits (none are stored): canvases
of --mp megapixels (3:2) with --faces portraits pasted at 3x (faces ~200 px) on a smooth textured background,
JPEG quality 90. Each goes through the kiosk's own path: `Events.add_photo` (validate, store, thumbnail: the
upload's part) and the `FaceWorker` (decode, detect at `photo_max_side`, assess and embed every face, store the
vectors). Reported: upload s/photo, extraction photos/s and faces/s (wall clock, one worker thread) and CPU s per
photo (this process, all threads), the time from upload until a photo is searchable with an idle worker, and
where one photo's time goes (decode, detect, embed) with the reduced-size JPEG decode beside the full one.

--ingest-wait: what event scans cost ingest on the embedded engine. One index holds 10,000 visitor prototypes and
an event of N random faces; one thread runs ingest's vector work (a prototype search and a prototype upsert, as one
observation does) while another runs selfie searches of the event back to back. Reported: ingest p50/p95 with no
scans, with scans as they run now (the event matrices' own lock), and with scans holding the index lock (as they
did when the kiosk shared it), and how many scans ran meanwhile.

A script that prints tables, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qdrant_client import QdrantClient, models  # noqa: E402

from revisit.central.kiosk.events import Events  # noqa: E402
from revisit.central.kiosk.photos import PhotoFiles  # noqa: E402
from revisit.central.kiosk.search import DEFAULT_THRESHOLD, FaceSearch, to_cosine  # noqa: E402
from revisit.central.kiosk.vectors import EventVectors  # noqa: E402
from revisit.central.kiosk.worker import FaceWorker  # noqa: E402
from revisit.central.store import Store  # noqa: E402
from revisit.central.vectors import open_vectors  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
PERSON = "Jennifer_Aniston"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def person_photos(data: Path) -> tuple[bytes, list[Path]]:
    """(the selfie's bytes, the person's other photos) from the labelled data."""
    from revisit.shared.dataset import load_labels

    mine = sorted((r for r in load_labels(data) if r.kind == "photo" and r.identity == PERSON), key=lambda r: r.relpath)
    return mine[0].path.read_bytes(), [r.path for r in mine[1:6]]


def fill(events: Events, event_id: uuid.UUID, recognizer: str, n: int, dim: int, rng: np.random.Generator) -> float:
    """Add n random faces (one photo row per 4 faces, as a group-photo event would have); returns seconds."""
    from revisit.central.kiosk.models import Photo

    photos = [
        Photo(
            event_id=event_id,
            filename=f"p{i}.jpg",
            stored_name=f"{uuid.uuid4().hex}.jpg",
            thumb_name=f"{uuid.uuid4().hex}.jpg",
            status="done",
            faces_found=4,
        )
        for i in range((n + 3) // 4)
    ]
    with events.store.begin() as s:
        s.add_all(photos)
    start = time.perf_counter()
    batch = 2000
    for k in range(0, n, batch):
        m = min(batch, n - k)
        vecs = unit(rng.normal(size=(m, dim)))
        points = [(uuid.uuid4(), photos[(k + j) // 4].id, vecs[j]) for j in range(m)]
        events.vectors.upsert(event_id, recognizer, points)
    return time.perf_counter() - start


def shared_filtered(n: int, dim: int, query: np.ndarray, queries: int, rng: np.random.Generator) -> float:
    """p50 ms of a filtered search for one event of 1,000 faces in a collection of n faces of many events."""
    client = QdrantClient(location=":memory:")
    client.create_collection("faces", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
    ours = min(1000, n)
    for k in range(0, n, 2000):
        m = min(2000, n - k)
        vecs = unit(rng.normal(size=(m, dim)))
        client.upsert(
            "faces",
            points=[
                models.PointStruct(
                    id=str(uuid.uuid4()),
                    vector=vecs[j].tolist(),
                    payload={"event_id": "ours" if k + j < ours else f"e{(k + j) // 1000}"},
                )
                for j in range(m)
            ],
        )
    flt = models.Filter(must=[models.FieldCondition(key="event_id", match=models.MatchValue(value="ours"))])
    times = []
    for _ in range(queries):
        start = time.perf_counter()
        client.query_points(
            "faces", query=query.tolist(), query_filter=flt, limit=5000, score_threshold=to_cosine(DEFAULT_THRESHOLD)
        )
        times.append(time.perf_counter() - start)
    client.close()
    return pct(times, 50)


def bench_size(n: int, args: argparse.Namespace, engine, selfie: bytes, own: list[Path], workdir: Path) -> dict:
    rng = np.random.default_rng(n)
    store = Store(f"sqlite:///{workdir / f'bench{n}.db'}")
    kind = "qdrant" if args.engine == "qdrant-local" else "embedded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # local mode: "slow past 20,000 points"
        index = open_vectors(kind, path=":memory:" if args.memory else workdir / f"vectors{n}")
    client = EventVectors(index)
    events = Events(store, PhotoFiles(workdir / f"photos{n}"), client)
    events.create_tables()
    out: dict = {"faces": n}
    try:
        event = events.create_event(f"bench {n}")
        worker = FaceWorker(events, engine).start()
        for path in own:  # the person's real faces
            worker.submit(event.id, events.add_photo(event.id, path.name, path.read_bytes()).photo.id)
        worker.wait_idle()
        worker.stop()
        real = events.photo_status(event.id)["faces"]
        out["load_s"] = fill(events, event.id, engine.recognizer_id, max(0, n - real), engine.embedder.dim, rng)
        search = FaceSearch(events, engine)
        query = search.selfie(selfie).face.embedding
        vector_t, total_t, vector_cpu, total_cpu = [], [], 0.0, 0.0
        found = 0
        for _ in range(args.queries):
            start, cpu = time.perf_counter(), time.thread_time()
            events.vectors.search(event.id, engine.recognizer_id, query, to_cosine(DEFAULT_THRESHOLD), 5000)
            vector_t.append(time.perf_counter() - start)
            vector_cpu += time.thread_time() - cpu
            start, cpu = time.perf_counter(), time.process_time()
            found = len(search.search(event.id, selfie).matches)
            total_t.append(time.perf_counter() - start)
            total_cpu += time.process_time() - cpu
        out.update(vector_cpu_ms=vector_cpu * 1000 / args.queries, search_cpu_ms=total_cpu * 1000 / args.queries)
        out.update(
            vector_p50=pct(vector_t, 50),
            vector_p95=pct(vector_t, 95),
            search_p50=pct(total_t, 50),
            search_p95=pct(total_t, 95),
            found=found,
        )
        if args.shared and n >= 1000:
            out["shared_p50"] = shared_filtered(n, engine.embedder.dim, query, max(5, args.queries // 4), rng)
    finally:
        client.close()
        store.dispose()
    return out


def canvases(data: Path, count: int, mp: float, faces: int, seed: int = 0) -> list[bytes]:
    """`count` JPEGs of `mp` megapixels with `faces` different portraits pasted on each."""
    import cv2

    from revisit.shared.dataset import load_labels

    rng = np.random.default_rng(seed)
    portraits = sorted((r.path for r in load_labels(data) if r.kind == "photo"), key=str)
    picks = rng.choice(len(portraits), size=count * faces, replace=len(portraits) < count * faces)
    width = int(round((mp * 1e6 * 1.5) ** 0.5))
    height = int(round(width / 1.5))
    cols = int(np.ceil((faces * 1.5) ** 0.5))
    rows = int(np.ceil(faces / cols))
    out = []
    for i in range(count):
        low = rng.integers(60, 200, (height // 64 + 1, width // 64 + 1, 3), dtype=np.uint8)
        canvas = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.add(canvas, rng.integers(0, 12, canvas.shape, dtype=np.uint8))  # some grain, as a camera has
        cell_w, cell_h = width // cols, height // rows
        for k in range(faces):
            face = cv2.imread(str(portraits[picks[i * faces + k]]))
            side = min(cell_w, cell_h, face.shape[1] * 3) - 20
            face = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            r, c = divmod(k, cols)
            y = r * cell_h + int(rng.integers(0, cell_h - side))
            x = c * cell_w + int(rng.integers(0, cell_w - side))
            canvas[y : y + side, x : x + side] = face
        out.append(bytes(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]))
    return out


def bench_extraction(args: argparse.Namespace, engine) -> None:
    import cv2

    from revisit.central.kiosk.worker import photo_detector
    from revisit.shared.image import decode_image

    print(f"making {args.photos} photos of {args.mp} MP with {args.faces} faces each ...", flush=True)
    photos = canvases(args.data, args.photos + 1, args.mp, args.faces)
    size = np.median([len(p) for p in photos]) / 2**20
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (a shared machine: other jobs run too); "
        f"{engine.recognizer_id}; JPEG {size:.1f} MB median",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="revisit-bench-extract-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'x.db'}")
        events = Events(store, PhotoFiles(Path(tmp) / "photos"), EventVectors.memory())
        events.create_tables()
        event = events.create_event("bench extraction")
        worker = FaceWorker(events, engine, max_side=args.max_side).start()
        # warm-up (first runs of the models are slow), then the time until one photo is searchable
        warm = events.add_photo(event.id, "warm.jpg", photos[-1]).photo
        worker.submit(event.id, warm.id)
        worker.wait_idle()
        start = time.perf_counter()
        one = events.add_photo(event.id, "one.jpg", photos[0]).photo
        uploaded = time.perf_counter()
        worker.submit(event.id, one.id)
        worker.wait_idle()
        searchable = time.perf_counter()
        found = events.photo_status(event.id)["faces"]
        # upload part of the rest, then the worker's backlog
        t0, c0 = time.perf_counter(), time.process_time()
        ids = [events.add_photo(event.id, f"p{i}.jpg", data).photo.id for i, data in enumerate(photos[1:-1], 1)]
        t1, c1 = time.perf_counter(), time.process_time()
        for pid in ids:
            worker.submit(event.id, pid)
        worker.wait_idle()
        t2, c2 = time.perf_counter(), time.process_time()
        worker.stop()
        status = events.photo_status(event.id)
        faces = status["faces"] - found
        n = len(ids)
        print(f"\n| {args.mp} MP, {args.faces} faces, max_side {args.max_side} | value |\n|---|---:|")
        print(f"| upload (validate, store, thumbnail) | {(t1 - t0) / n:.2f} s/photo, CPU {(c1 - c0) / n:.2f} s |")
        print(f"| extraction | **{n / (t2 - t1):.2f} photos/s**, {faces / (t2 - t1):.1f} faces/s |")
        print(f"| extraction CPU per photo | {(c2 - c1) / n:.2f} s |")
        print(f"| faces found / pasted | {faces} / {n * args.faces} |")
        print(f"| upload to searchable, idle worker | {searchable - start:.2f} s (upload {uploaded - start:.2f} s) |")
        events.vectors.close()
        store.dispose()
    # where one photo's time goes (medians of 3)
    data = photos[0]
    detector = photo_detector(engine, args.max_side)

    def timed(fn, k: int = 3):
        """(median CPU s of this process, all threads: steadier than wall time on a shared machine, result)"""
        times, result = [], None
        for _ in range(k):
            s0 = time.process_time()
            result = fn()
            times.append(time.process_time() - s0)
        return float(np.median(times)), result

    buf = np.frombuffer(data, np.uint8)
    t_pil, full = timed(lambda: decode_image(data, max_pixels=100_000_000, max_bytes=200 * 2**20))
    t_cv, _ = timed(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR))
    t_red, half = timed(lambda: cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_2))
    t_det, dets = timed(lambda: detector.detect(full))
    t_det_half, _ = timed(lambda: detector.detect(half))
    t_emb, _ = timed(lambda: engine.complete(full, detector.detect(full)))
    print(f"\n| stage, one {full.shape[1]}x{full.shape[0]} photo ({len(dets)} faces) | CPU ms |\n|---|---:|")
    print(f"| decode, Pillow (the worker's `decode_image`) | {t_pil * 1000:.0f} |")
    print(f"| decode, OpenCV full | {t_cv * 1000:.0f} |")
    print(f"| decode, OpenCV IMREAD_REDUCED_COLOR_2 | {t_red * 1000:.0f} |")
    print(f"| detect at max_side {args.max_side} (full image) | {t_det * 1000:.0f} |")
    print(f"| detect at max_side {args.max_side} (half image) | {t_det_half * 1000:.0f} |")
    print(f"| detect + assess + embed all faces | {t_emb * 1000:.0f} |")
    # what the reduced decode costs in accuracy: the same faces found, and their embeddings' agreement
    whole = engine.complete(full, detector.detect(full))
    reduced = engine.complete(half, detector.detect(half))
    cos = []
    for f in whole:
        near = min(reduced, key=lambda r: float(np.sum((np.asarray(r.box) * 2 - np.asarray(f.box)) ** 2)), default=None)
        if near is not None:
            cos.append(float(np.dot(f.embedding, near.embedding)))
    print(f"| faces found, full / half-size decode | {len(whole)} / {len(reduced)} |")
    agree = f"median {np.median(cos):.3f}, min {min(cos):.3f}" if cos else "no faces"
    print(f"| embedding cosine, full vs half-size decode (same face) | {agree} |")


def _scan(event: EventVectors, rec: str, query: np.ndarray, lock: Any, stop: Any, scans: list[int]) -> None:
    """Selfie searches of one event back to back until `stop`, each inside `lock`."""
    while not stop.is_set():
        with lock:
            event.search(uuid.UUID(int=1), rec, query, 0.36, 100)
        scans[0] += 1


def bench_ingest_wait(args: argparse.Namespace) -> None:
    import threading

    from revisit.central.vectors.embedded import EmbeddedVectors

    rng = np.random.default_rng(0)
    dim, rec, ops = 512, "bench@ingest", args.queries * 10
    print(f"embedded (memory), {dim}-d, 10,000 visitors, {ops} ingest operations per case, {os.cpu_count()} CPUs")
    print("| faces in the event | scans | ingest p50 ms | ingest p95 ms | scans meanwhile |")
    print("|---:|---|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        index = EmbeddedVectors(None)
        index.ensure(rec, dim)
        visitors = [uuid.uuid4() for _ in range(10_000)]
        vecs = unit(rng.normal(size=(10_000, dim)))
        index.upsert_prototypes(rec, [(v, vec, "s1") for v, vec in zip(visitors, vecs, strict=True)])
        event = EventVectors(index)
        for i in range(0, n, 10_000):
            k = min(10_000, n - i)
            event.upsert(
                uuid.UUID(int=1), rec, [(uuid.uuid4(), uuid.uuid4(), v) for v in unit(rng.normal(size=(k, dim)))]
            )
        queries = unit(rng.normal(size=(ops, dim)))
        for i, q in enumerate(queries[:100]):  # warm up
            index.search_prototypes(rec, q, 5, floor=0.36)
            index.upsert_prototypes(rec, [(visitors[i], q, "s1")])
        for case in ("none", "own lock (now)", "index lock (before)"):
            stop, scans = threading.Event(), [0]
            lock = index.lock if case.startswith("index") else contextlib.nullcontext()
            query = unit(rng.normal(size=(1, dim)))[0]
            work = (event, rec, query, lock, stop, scans)
            thread = threading.Thread(target=_scan, args=work, daemon=True) if case != "none" else None
            if thread:
                thread.start()
                time.sleep(0.2)
            times = []
            for i, q in enumerate(queries):
                t0 = time.perf_counter()
                index.search_prototypes(rec, q, 5, floor=0.36)
                index.upsert_prototypes(rec, [(visitors[i % 10_000], q, "s1")])
                times.append(time.perf_counter() - t0)
                time.sleep(0.002)  # observations arrive, they are not back to back
            stop.set()
            if thread:
                thread.join()
            print(
                f"| {n:,} | {case} | {pct(times, 50):.2f} | {pct(times, 95):.2f} | {scans[0] if thread else '–'} |",
                flush=True,
            )
        index.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extraction", action="store_true", help="benchmark background extraction instead")
    parser.add_argument("--photos", type=int, default=8, help="--extraction: photos to process")
    parser.add_argument("--mp", type=float, default=24, help="--extraction: megapixels per photo")
    parser.add_argument("--faces", type=int, default=20, help="--extraction: faces per photo")
    parser.add_argument("--max-side", type=int, default=1280, help="--extraction: the detector's input side")
    parser.add_argument("--sizes", default="1000,10000,100000", help="faces per event, comma-separated")
    parser.add_argument("--engine", choices=["embedded", "qdrant-local"], default="embedded")
    parser.add_argument("--queries", type=int, default=30, help="searches per size")
    parser.add_argument("--data", type=Path, default=SHARED / "facedata" / "dev", help="labelled photos (the selfie)")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("REVISIT_MODELS") or SHARED / "models"))
    parser.add_argument("--memory", action="store_true", help="the index in memory instead of on disk")
    parser.add_argument("--no-shared", dest="shared", action="store_false", help="skip the shared-collection column")
    parser.add_argument("--ingest-wait", action="store_true", help="ingest's latency while event scans run")
    args = parser.parse_args()
    if args.ingest_wait:
        bench_ingest_wait(args)
        return 0

    from revisit.shared.engine import FaceEngine

    engine = FaceEngine(models_dir=args.models)
    if args.extraction:
        bench_extraction(args, engine)
        return 0
    selfie, own = person_photos(args.data)
    print(
        f"{args.engine} ({'memory' if args.memory else 'on disk'}), {engine.recognizer_id}, "
        f"threshold {DEFAULT_THRESHOLD} ((cos+1)/2), {args.queries} searches per size, {os.cpu_count()} CPUs"
    )
    print(
        "| faces | load s | vector p50 ms | vector p95 ms | search p50 ms | search p95 ms | found "
        "| shared+filter p50 ms | vector CPU ms | search CPU ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="revisit-bench-kiosk-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            r = bench_size(n, args, engine, selfie, own, Path(tmp))
            shared = f"{r['shared_p50']:.1f}" if "shared_p50" in r else "–"
            print(
                f"| {n:,} | {r['load_s']:.1f} | {r['vector_p50']:.1f} | {r['vector_p95']:.1f} "
                f"| {r['search_p50']:.1f} | {r['search_p95']:.1f} | {r['found']} | {shared} "
                f"| {r['vector_cpu_ms']:.1f} | {r['search_cpu_ms']:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

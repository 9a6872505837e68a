"""Event kiosk benchmark: selfie search latency against the number of faces in the event.

    .venv/bin/python bench/kiosk.py                          # 1k, 10k, 100k faces; the embedded engine on disk
    .venv/bin/python bench/kiosk.py --sizes 100,1000 --queries 20
    .venv/bin/python bench/kiosk.py --engine qdrant-local    # qdrant-client local mode (the old default)
    .venv/bin/python bench/kiosk.py --no-shared              # skip the shared-collection comparison

For each size N, one event gets N faces: the real faces of a few photos of one person (so a search finds
something and the database part of the search is exercised) and random 512-d unit vectors for the rest (a store
of that size; random vectors match nothing). Reported per size:
- load: seconds to upsert the N points (the engine's journal / local mode's SQLite file included);
- vector p50/p95: the vector search alone (`EventVectors.search` at the default threshold);
- search p50/p95: the whole kiosk search from the JPEG bytes of a real selfie: decode, detect, pick and check the
  face, embed it, search, keep each photo's best face and read the photos from the database (`FaceSearch.search`);
- shared p50: for comparison, the design not taken: one collection holding every event's faces (N in all), searched
  with an `event_id` payload filter for an event of 1,000 of them.

A script that prints a table, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qdrant_client import QdrantClient, models  # noqa: E402

from revisit.central.events import Events, EventVectors  # noqa: E402
from revisit.central.photos import FaceWorker, PhotoFiles  # noqa: E402
from revisit.central.search import DEFAULT_THRESHOLD, FaceSearch, to_cosine  # noqa: E402
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
    from revisit.central.events import Photo

    photos = [Photo(event_id=event_id, filename=f"p{i}.jpg", stored_name=f"{uuid.uuid4().hex}.jpg",
                    thumb_name=f"{uuid.uuid4().hex}.jpg", status="done", faces_found=4)
              for i in range((n + 3) // 4)]  # fmt: skip
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
        client.upsert("faces", points=[
            models.PointStruct(id=str(uuid.uuid4()), vector=vecs[j].tolist(),
                               payload={"event_id": "ours" if k + j < ours else f"e{(k + j) // 1000}"})
            for j in range(m)
        ])  # fmt: skip
    flt = models.Filter(must=[models.FieldCondition(key="event_id", match=models.MatchValue(value="ours"))])
    times = []
    for _ in range(queries):
        start = time.perf_counter()
        client.query_points("faces", query=query.tolist(), query_filter=flt, limit=5000,
                            score_threshold=to_cosine(DEFAULT_THRESHOLD))  # fmt: skip
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
        out.update(vector_p50=pct(vector_t, 50), vector_p95=pct(vector_t, 95), search_p50=pct(total_t, 50),
                   search_p95=pct(total_t, 95), found=found)  # fmt: skip
        if args.shared and n >= 1000:
            out["shared_p50"] = shared_filtered(n, engine.embedder.dim, query, max(5, args.queries // 4), rng)
    finally:
        client.close()
        store.dispose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="faces per event, comma-separated")
    parser.add_argument("--engine", choices=["embedded", "qdrant-local"], default="embedded")
    parser.add_argument("--queries", type=int, default=30, help="searches per size")
    parser.add_argument("--data", type=Path, default=SHARED / "facedata" / "dev", help="labelled photos (the selfie)")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("REVISIT_MODELS") or SHARED / "models"))
    parser.add_argument("--memory", action="store_true", help="the index in memory instead of on disk")
    parser.add_argument("--no-shared", dest="shared", action="store_false", help="skip the shared-collection column")
    args = parser.parse_args()

    from revisit.shared.engine import FaceEngine

    engine = FaceEngine(models_dir=args.models)
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

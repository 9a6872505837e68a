"""CPU per whole assignment on a bulk-loaded store, before/after an index, optionally under cProfile.

    .venv/bin/python bench/assign_profile.py 100000 --real dev.npz --sightings 4            # with the index
    .venv/bin/python bench/assign_profile.py 100000 --real dev.npz --sightings 4 --drop-index  # as before it
    .venv/bin/python bench/assign_profile.py 100000 --real dev.npz --profile                # where the time goes
    .venv/bin/python bench/assign_profile.py 100000 --real dev.npz --sightings 4 --batch 64  # as ingest batches

Loads N visitors once into BASE/dataN the way bench/central.py does (and `--sightings CAMERAS`: one stored
sighting per visitor over that many cameras, into BASE/dataNsC), then times `Assigner.ingest` of `--obs`
observations (half returning visitors, half new people) on a fresh copy, after 20 untimed ones. Prints one JSON
line; CPU time (`cpu_ms_per_obs`) is the figure on a shared machine. `--drop-index` drops ix_sighting_camera_last
after open: the store as it was before that index. A script, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import pstats
import shutil
import time
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_central", Path(__file__).with_name("central.py"))
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, help="visitors")
    p.add_argument("--base", type=Path, default=Path("/tmp/revisit-assign-profile"))
    p.add_argument("--real", type=Path, help="real embeddings (see bench/central.py)")
    p.add_argument("--obs", type=int, default=200)
    p.add_argument("--generator", choices=sorted(bench.GENERATORS), default="calibrated")
    p.add_argument("--sightings", type=int, default=0, metavar="CAMERAS")
    p.add_argument("--drop-index", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--batch", type=int, default=1, help="observations per `ingest_batch` call (production: 64)")
    p.add_argument("--foreground-adds", action="store_true", help="ingest adds prototypes to the graph itself")
    p.add_argument("--returning-only", action="store_true", help="time only the returning visitors' observations")
    p.add_argument(
        "--messages", action="store_true", help="encoded messages through `Ingestor.handle_batch` (decode, checks)"
    )
    a = p.parse_args()
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService

    def service(data: Path):  # noqa: ANN202
        cfg = {"data_dir": str(data), "ingest": {"max_future_s": None}}  # the observations are dated 2027
        cfg["vectors"] = {"background_adds": not a.foreground_adds}
        return CentralService(CentralConfig.model_validate(cfg)).open()

    pristine = a.base / (f"data{a.n}" if not a.sightings else f"data{a.n}s{a.sightings}")
    pristine = pristine.with_name(f"{pristine.name}-{a.generator}")
    generate = bench.GENERATORS[a.generator]
    if not pristine.exists():
        rng = np.random.default_rng(a.n)
        real = bench.load_real(a.real)
        protos = generate(a.n, rng, real)
        t0, c0 = time.perf_counter(), time.process_time()
        svc = service(pristine)
        try:
            index_s, ids = bench.load_visitors(svc.store, svc.vectors, protos)
            rows_s = time.perf_counter() - t0 - index_s
            if a.sightings:
                bench.load_sightings(svc.store, ids, protos, a.sightings)
        finally:
            svc.stop()
        load = {
            "visitors": a.n,
            "sightings_cameras": a.sightings,
            "load_s": round(time.perf_counter() - t0, 1),
            "load_cpu_s": round(time.process_time() - c0, 1),
            "visitor_rows_s": round(rows_s, 1),
            "index_s": round(index_s, 1),
        }
        (pristine / "load.json").write_text(json.dumps(load))
        print(json.dumps(load), flush=True)
        np.save(pristine / "ids.npy", np.frombuffer(b"".join(u.bytes for u in ids), dtype=np.uint8).reshape(-1, 16))
        picks = rng.integers(a.n, size=a.obs + 20)
        queries = [
            bench.returning(protos[i], rng) if k % 2 == 0 else generate(1, rng, real)[0] for k, i in enumerate(picks)
        ]
        np.save(pristine / "queries.npy", np.stack(queries).astype(np.float32))
    work = a.base / f"work{a.n}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)
    queries = np.load(work / "queries.npy")[: a.obs + 20]
    svc = service(work)
    svc.repair_index()
    if a.drop_index:
        with svc.store.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX IF EXISTS ix_sighting_camera_last")
    crop = bench.tiny_jpeg()
    for i, vec in enumerate(queries[:20]):  # warm-up
        svc.clusterer.ingest(bench.observation(vec, 100_000 + i, crop))
    prof = cProfile.Profile() if a.profile else None
    times = []
    cpu0 = time.process_time()
    if prof:
        prof.enable()
    timed = queries[20::2] if a.returning_only else queries[20:]  # even: returning visitors
    ingestor = svc.make_ingestor() if a.messages else None
    topic = bench.faces_topic("bench", "d1")
    for start in range(0, len(timed), a.batch):
        chunk = [bench.observation(vec, start + k, crop) for k, vec in enumerate(timed[start : start + a.batch])]
        payloads = [(topic, bench.encode(o)) for o in chunk]
        t = time.perf_counter()
        if ingestor is not None:
            outcomes = ingestor.handle_batch(payloads)
            assert all(o.kind == "stored" for o in outcomes), outcomes
        else:
            svc.clusterer.ingest_batch(chunk)
        times.extend([(time.perf_counter() - t) / len(chunk)] * len(chunk))
    if prof:
        prof.disable()
    cpu = (time.process_time() - cpu0) * 1000 / len(times)
    svc.stop()
    shutil.rmtree(work, ignore_errors=True)
    out = {
        "visitors": a.n,
        "sightings_cameras": a.sightings,
        "index": not a.drop_index,
        "observations": len(times),
        "batch": a.batch,
        "messages": a.messages,
        "cpu_ms_per_obs": round(cpu, 2),
        "p50_ms": round(bench.pct(times, 50), 1),
        "p95_ms": round(bench.pct(times, 95), 1),
    }
    print(json.dumps(out), flush=True)
    if prof:
        prof.dump_stats(str(a.base / "profile.out"))  # for pstats' print_callees and friends
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()

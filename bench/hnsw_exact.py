"""Exactness of the embedded engine's HNSW prototype search against brute force, and of cheap fixes.

    .venv/bin/python bench/hnsw_exact.py 1000000 --real /tmp/dev.npz --index /tmp/calib1m.usearch
    .venv/bin/python bench/hnsw_exact.py 1000000 --real /tmp/dev.npz --generator real_like \\
        --store /tmp/i10/store/data1000000s4          # the index of a store bulk-loaded by assign_profile.py

Builds (or loads) one usearch index with the engine's settings (central/vectors/embedded.py: connectivity,
expansions) over N synthetic visitors made by bench/central.py's generator (`--generator`), then asks it for
`--queries` returning shots and compares with brute force in f32 over all N:
- `top1`: HNSW's nearest is the exact nearest; `top1_or_tie`: or within 2e-3 of it (f16 rounding);
- `decision_changed`: the assignment (join the best at or above the threshold, else a new visitor) differs;
- the same for variants: an exact f32 re-rank of the candidates (`rerank`), more candidates, a wider search.
Build time and CPU are printed (the load time of a 1M store is mostly this). A script, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
from usearch.index import Index

from revisit.central.vectors import embedded as emb
from revisit.shared.assign import DEFAULT_THRESHOLD

_spec = importlib.util.spec_from_file_location("bench_central", Path(__file__).with_name("central.py"))
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]


def brute(protos: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows and cosines of each query, f32, chunks of 100k rows."""
    rows = np.zeros((len(queries), 0), np.int64)
    sims = np.zeros((len(queries), 0), np.float32)
    for s in range(0, len(protos), 100_000):
        block = queries @ protos[s : s + 100_000].astype(np.float32).T
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        rows = np.concatenate([rows, top + s], axis=1)
        sims = np.concatenate([sims, np.take_along_axis(block, top, 1)], axis=1)
        keep = np.argsort(-sims, axis=1)[:, :k]
        rows, sims = np.take_along_axis(rows, keep, 1), np.take_along_axis(sims, keep, 1)
    return rows, sims


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int)
    p.add_argument("--real", type=Path, required=True)
    p.add_argument("--generator", default="real_like", help="a generator of bench/central.py")
    p.add_argument("--index", type=Path, help="build here once (or load)")
    p.add_argument("--store", type=Path, help="use the index of this bulk-loaded store (assign_profile.py)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=0, help="build threads (0: all cores)")
    a = p.parse_args()
    real = bench.load_real(a.real)
    rng = np.random.default_rng(a.n)
    protos = getattr(bench, a.generator)(a.n, rng, real)
    out: dict = {"visitors": a.n, "generator": a.generator, "connectivity": emb.CONNECTIVITY,
                 "expansion_add": emb.EXPANSION_ADD, "expansion_search": emb.EXPANSION_SEARCH}  # fmt: skip
    if a.store is not None:
        folder = next((a.store / "vectors" / "rec").iterdir())
        ids = np.load(a.store / "ids.npy")
        keys = ids[:, 8:].copy().view(">u8").ravel().astype(np.uint64)  # low 64 bits of each visitor id
        index = Index.restore(str(folder / "part0.usearch"))
        row_of = dict(zip(keys.tolist(), range(a.n), strict=True))
    else:
        keys = np.arange(a.n, dtype=np.uint64)
        row_of = None
        if a.index is not None and a.index.exists():
            index = Index.restore(str(a.index))
        else:
            index = Index(ndim=bench.DIM, metric="cos", dtype="f16", connectivity=emb.CONNECTIVITY,
                          expansion_add=emb.EXPANSION_ADD, expansion_search=emb.EXPANSION_SEARCH)  # fmt: skip
            t, c = time.perf_counter(), time.process_time()
            for s in range(0, a.n, 50_000):
                index.add(keys[s : s + 50_000], protos[s : s + 50_000], threads=a.threads)
            out["build_s"], out["build_cpu_s"] = time.perf_counter() - t, time.process_time() - c
            if a.index is not None:
                index.save(str(a.index))
    qrng = np.random.default_rng(12345)
    pick = qrng.integers(a.n, size=a.queries)
    queries = np.stack([bench.returning(protos[i], qrng) for i in pick]).astype(np.float32)
    ex_rows, ex_sims = brute(protos, queries, 64)
    floor = DEFAULT_THRESHOLD

    def hnsw(q: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        index.expansion_search = max(ef, k)
        m = index.search(emb._unit16(q)[0], k, threads=1)
        rows = np.array([row_of[int(x)] for x in m.keys] if row_of else m.keys.astype(np.int64))
        return rows, 1.0 - m.distances.astype(np.float32)

    def run(k: int, ef: int, retry: int, rerank: bool) -> dict:
        top1 = tie = changed = own = 0
        cpu = time.process_time()
        for j, q in enumerate(queries):
            rows, sims = hnsw(q, k, ef)
            if sims[0] < floor:  # the engine's second look for "a new person"
                rows, sims = hnsw(q, k, retry)
            if rerank:  # exact f32 cosines of the candidates
                sims = protos[rows].astype(np.float32) @ q
                order = np.argsort(-sims)
                rows, sims = rows[order], sims[order]
            exact_row, exact_sim = int(ex_rows[j, 0]), float(ex_sims[j, 0])
            top1 += int(rows[0]) == exact_row
            tie += int(rows[0]) == exact_row or exact_sim - float(sims[0]) <= 2e-3
            mine = int(rows[0]) if sims[0] >= floor else -1
            exact = exact_row if exact_sim >= floor else -1
            changed += mine != exact
            own += mine == int(pick[j])
        n = len(queries)
        return {"k": k, "ef": ef, "retry": retry, "rerank": rerank, "top1": top1 / n, "top1_or_tie": tie / n,
                "decision_changed": changed / n, "joined_own": own / n,
                "cpu_ms": (time.process_time() - cpu) * 1000 / n}  # fmt: skip

    out["exact_joined_own"] = float(np.mean(ex_rows[:, 0] == pick))
    out["exact_gap_p50"] = float(np.median(ex_sims[:, 0] - ex_sims[:, 1]))
    out["variants"] = [run(8, emb.EXPANSION_SEARCH, emb.EXPANSION_RETRY, False),  # as shipped
                       run(8, emb.EXPANSION_SEARCH, emb.EXPANSION_RETRY, True),
                       run(32, emb.EXPANSION_SEARCH, emb.EXPANSION_RETRY, True),
                       run(8, 512, emb.EXPANSION_RETRY, False),
                       run(8, 1024, 1024, False)]  # fmt: skip
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

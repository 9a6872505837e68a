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
Even queries are returning shots, odd ones new people: figures in pairs [returning, new]. Build time and CPU
are printed (the load time of a 1M store is mostly this). A script, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
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
    p.add_argument("--generator", default="calibrated", help="a generator of bench/central.py")
    p.add_argument("--index", type=Path, help="build here once (or load)")
    p.add_argument("--store", type=Path, help="use the index of this bulk-loaded store (assign_profile.py)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=0, help="build threads (0: all cores)")
    p.add_argument("--variants", help="indexes into the list of variants (default: all)")
    p.add_argument("--dtype", default=None, help="build with this scalar kind (f16, bf16, i8; default: the engine's)")
    a = p.parse_args()
    real = bench.load_real(a.real)
    rng = np.random.default_rng(a.n)
    protos = getattr(bench, a.generator)(a.n, rng, real)
    out: dict = {
        "visitors": a.n,
        "generator": a.generator,
        "connectivity": emb.CONNECTIVITY,
        "expansion_add": emb.EXPANSION_ADD,
        "expansion_search": emb.EXPANSION_SEARCH,
        "dtype": a.dtype or emb.DTYPE,
    }
    if a.store is not None:
        folder = next((a.store / "vectors" / "rec").iterdir())
        ids = np.load(a.store / "ids.npy")
        keys = ids[:, 8:].copy().view(">u8").ravel().astype(np.uint64)  # low 64 bits of each visitor id
        index = Index.restore(str(folder / "part0.usearch"))
        table = np.load(folder / "keys.npy")  # visitor key, high bits, part, graph key (3 columns: the visitor key)
        graph_keys = table[:, 3] if table.shape[1] == 4 else table[:, 0]
        row_of_visitor = dict(zip(keys.tolist(), range(a.n), strict=True))
        # -1: a visitor the store gained after the bulk load (bench/central.py's timed assignments)
        row_of = {g: row_of_visitor.get(k, -1) for k, g in zip(table[:, 0].tolist(), graph_keys.tolist(), strict=True)}
    else:
        keys = np.arange(a.n, dtype=np.uint64)
        row_of = None
        if a.index is not None and a.index.exists():
            index = Index.restore(str(a.index))
        else:
            index = Index(
                ndim=bench.DIM,
                metric="cos",
                dtype=a.dtype or emb.DTYPE,
                connectivity=emb.CONNECTIVITY,
                expansion_add=emb.EXPANSION_ADD,
                expansion_search=emb.EXPANSION_SEARCH,
            )
            t, c = time.perf_counter(), time.process_time()
            for s in range(0, a.n, 50_000):
                index.add(keys[s : s + 50_000], protos[s : s + 50_000], threads=a.threads)
            out["build_s"], out["build_cpu_s"] = time.perf_counter() - t, time.process_time() - c
            if a.index is not None:
                index.save(str(a.index))
    qrng = np.random.default_rng(12345)
    pick = qrng.integers(a.n, size=a.queries)
    generate = getattr(bench, a.generator)
    # even: another shot of a known visitor; odd: a new person (the engine's second look is for these)
    queries = np.stack(
        [bench.returning(protos[i], qrng) if j % 2 == 0 else generate(1, qrng, real)[0] for j, i in enumerate(pick)]
    ).astype(np.float32)
    pick[1::2] = -1
    ex_rows, ex_sims = brute(protos, queries, 64)
    floor = DEFAULT_THRESHOLD

    def hnsw(q: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        index.expansion_search = max(ef, k)
        m = index.search(emb._unit16(q)[0], k, threads=1)
        rows = np.array([row_of.get(int(x), -1) for x in m.keys] if row_of else m.keys.astype(np.int64))
        return rows, 1.0 - m.distances.astype(np.float32)

    def run(k: int, ef: int, retry: int, rerank: bool, gap: float = 0.0, near: float = 1.0) -> dict:
        top1, tie, changed = np.zeros(2), np.zeros(2), np.zeros(2)
        own = looks = 0
        cpu = time.process_time()
        for j, q in enumerate(queries):
            rows, sims = hnsw(q, k, ef)
            # the engine's second look: "a new person", or (gap > 0) a close runner-up
            below = floor - near <= sims[0] < floor  # near: only a best this close under the threshold
            if retry and (below or (len(sims) > 1 and sims[0] - sims[1] < gap)):
                rows, sims = hnsw(q, k, retry)
                looks += 1
            if rerank:  # exact f32 cosines of the candidates
                sims = protos[rows].astype(np.float32) @ q
                order = np.argsort(-sims)
                rows, sims = rows[order], sims[order]
            exact_row, exact_sim = int(ex_rows[j, 0]), float(ex_sims[j, 0])
            new = j % 2
            top1[new] += int(rows[0]) == exact_row
            tie[new] += int(rows[0]) == exact_row or exact_sim - float(sims[0]) <= 2e-3
            mine = int(rows[0]) if sims[0] >= floor else -1
            exact = exact_row if exact_sim >= floor else -1
            changed[new] += mine != exact
            own += mine == int(pick[j]) and not new
        n = np.array([(len(queries) + 1) // 2, len(queries) // 2])
        cpu_ms = (time.process_time() - cpu) * 1000 / len(queries)
        return {
            "k": k,
            "ef": ef,
            "retry": retry,
            "rerank": rerank,
            "gap": gap,
            "near": near,
            "top1": (top1 / n).round(4).tolist(),
            "top1_or_tie": (tie / n).round(4).tolist(),
            "decision_changed": (changed / n).round(4).tolist(),
            "joined_own": own / n[0],
            "second_looks": looks / len(queries),
            "cpu_ms": cpu_ms,
        }

    out["exact_joined_own"] = float(np.mean(ex_rows[0::2, 0] == pick[0::2]))
    out["new_with_a_prototype_above_threshold"] = float(np.mean(ex_sims[1::2, 0] >= floor))
    shipped = (emb.EXPANSION_SEARCH, emb.EXPANSION_RETRY)
    variants = [
        (8, *shipped, False, 0.0),
        (8, emb.EXPANSION_SEARCH, 0, False, 0.0),  # as shipped; no second look
        (8, *shipped, True, 0.0),
        (32, *shipped, True, 0.0),  # exact re-rank of 8 / 32 candidates
        (8, *shipped, False, 0.05),
        (8, *shipped, False, 0.1),  # second look also for a close runner-up
        (8, 64, 0, False, 0.0),
        (8, 128, 0, False, 0.0),
        (8, 128, 512, False, 0.0),
        (8, 512, 0, False, 0.0),
        (8, 1024, 0, False, 0.0),
        (8, *shipped, False, 0.0, 0.1),
        (8, 128, 512, False, 0.0, 0.1),
        (8, 128, 512, False, 0.0, 0.05),
        (8, 128, 1024, False, 0.0, 0.1),
        (8, 256, 1024, False, 0.0),  # the widths before the first look narrowed to 128
        (8, 192, 1024, False, 0.0),
        (8, 64, 1024, False, 0.0),  # a narrower first look, the same second look
        (8, 96, 1024, False, 0.0),
    ]
    if a.variants:
        variants = [variants[int(v)] for v in a.variants.split(",")]
    out["variants"] = []
    for v in variants:
        out["variants"].append(run(*v))
        print(json.dumps(out["variants"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

"""What a removal costs in a usearch graph: the first call after `remove` walks the whole graph.

    .venv/bin/python bench/usearch_remove.py GRAPH.usearch      # e.g. bench/hnsw_exact.py --index's file

Loads a saved graph and prints CPU ms of: plain searches; the first and second search after removing one key;
the same after removing five keys in one call; an add after a removal. This is why the embedded engine adds a
changed prototype under a fresh key and removes the replaced entries 64 at a time (central/vectors/embedded.py).
Measured: ~35 ms for the first call after a removal at 1M, ~10 ms at 300k, ~4 ms at 100k, whatever the number
removed; plain searches 1-6 ms. A script that prints lines, not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from usearch.index import Index


def cpu_ms(call) -> float:  # noqa: ANN001
    start = time.process_time()
    call()
    return round((time.process_time() - start) * 1000, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("graph")
    a = p.parse_args()
    index = Index.restore(a.graph)
    rng = np.random.default_rng(0)
    keys = index.keys[:20] if hasattr(index.keys, "__getitem__") else np.array(list(index.keys)[:20])
    queries = [index.get(int(k)).astype(np.float16) for k in keys[10:16]]
    print(len(index), "vectors;", index)
    print("plain searches", [cpu_ms(lambda q=q: index.search(q, 8, threads=1)) for q in queries[:3]])
    index.remove(int(keys[0]))
    print("after removing 1: searches", [cpu_ms(lambda q=q: index.search(q, 8, threads=1)) for q in queries[:3]])
    index.remove(np.asarray(keys[1:6], dtype=np.uint64))
    print("after removing 5: searches", [cpu_ms(lambda q=q: index.search(q, 8, threads=1)) for q in queries[:3]])
    index.remove(int(keys[6]))
    vec = rng.normal(size=index.ndim).astype(np.float16)
    print(
        "after removing 1: add",
        cpu_ms(lambda: index.add(int(keys[6]), vec, threads=1)),
        "then add",
        cpu_ms(lambda: index.add(2**62 - 1, vec, threads=1)),
    )


if __name__ == "__main__":
    main()

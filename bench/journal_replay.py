"""Reopen after a crash: how long the embedded engine takes to replay its journal of prototype upserts.

    .venv/bin/python bench/journal_replay.py /tmp/b1m/data1000000/vectors --upserts 20000

Copies the vector index of a store (bench/central.py --keep) to a scratch folder, then a child process opens it
and writes `--upserts` prototype upserts as ingest does (batches of `--batch`: half existing visitors moved, half
new visitors), each batch one journal record, and dies without closing (`os._exit`: no checkpoint, as after a
kill -9 or a power cut). This process then reopens the index and reports the reopen time, the journal's size
and the records replayed. Prints one JSON line. A script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from revisit.central.vectors.embedded import EmbeddedVectors

REC = "w600k_mbf@5e03a553209a"


def write(folder: Path, upserts: int, batch: int) -> None:
    """The child: journaled upserts, then an exit that skips every cleanup."""
    vectors = EmbeddedVectors(folder)
    protos = vectors._protos[REC]  # noqa: SLF001 - a benchmark reads the visitor keys it moves
    keys = list(protos.where.items())[: upserts // 2]
    rng = np.random.default_rng(1)
    known = [uuid.UUID(int=(high << 64) | key) for key, (high, _, _) in keys]
    ids = known + [uuid.uuid4() for _ in range(upserts - len(known))]
    rng.shuffle(ids)
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        vecs = rng.standard_normal((len(chunk), protos.dim)).astype(np.float32)
        vectors.upsert_prototypes(REC, [(vid, vec, protos.sites[0]) for vid, vec in zip(chunk, vecs, strict=True)])
    print(json.dumps({"journal_mb": (folder / "journal.bin").stat().st_size / 2**20}), flush=True)
    os._exit(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("vectors", type=Path, help="a store's vectors/ folder")
    p.add_argument("--upserts", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        write(a.vectors, a.upserts, a.batch)
        return
    with tempfile.TemporaryDirectory(prefix="revisit-replay-", dir=a.vectors.parent.parent) as tmp:
        folder = Path(tmp) / "vectors"
        shutil.copytree(a.vectors, folder, ignore=shutil.ignore_patterns(".lock"))
        start = time.perf_counter()
        cmd = [sys.executable, __file__, str(folder), "--upserts", str(a.upserts), "--batch", str(a.batch), "--child"]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        written = time.perf_counter() - start
        out = {"upserts": a.upserts, "batch": a.batch, **json.loads(child.stdout.strip().splitlines()[-1])}
        start, cpu = time.perf_counter(), time.process_time()
        vectors = EmbeddedVectors(folder)
        out.update(
            reopen_s=round(time.perf_counter() - start, 2),
            reopen_cpu_s=round(time.process_time() - cpu, 2),
            replayed=vectors.replayed,
            was_clean=vectors.was_clean,
            prototypes=vectors.count(REC),
            write_s=round(written, 1),
        )
        vectors.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

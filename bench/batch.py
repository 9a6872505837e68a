"""Does one detector call for several cameras pay on the CPU? A batch-capable YuNet, ONNX Runtime, CPU time.

    .venv/bin/python bench/batch.py [--batch 4] [--rounds 10] [--models DIR]

Writes a batch-capable copy of YuNet (revisit.models.batchable, needs onnx) to a temporary folder and runs it on
`--batch` frames of 640x384 (a 1080p frame at the detector's 640 side) as one call and as one call per frame,
alternating, and prints the process CPU time per frame of each (medians over `--rounds` rounds) and their ratio.
The edge keeps one call per frame on backends whose ratio is above 1 (`Session.prefers_batches`). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from revisit.models.batchable import make_batchable_yunet
from revisit.models.manifest import Manifest, ModelSpec
from revisit.models.store import resolve
from revisit.shared.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig

REPO = Path(__file__).resolve().parents[1]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--models", help="model directory (default: $REVISIT_MODELS, else ../shared/models)")
    args = parser.parse_args()
    models = Path(args.models or os.environ.get("REVISIT_MODELS") or REPO.parent / "shared" / "models")
    stock = Manifest.load().get("yunet")
    with tempfile.TemporaryDirectory(prefix="revisit-batch-") as tmp:
        path = Path(tmp) / "yunet_batch.onnx"
        sha = make_batchable_yunet(models / stock.file, path)
        spec = ModelSpec(name="yunet_batch", role="detector", family="yunet", file=str(path), sha256=sha)
        session = OnnxRuntimeBackend(OnnxRuntimeConfig()).load(resolve(spec, models))
    frames = np.random.default_rng(0).uniform(0, 255, (args.batch, 3, 384, 640)).astype(np.float32)
    for _ in range(2):  # warm-up
        session.run(frames)
        session.run(frames[:1])
    per_frame: dict[str, list[float]] = {"batched": [], "one_by_one": []}
    for _ in range(args.rounds):
        start = cpu_s()
        session.run(frames)
        per_frame["batched"].append((cpu_s() - start) * 1000 / args.batch)
        start = cpu_s()
        for i in range(args.batch):
            session.run(frames[i : i + 1])
        per_frame["one_by_one"].append((cpu_s() - start) * 1000 / args.batch)
    result = {k: round(statistics.median(v), 2) for k, v in per_frame.items()}
    result["ratio"] = round(result["batched"] / result["one_by_one"], 2)
    result |= {"batch": args.batch, "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(
        f"YuNet (batch-capable copy), ONNX Runtime on {os.cpu_count()} cores, {args.batch} frames of 640x384: "
        f"{result['batched']} ms CPU a frame batched vs {result['one_by_one']} ms one by one "
        f"(ratio {result['ratio']})"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

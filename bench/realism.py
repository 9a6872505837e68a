"""How real-like are bench/central.py's synthetic visitors? Nearest-other-visitor cosines against real impostors.

    .venv/bin/python bench/realism.py --real /tmp/dev.npz --sizes 100000,1000000 [--generator mix3|mixk]

Real (the dev photos, labelled): for each face, the most similar face of another identity among the 4,493, and
the empirical impostor rate above cosines (so the expected impostors above a cosine among N people is N x rate).
Synthetic (per size N): for `--samples` visitors, the most similar *other* visitor among the N (brute force,
f32), and for a returning shot of each (bench/central.py's `returning`) whether another visitor beats its own.
A script that prints JSON lines, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_central", Path(__file__).with_name("central.py"))
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]


def real_stats(path: Path, thresholds: list[float]) -> dict:
    data = np.load(path)
    ok = data["ok"]
    vecs = bench.unit(data["vectors"][ok])
    ident = np.array([p.split("/")[1] for p in data["relpaths"][ok]])
    sims = vecs @ vecs.T
    same = ident[:, None] == ident[None, :]
    np.fill_diagonal(sims, -1.0)
    imp = np.where(same, -1.0, sims)
    upper = np.triu(~same, 1)
    pairs = sims[upper]
    gen = sims[np.triu(same, 1)]
    return {
        "set": "real dev",
        "faces": int(len(vecs)),
        "identities": int(len(set(ident))),
        "nearest_impostor_p50": float(np.median(imp.max(1))),
        "nearest_impostor_p99": float(np.percentile(imp.max(1), 99)),
        "genuine_p50": float(np.median(gen)) if len(gen) else None,
        "impostor_rate_above": {str(t): float((pairs > t).mean()) for t in thresholds},
        "impostor_pairs": int(len(pairs)),
    }


def synth_stats(n: int, real: np.ndarray, samples: int, thresholds: list[float], generator) -> dict:  # noqa: ANN001
    rng = np.random.default_rng(n)
    protos = generator(n, rng, real)
    pick = np.random.default_rng(1).choice(n, size=samples, replace=False)
    queries = protos[pick].astype(np.float32)
    shots = np.stack([bench.returning(protos[i], rng) for i in pick])
    best_other = np.full(samples, -1.0, np.float32)
    shot_other = np.full(samples, -1.0, np.float32)
    for k in range(0, n, 100_000):
        block = protos[k : k + 100_000].astype(np.float32)
        s = queries @ block.T
        t = shots @ block.T
        mine = (pick >= k) & (pick < k + len(block))
        s[np.flatnonzero(mine), pick[mine] - k] = -1.0
        own = np.full(samples, np.nan, np.float32)
        own[mine] = t[np.flatnonzero(mine), pick[mine] - k]
        t[np.flatnonzero(mine), pick[mine] - k] = -1.0
        best_other = np.maximum(best_other, s.max(1))
        shot_other = np.maximum(shot_other, t.max(1))
        if k == 0:
            shot_own = np.full(samples, np.nan, np.float32)
        shot_own = np.where(mine, own, shot_own)
    return {
        "set": generator.__name__,
        "visitors": n,
        "samples": samples,
        "nearest_other_p50": float(np.median(best_other)),
        "nearest_other_p99": float(np.percentile(best_other, 99)),
        "nearest_other_above": {str(t): float((best_other > t).mean()) for t in thresholds},
        "shot_own_p50": float(np.median(shot_own)),
        "shot_other_beats_own": float((shot_other > shot_own).mean()),
        "shot_other_above_0.37": float((shot_other >= 0.37).mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, required=True)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--generator", default="calibrated", help="a function of bench/central.py: (n, rng, real)")
    a = p.parse_args()
    thresholds = [0.3, 0.37, 0.5, 0.7, 0.9]
    print(json.dumps(real_stats(a.real, thresholds)), flush=True)
    real = bench.load_real(a.real)
    for n in map(int, a.sizes.split(",")):
        print(json.dumps(synth_stats(n, real, a.samples, thresholds, getattr(bench, a.generator))), flush=True)


if __name__ == "__main__":
    main()

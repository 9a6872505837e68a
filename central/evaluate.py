"""`revisit eval cluster`: recurrence clustering on labelled photos, through the central service's own code.

Every kind=photo image of labels.csv is decoded, its faces detected, and the face nearest the image centre
aligned, assessed and embedded (as `revisit eval verify` does). The photos are shuffled with a fixed seed
and fed one at a time, as observations one hour apart from one camera, through `Assigner.ingest` on an
in-memory SQLite database and Qdrant ':memory:': the same search, rule, prototypes and visitor creation as
the running service. A photo with no face is its own cluster (a split).

Metrics (BCubed, over all photos): precision_i = |cluster(i) ∩ identity(i)| / |cluster(i)|, recall_i =
|cluster(i) ∩ identity(i)| / |identity(i)|, each averaged over photos; F1 is their harmonic mean.

With --json the last line of stdout is one JSON object: photos, identities, clusters, bcubed_precision,
bcubed_recall, bcubed_f1, threshold, detect_failures, recognizer_id, seed, ms_per_assignment.
--sweep T1,T2,... runs the clustering once per threshold (embeddings computed once) and reports each on
stderr; the JSON is the run at --threshold. --cache FILE.npz keeps the embeddings between runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from revisit.central.config import DEFAULT_MATCH_THRESHOLD
from revisit.shared.dataset import DatasetError, Record, limit_photos, load_labels

log = logging.getLogger(__name__)
SEED = 0
# a valid 8x8 grey JPEG: observations need a crop; evaluation stores none
_TINY_JPEG: bytes | None = None


def register_eval(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option
    from revisit.shared.cli import add_engine_options

    p = sub.add_parser("cluster", help="recurrence clustering on labelled photos: BCubed precision/recall/F1")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="directory with labels.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--limit", type=int, metavar="N", help="only the photos of the first N identities (see verify)")
    p.add_argument("--threshold", type=float, default=DEFAULT_MATCH_THRESHOLD, help="cosine to join a visitor")
    p.add_argument("--sweep", metavar="T,T,...", help="also run these thresholds (reported on stderr)")
    p.add_argument("--seed", type=int, default=SEED, help="shuffle seed")
    p.add_argument("--cache", type=Path, metavar="FILE.npz", help="reuse/store the embeddings here")
    add_models_option(p)
    add_engine_options(p)
    p.set_defaults(func=run_cluster)


def bcubed(truth: list[str], predicted: list[int]) -> tuple[float, float, float]:
    """(precision, recall, F1) of a clustering against the true labels, BCubed, averaged over items."""
    if not truth:
        return 0.0, 0.0, 0.0
    joint = Counter(zip(predicted, truth, strict=True))
    size_c, size_l = Counter(predicted), Counter(truth)
    p = sum(n * n / size_c[c] for (c, _), n in joint.items()) / len(truth)
    r = sum(n * n / size_l[t] for (_, t), n in joint.items()) / len(truth)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def embed_photos(args: argparse.Namespace, photos: list[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(vectors [N, d] float32, qualities [N], ok mask [N], recognizer id); cached when --cache is given."""
    rel = np.array([p.relpath for p in photos])
    if args.cache and args.cache.is_file():
        data = np.load(args.cache, allow_pickle=False)
        if np.array_equal(data["relpaths"], rel):
            log.info("embeddings from %s", args.cache)
            return data["vectors"], data["qualities"], data["ok"], str(data["recognizer_id"])
        log.info("%s is for other photos: embedding again", args.cache)
    from tqdm import tqdm

    from revisit.shared.cli import engine_config
    from revisit.shared.engine import FaceEngine, central_face
    from revisit.shared.errors import ImageError
    from revisit.shared.image import read_image

    engine = FaceEngine(engine_config(args), args.models)
    dim = engine.embedder.dim
    vectors = np.zeros((len(photos), dim), dtype=np.float32)
    qualities = np.zeros(len(photos), dtype=np.float32)
    ok = np.zeros(len(photos), dtype=bool)
    for i, record in enumerate(tqdm(photos, desc="embed", unit="img", file=sys.stderr, mininterval=2.0)):
        try:
            image = read_image(record.path)
        except ImageError as exc:
            log.warning("unreadable, counted as a split: %s", exc)
            continue
        face = central_face(engine.detect(image), image.shape)
        if face is None:
            continue
        engine.complete(image, [face])
        vectors[i], qualities[i], ok[i] = face.embedding, face.quality.score, True
    if args.cache:
        np.savez(
            args.cache,
            relpaths=rel,
            vectors=vectors,
            qualities=qualities,
            ok=ok,
            recognizer_id=np.array(engine.recognizer_id),
        )
    return vectors, qualities, ok, engine.recognizer_id


def tiny_jpeg() -> bytes:
    global _TINY_JPEG
    if _TINY_JPEG is None:
        import cv2

        _TINY_JPEG = bytes(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1])
    return _TINY_JPEG


def cluster_through_service(
    vectors: np.ndarray, qualities: np.ndarray, order: np.ndarray, recognizer_id: str, threshold: float
) -> tuple[dict[int, uuid.UUID], float]:
    """Feed rows (in `order`) through the central clusterer; (row -> visitor id, seconds per assignment)."""
    from revisit.central.clustering import Assigner, ClusterSettings
    from revisit.central.store import Store
    from revisit.central.vectors import Vectors
    from revisit.shared.schema import Observation, QualityFields

    store = Store("sqlite://")
    store.create_all()
    vectors_db = Vectors.memory()
    clusterer = Assigner(store, vectors_db, None, ClusterSettings(threshold=threshold, visit_gap=timedelta(0)))
    crop = tiny_jpeg()
    visitor: dict[int, uuid.UUID] = {}
    start = time.perf_counter()
    for step, row in enumerate(order.tolist()):
        ts = 1_700_000_000.0 + 3600.0 * step
        q = float(qualities[row])
        obs = Observation(
            observation_id=str(uuid.UUID(int=row + 1)),
            site="eval",
            device="eval",
            camera="eval",
            track_id=row,
            first_ts=ts,
            last_ts=ts,
            best_ts=ts,
            recognizer_id=recognizer_id,
            embedding=Observation.pack_vector(vectors[row]),
            embedding_dim=vectors.shape[1],
            det_score=q,
            quality=QualityFields(detector=q, size=q, sharpness=q, pose=q, score=q),
            box=(0.0, 0.0, 1.0, 1.0),
            crop_jpeg=crop,
            frame_size=(150, 150),
            frames_seen=1,
        )
        visitor[row] = clusterer.ingest(obs, save_crop=False).visitor_id
    per = (time.perf_counter() - start) / max(len(order), 1)
    vectors_db.close()
    store.dispose()
    return visitor, per


def evaluate(
    identities: list[str],
    vectors: np.ndarray,
    qualities: np.ndarray,
    ok: np.ndarray,
    recognizer_id: str,
    threshold: float,
    seed: int = SEED,
) -> dict[str, Any]:
    order = np.random.default_rng(seed).permutation(len(identities))
    order = order[ok[order]]
    visitor, per = cluster_through_service(vectors, qualities, order, recognizer_id, threshold)
    names: dict[uuid.UUID, int] = {}
    predicted = []
    for i in range(len(identities)):
        key = visitor.get(i) or uuid.uuid4()  # no face: a cluster of its own
        predicted.append(names.setdefault(key, len(names)))
    p, r, f = bcubed(identities, predicted)
    return {
        "photos": len(identities),
        "identities": len(set(identities)),
        "clusters": len(names),
        "bcubed_precision": round(p, 5),
        "bcubed_recall": round(r, 5),
        "bcubed_f1": round(f, 5),
        "threshold": threshold,
        "detect_failures": int((~ok).sum()),
        "recognizer_id": recognizer_id,
        "seed": seed,
        "ms_per_assignment": round(per * 1000, 2),
    }


def run_cluster(args: argparse.Namespace) -> int:
    photos = limit_photos(load_labels(args.data), args.limit)
    if not photos:
        raise DatasetError(f"{args.data}: no kind=photo images to cluster")
    identities = [p.identity for p in photos]
    vectors, qualities, ok, recognizer_id = embed_photos(args, photos)
    thresholds = sorted({float(t) for t in args.sweep.split(",")}) if args.sweep else []
    out = sys.stderr if args.json else sys.stdout
    for t in thresholds:
        r = evaluate(identities, vectors, qualities, ok, recognizer_id, t, args.seed)
        print(f"  threshold {t:.3f}: {_line(r)}", file=out, flush=True)
    result = evaluate(identities, vectors, qualities, ok, recognizer_id, args.threshold, args.seed)
    print(
        f"eval cluster: {result['photos']} photos of {result['identities']} identities "
        f"({result['detect_failures']} without a face), threshold {args.threshold}: {_line(result)}",
        file=out,
        flush=True,
    )
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['clusters']} clusters, BCubed precision {r['bcubed_precision']:.4f}, recall {r['bcubed_recall']:.4f}, "
        f"F1 {r['bcubed_f1']:.4f} ({r['ms_per_assignment']:.1f} ms/assignment)"
    )

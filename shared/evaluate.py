"""Evaluation on labelled photos: `revisit eval verify` (1:1 verification) and `revisit eval detect`.

Both read `labels.csv` (see `revisit.shared.dataset`), print a human summary (on stderr with --json) and,
with --json, one JSON object as the last line of stdout.

verify
    Every kind=photo image is decoded, its faces detected, and the face nearest the image centre aligned
    and embedded. A photo with no face, or one that cannot be read (the reason is logged), is a
    detection failure. The pair list is built from the labels alone, before any detection, so it is
    the same for every system and every detector: all same-identity pairs of photos, plus as many
    distinct different-identity unordered pairs drawn with numpy's default_rng(0). A pair with a
    failed photo scores -inf for that system: a miss at every threshold for a same-identity pair, a
    correct rejection for a different-identity one (see `revisit.shared.metrics`). Our score is the
    cosine similarity; the peer's (`--peer face_recognition`) is minus the Euclidean distance of its
    encodings. TAR@FAR: the threshold is the smallest score t such that the fraction of
    different-identity pairs with score >= t is <= FAR; TAR is the fraction of same-identity pairs with
    score >= t. ms_per_photo is the total wall time of decode + detect + align + embed (for the peer:
    the same decode, then its detect + encode) divided by the number of photos; ms_per_photo_p50 is
    the median per photo. One warm-up photo runs untimed first.

detect
    kind=photo images (one labelled person each) and kind=group images (the `;`-separated identities
    are the labelled people): faces found against people labelled. Timing is decode + detect.

--limit N keeps the photos of the first N identities (sorted by name) with at least two photos, plus
the photos of the first N identities that have exactly one photo; `eval detect` keeps every group.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from revisit.shared.dataset import DatasetError, Record, limit_photos, load_labels
from revisit.shared.metrics import auc, best_accuracy, roc, tar_at_far
from revisit.shared.peer import PEERS

log = logging.getLogger(__name__)
SEED = 0
FARS = (("1e-3", 1e-3), ("1e-2", 1e-2))


def register_eval(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option
    from revisit.shared.cli import add_engine_options

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", type=Path, required=True, metavar="DIR", help="directory with labels.csv")
        p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        p.add_argument(
            "--limit",
            type=_positive_int,
            metavar="N",
            help="quick run: the photos of the first "
            "N identities with 2+ photos and of the first N with one photo (sorted by name)",
        )
        add_models_option(p)
        add_engine_options(p)

    p = sub.add_parser("verify", help="1:1 verification on labelled photos: TAR@FAR, AUC, speed")
    common(p)
    p.add_argument("--peer", choices=PEERS, help="also evaluate this library on the same photos and pairs")
    p.add_argument(
        "--degrade",
        choices=["none", "cctv", "hard"],
        default="none",
        help="degrade every photo like CCTV (revisit.shared.degrade); TAR is also reported by face size",
    )
    p.add_argument("--seed", type=int, default=SEED, help="seed of the degradations")
    p.set_defaults(func=run_verify)
    p = sub.add_parser("detect", help="detection rate on labelled photos and group photos")
    common(p)
    p.set_defaults(func=run_detect)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def make_pairs(identities: list[str], seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(same, different): index pairs (i < j) into `identities`, each an [n, 2] int array.

    same: every pair with equal identities. different: min(len(same), number possible) distinct pairs
    with different identities, drawn uniformly with default_rng(seed), in draw order.
    """
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(identities):
        by_name[name].append(i)
    same = [pair for idx in by_name.values() for pair in combinations(idx, 2)]
    n = len(identities)
    target = min(len(same), n * (n - 1) // 2 - len(same))
    codes = np.unique(np.array(identities, dtype=str), return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(seed)
    chosen: dict[tuple[int, int], None] = {}  # an insertion-ordered set
    while len(chosen) < target:
        draws = rng.integers(0, n, size=(max(1024, 2 * (target - len(chosen))), 2))
        for a, b in draws[codes[draws[:, 0]] != codes[draws[:, 1]]].tolist():
            chosen[(a, b) if a < b else (b, a)] = None
            if len(chosen) == target:
                break
    return np.array(same, dtype=np.int64).reshape(-1, 2), np.array(list(chosen), dtype=np.int64).reshape(-1, 2)


def pair_scores(
    vectors: list[np.ndarray | None], pairs: np.ndarray, score: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """score(rows a, rows b) for each pair; -inf where either photo has no vector."""
    ok = np.array([v is not None for v in vectors], dtype=bool)
    dim = next((v.shape[0] for v in vectors if v is not None), 1)
    matrix = np.stack([v if v is not None else np.zeros(dim) for v in vectors]).astype(np.float64)
    out = np.full(len(pairs), -np.inf)
    if len(pairs):
        valid = ok[pairs[:, 0]] & ok[pairs[:, 1]]
        out[valid] = score(matrix[pairs[valid, 0]], matrix[pairs[valid, 1]])
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)  # embeddings are L2-normalised


def neg_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return -np.linalg.norm(a - b, axis=1)


def verification_metrics(genuine: np.ndarray, impostor: np.ndarray, prefix: str = "") -> dict[str, float]:
    curve = roc(genuine, impostor)
    out = {f"{prefix}tar_at_far_{label}": round(tar_at_far(curve, far)[0], 5) for label, far in FARS}
    acc, threshold = best_accuracy(curve)
    out |= {
        f"{prefix}auc": round(auc(curve), 5),
        f"{prefix}best_accuracy": round(acc, 5),
        # null when no finite threshold beats rejecting every pair
        f"{prefix}best_threshold": round(threshold, 5) if math.isfinite(threshold) else None,
    }
    return out


def _timing(times: list[float], prefix: str, unit: str) -> dict[str, float]:
    ms = np.asarray(times) * 1000.0
    return {
        f"{prefix}ms_per_{unit}": round(float(ms.sum() / max(len(ms), 1)), 2),
        f"{prefix}ms_per_{unit}_p50": round(float(np.median(ms)) if len(ms) else 0.0, 2),
    }


def _progress(items: list[Record], desc: str) -> Iterable[Record]:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", file=sys.stderr, mininterval=1.0, dynamic_ncols=True)


def _read(record: Record, quiet: bool = False) -> tuple[np.ndarray | None, float]:
    """(BGR image or None when unreadable (the reason is logged unless `quiet`), decode seconds)."""
    from revisit.shared.errors import ImageError
    from revisit.shared.image import read_image

    start = time.perf_counter()
    try:
        image = read_image(record.path)
    except ImageError as exc:
        if not quiet:
            log.warning("unreadable, counted as a failure: %s", exc)
        image = None
    return image, time.perf_counter() - start


def _engine(args: argparse.Namespace):
    from revisit.shared.cli import engine_config
    from revisit.shared.engine import FaceEngine

    return FaceEngine(engine_config(args), args.models)


def _warm_up(records: list[Record], *runs: Callable[[np.ndarray], Any]) -> None:
    for record in records[:5]:
        image, _ = _read(record, quiet=True)
        if image is not None:
            for run in runs:
                run(image)
            return


def _emit(args: argparse.Namespace, summary: list[str], result: dict[str, Any]) -> int:
    print("\n".join(summary), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        sys.stdout.flush()
        print(json.dumps(result, allow_nan=False), flush=True)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from revisit.shared.engine import central_face
    from revisit.shared.peer import create_peer

    photos = limit_photos(load_labels(args.data), args.limit)
    same, different = make_pairs([p.identity for p in photos])
    if not len(same) or not len(different):
        raise DatasetError(
            f"{args.data}: need at least one same-identity and one different-identity pair of "
            f"photos; found {len(photos)} photos giving {len(same)} and {len(different)}"
        )
    engine = _engine(args)
    peer = create_peer(args.peer) if args.peer else None

    degrade_level = getattr(args, "degrade", "none")
    face_px: list[float] = []  # the degraded face width of each photo (nan: clean or unreadable)

    def ours(image: np.ndarray, record: Record | None = None) -> np.ndarray | None:
        face = central_face(engine.detect(image), image.shape)
        if degrade_level != "none" and record is not None:
            from revisit.shared.degrade import degrade, nearest_face, rng_for

            if face is None:
                return None
            v = degrade(image, face.box, degrade_level, rng_for(args.seed, record.relpath, degrade_level, 0))
            face_px[-1] = v.face_px
            image, face = v.frame, nearest_face(engine.detect(v.frame), v.face_box)
        return None if face is None else engine.complete(image, [face])[0].embedding

    _warm_up(photos, ours, *([peer.encode] if peer else []))
    vectors: list[np.ndarray | None] = []
    peer_vectors: list[np.ndarray | None] = []
    times: list[float] = []
    peer_times: list[float] = []
    unreadable = 0
    with logging_redirect_tqdm():
        for record in _progress(photos, "verify"):
            image, decode = _read(record)
            unreadable += image is None
            start = time.perf_counter()
            face_px.append(float("nan"))
            vectors.append(None if image is None else ours(image, record))
            times.append(decode + time.perf_counter() - start)
            if peer:
                start = time.perf_counter()
                peer_vectors.append(None if image is None else peer.encode(image))
                peer_times.append(decode + time.perf_counter() - start)

    result: dict[str, Any] = {
        "photos": len(photos),
        "unreadable": unreadable,
        "detect_failures": sum(v is None for v in vectors),
        "pairs": len(same) + len(different),
        "same_pairs": len(same),
        "different_pairs": len(different),
    }
    genuine, impostor = pair_scores(vectors, same, cosine), pair_scores(vectors, different, cosine)
    result |= verification_metrics(genuine, impostor)
    result |= _timing(times, "", "photo")
    if degrade_level != "none":
        result["degrade"] = degrade_level
        result["tar_by_face_px"] = tar_by_face_size(genuine, impostor, np.array(face_px), same)
    detector, recognizer, backend = engine.config.detector.model, engine.recognizer_id, engine.config.backend.type
    result |= {"detector": detector, "recognizer_id": recognizer, "backend": backend}
    lines = [
        f"eval verify: {len(photos)} photos ({unreadable} unreadable), {len(same)} same-identity + "
        f"{len(different)} different-identity pairs",
        _verify_line(f"revisit ({detector} + {recognizer}, {backend})", result, ""),
    ]
    if degrade_level != "none":
        by_size = ", ".join(f"{k} px {v['tar']:.3f} ({v['pairs']})" for k, v in result["tar_by_face_px"].items())
        lines.append(f"  degraded like {degrade_level}: TAR@FAR=1e-3 by face width (pairs): {by_size}")
    if peer:
        result["peer"] = peer.name
        result["peer_detect_failures"] = sum(v is None for v in peer_vectors)
        result |= verification_metrics(
            pair_scores(peer_vectors, same, neg_euclidean),
            pair_scores(peer_vectors, different, neg_euclidean),
            "peer_",
        )
        result |= _timing(peer_times, "peer_", "photo")
        lines.append(_verify_line(f"{peer.name} (HOG + dlib ResNet)", result, "peer_"))
    return _emit(args, lines, result)


FACE_BINS = ((20, 24), (24, 32), (32, 40), (40, 48), (48, 56), (56, 65))


def tar_by_face_size(
    genuine: np.ndarray, impostor: np.ndarray, face_px: np.ndarray, same: np.ndarray, far: float = 1e-3
) -> dict[str, dict[str, float]]:
    """TAR of the same-identity pairs grouped by the smaller face width of the pair, at the one threshold that
    gives `far` over all different-identity pairs."""
    threshold = tar_at_far(roc(genuine, impostor), far)[1]
    smaller = np.fmin(face_px[same[:, 0]], face_px[same[:, 1]]) if len(same) else np.zeros(0)
    out = {}
    for lo, hi in FACE_BINS:
        pick = (smaller >= lo) & (smaller < hi)
        if pick.any():
            out[f"{lo}-{hi - 1}"] = {
                "pairs": int(pick.sum()),
                "tar": round(float(np.mean(genuine[pick] >= threshold)), 4),
            }
    return out


def _verify_line(name: str, r: dict[str, Any], p: str) -> str:
    return (
        f"  {name}: TAR@FAR=1e-3 {r[p + 'tar_at_far_1e-3']:.4f}, TAR@FAR=1e-2 {r[p + 'tar_at_far_1e-2']:.4f}, "
        f"AUC {r[p + 'auc']:.4f}, best accuracy {r[p + 'best_accuracy']:.4f} at {r[p + 'best_threshold']}; "
        f"{r[p + 'detect_failures']} detection failures; {r[p + 'ms_per_photo']:.1f} ms/photo "
        f"(p50 {r[p + 'ms_per_photo_p50']:.1f})"
    )


def run_detect(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    records = load_labels(args.data)
    photos = limit_photos(records, args.limit)
    groups = sorted((r for r in records if r.kind == "group"), key=lambda r: r.relpath)
    if not photos and not groups:
        raise DatasetError(f"{args.data}: no photo or group images to evaluate")
    engine = _engine(args)
    _warm_up(photos or groups, engine.detect)
    found: list[int] = []
    times: list[float] = []
    unreadable = 0
    with logging_redirect_tqdm():
        for record in _progress(photos + groups, "detect"):
            image, decode = _read(record)
            unreadable += image is None
            start = time.perf_counter()
            found.append(0 if image is None else len(engine.detect(image)))
            times.append(decode + time.perf_counter() - start)

    photo_found = sum(n >= 1 for n in found[: len(photos)])
    people = [len(g.identities) for g in groups]
    group_found = found[len(photos) :]
    recalled = sum(min(f, n) for f, n in zip(group_found, people, strict=True))
    result: dict[str, Any] = {
        "photos": len(photos),
        "unreadable": unreadable,
        "photo_found_one_or_more": photo_found,
        "photo_detect_rate": round(photo_found / len(photos), 5) if photos else None,
        "groups": len(groups),
        "group_people": sum(people),
        "group_faces_found": sum(group_found),
        "group_recall_estimate": round(recalled / sum(people), 5) if sum(people) else None,
    }
    result |= _timing(times, "", "image")
    result |= {"detector": engine.config.detector.model, "backend": engine.config.backend.type}
    lines = [
        f"eval detect ({result['detector']}, {result['backend']}): {len(photos) + len(groups)} images, "
        f"{unreadable} unreadable; {result['ms_per_image']:.1f} ms/image (p50 {result['ms_per_image_p50']:.1f})",
        f"  photos: a face found in {photo_found} of {len(photos)} ({result['photo_detect_rate']})",
        f"  groups: {len(groups)} images, {sum(group_found)} faces found for {sum(people)} labelled people "
        f"(recall estimate {result['group_recall_estimate']})",
    ]
    return _emit(args, lines, result)

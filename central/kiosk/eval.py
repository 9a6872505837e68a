"""`revisit eval search`: the event kiosk's selfie search on labelled photos, through the kiosk's own code.

One event is built from every photo of DIR (kind photo and group) the way the service builds one: each file
goes through `Events.add_photo` (validation, originals, thumbnails) and the `FaceWorker` (every face detected,
assessed and embedded into the event's collection), on a temporary SQLite database and an in-memory vector index.

Queries: each identity that appears in at least one group photo and has at least two single photos. Its first
single photo (in path order) is the selfie and is left out of the event; the expected result is every other
photo labelled with that identity (its other single photos and the group photos naming it). Each selfie goes
through `FaceSearch.search` (decode, detect, pick, check, embed, search), timed from the bytes to the ranked
photos. A selfie refused with guidance counts as a search that found nothing.

Metrics, micro-averaged over queries: precision = correct photos returned / photos returned, recall = correct
photos returned / expected photos. A portrait's label names only its centred face, so a portrait returned because
of another face in it (a guest in the background) counts as wrong although it may be right; `precision_labelled`
leaves those matches out (`unlabelled_matches` counts them) and is reported beside, never instead.

Several selfies (`FaceSearch.search_many`): for each queried identity with more single photos, its first selfie
plus its next one or two single photos (in path order; they are event photos) are searched together, each way of
merging (`max`: best similarity per photo, `mean`: the mean embedding). Those extra selfies are left out of both
the expected and the returned photos (a photo always finds itself). `recall_multi` / `precision_multi` are of
the kiosk's merge (`search.MULTI_MERGE`); `multi` has both merges and `single`, the first selfie alone scored the
same way, so the gain is read on the same photos.

With --json the last line of stdout is one JSON object with `queries, precision, recall, p50_ms, p95_ms,
recall_multi, precision_multi` and details (threshold on the (cos+1)/2 scale, photos, faces, ...).
--sweep T,T,... also reports other thresholds on stderr (from one extra, untimed search per query).
--distractors N keeps only the first N photos of identities that are not queried (a small, quick subset).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from revisit.central.kiosk.search import DEFAULT_THRESHOLD, MAX_SELFIES, MERGES, MULTI_MERGE
from revisit.shared.dataset import DatasetError, Record, load_labels

log = logging.getLogger(__name__)


def register_eval(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option
    from revisit.shared.cli import add_engine_options

    p = sub.add_parser("search", help="event kiosk: selfie search over one event of labelled photos")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="directory with labels.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="match threshold, (cos+1)/2 scale")
    p.add_argument("--sweep", metavar="T,T,...", help="also report these thresholds (on stderr)")
    p.add_argument("--distractors", type=int, metavar="N", help="keep only N photos of identities not queried")
    add_models_option(p)
    add_engine_options(p)
    p.set_defaults(func=run_search)


def plan(records: list[Record], distractors: int | None = None) -> tuple[list[Record], dict[str, Record]]:
    """(the event's photos, {identity: its selfie}) as the module docstring describes."""
    photos = [r for r in records if r.kind in ("photo", "group")]
    singles: dict[str, list[Record]] = {}
    for r in photos:
        if r.kind == "photo":
            singles.setdefault(r.identity, []).append(r)
    in_groups = {name for r in photos if r.kind == "group" for name in r.identities}
    selfies = {
        name: sorted(singles[name], key=lambda r: r.relpath)[0]
        for name in sorted(in_groups)
        if len(singles.get(name, [])) >= 2
    }
    chosen = {r.relpath for r in selfies.values()}
    event = [r for r in photos if r.relpath not in chosen]
    if distractors is not None:
        queried = set(selfies)
        others = sorted((r for r in event if not queried & set(r.identities)), key=lambda r: r.relpath)
        keep = {r.relpath for r in others[:distractors]}
        event = [r for r in event if queried & set(r.identities) or r.relpath in keep]
    return event, selfies


def central_faces(events: Any, event_id: uuid.UUID) -> dict[uuid.UUID, uuid.UUID]:
    """photo id -> the id of its face nearest the image centre (the face a portrait's label names)."""
    from sqlmodel import select

    from revisit.central.kiosk.models import Photo, PhotoFace

    out: dict[uuid.UUID, tuple[float, uuid.UUID]] = {}
    with events.store.session() as s:
        rows = s.exec(
            select(PhotoFace.id, PhotoFace.photo_id, PhotoFace.box, Photo.width, Photo.height)
            .join(Photo, Photo.id == PhotoFace.photo_id)
            .where(Photo.event_id == event_id)
        )
        for face_id, photo_id, box, width, height in rows:
            d = ((box[0] + box[2]) / 2 - width / 2) ** 2 + ((box[1] + box[3]) / 2 - height / 2) ** 2
            if photo_id not in out or d < out[photo_id][0]:
                out[photo_id] = (d, face_id)
    return {pid: fid for pid, (_, fid) in out.items()}


def score(expected: dict[str, set[str]], found: dict[str, dict[str, float]], threshold: float) -> dict[str, float]:
    """Micro precision and recall of the results with similarity >= threshold."""
    tp = fp = fn = 0
    for name, want in expected.items():
        got = {p for p, sim in found.get(name, {}).items() if sim >= threshold}
        tp += len(got & want)
        fp += len(got - want)
        fn += len(want - got)
    return {
        "precision": round(tp / (tp + fp), 5) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 5) if tp + fn else 1.0,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from revisit.central.kiosk.events import Events
    from revisit.central.kiosk.photos import PhotoFiles
    from revisit.central.kiosk.search import FaceSearch, SelfieRejected
    from revisit.central.kiosk.vectors import EventVectors
    from revisit.central.kiosk.worker import FaceWorker
    from revisit.central.store import Store
    from revisit.shared.cli import engine_config
    from revisit.shared.engine import FaceEngine

    records = load_labels(args.data)
    event_records, selfies = plan(records, args.distractors)
    if not selfies:
        raise DatasetError(f"{args.data}: no identity is in a group photo and has two single photos")
    engine = FaceEngine(engine_config(args), args.models)
    thresholds = sorted({float(t) for t in args.sweep.split(",")}) if args.sweep else []
    with tempfile.TemporaryDirectory(prefix="revisit-eval-search-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'kiosk.db'}")
        store.create_all()
        vectors = EventVectors.memory()
        events = Events(store, PhotoFiles(Path(tmp) / "photos"), vectors)
        worker = FaceWorker(events, engine).start()
        event = events.create_event("eval search")
        by_photo: dict[uuid.UUID, Record] = {}
        t0 = time.perf_counter()
        for r in event_records:
            added = events.add_photo(event.id, r.relpath, r.path.read_bytes())
            if added.photo is None:
                log.warning("%s refused: %s", r.relpath, added.error)
                continue
            by_photo[added.photo.id] = r
            worker.submit(event.id, added.photo.id)
        worker.wait_idle()
        worker.stop()
        build_s = time.perf_counter() - t0
        status = events.photo_status(event.id)
        expected = {name: {str(pid) for pid, r in by_photo.items() if name in r.identities} for name in selfies}
        search = FaceSearch(events, engine, threshold=args.threshold)
        warm = next(iter(selfies.values())).path.read_bytes()
        with contextlib.suppress(SelfieRejected):  # the first run of each model is slow: not counted
            search.search(event.id, warm)
        found: dict[str, dict[str, float]] = {}
        unlabelled: dict[str, set[str]] = {}  # portraits matched by a face other than the labelled (central) one
        central = central_faces(events, event.id)
        swept: dict[str, dict[str, float]] = {}
        times: list[float] = []
        rejected: dict[str, str] = {}
        for name, selfie in selfies.items():
            data = selfie.path.read_bytes()
            start = time.perf_counter()
            try:
                result = search.search(event.id, data, args.threshold)
            except SelfieRejected as exc:
                times.append(time.perf_counter() - start)
                rejected[name] = exc.reason
                continue
            times.append(time.perf_counter() - start)
            found[name] = {str(m.photo.id): m.similarity for m in result.matches}
            unlabelled[name] = {
                str(m.photo.id)
                for m in result.matches
                if by_photo[m.photo.id].kind == "photo" and central.get(m.photo.id) != m.face_id
            }
            if thresholds:
                face = result.selfie.face
                low = min(thresholds)
                swept[name] = {
                    str(m.photo.id): m.similarity
                    for m in search.match(event.id, face.embedding, face.recognizer_id or "", low, 10_000)
                }
            want = expected[name]
            got = set(found[name])
            log.info("%s: %d expected, %d found, %d correct", name, len(want), len(got), len(got & want))
            for pid in sorted(got - want):
                log.info("  wrong: %s (similarity %.4f)", by_photo[uuid.UUID(pid)].relpath, found[name][pid])
            for pid in sorted(want - got):
                best = swept.get(name, {}).get(pid)
                log.info(
                    "  missed: %s (similarity %s)",
                    by_photo[uuid.UUID(pid)].relpath,
                    f"{best:.4f}" if best is not None else "below the sweep",
                )
        multi = evaluate_multi(search, event.id, event_records, selfies, by_photo, expected, found, args.threshold)
        vectors.close()
        store.dispose()
    for t in thresholds:
        s = score(expected, swept, t)
        print(
            f"  threshold {t:.3f} (cosine {2 * t - 1:+.3f}): precision {s['precision']:.4f} recall "
            f"{s['recall']:.4f} (tp {s['true_positives']}, fp {s['false_positives']}, fn {s['false_negatives']})",
            file=sys.stderr,
            flush=True,
        )
    ms = np.array(times) * 1000
    return {
        "queries": len(selfies),
        **score(expected, found, args.threshold),
        "precision_labelled": score(
            expected,
            {n: {p: v for p, v in f.items() if p not in unlabelled.get(n, set())} for n, f in found.items()},
            args.threshold,
        )["precision"],
        "unlabelled_matches": sum(len(u - expected[n]) for n, u in unlabelled.items()),
        "recall_multi": multi[MULTI_MERGE]["recall"],
        "precision_multi": multi[MULTI_MERGE]["precision"],
        "multi_merge": MULTI_MERGE,
        "multi": multi,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "threshold": args.threshold,
        "cosine_threshold": round(2 * args.threshold - 1, 4),
        "expected_photos": sum(len(v) for v in expected.values()),
        "event_photos": status["total"],
        "event_faces": status["faces"],
        "failed_photos": status["failed"],
        "rejected_selfies": rejected,
        "build_s": round(build_s, 1),
        "recognizer_id": engine.recognizer_id,
    }


def evaluate_multi(
    search: Any,
    event_id: uuid.UUID,
    event_records: list[Record],
    selfies: dict[str, Record],
    by_photo: dict[uuid.UUID, Record],
    expected: dict[str, set[str]],
    found: dict[str, dict[str, float]],
    threshold: float,
) -> dict[str, Any]:
    """Scores of 2-3 selfies per identity merged each way, and of the first selfie alone on the same photos."""
    from revisit.central.kiosk.search import SelfieRejected

    ids = {r.relpath: pid for pid, r in by_photo.items()}
    want: dict[str, set[str]] = {}
    got: dict[str, dict[str, dict[str, float]]] = {m: {} for m in (*MERGES, "single")}
    times: list[float] = []
    for name, selfie in selfies.items():
        extra = sorted(
            (r for r in event_records if r.kind == "photo" and r.identity == name and r.relpath in ids),
            key=lambda r: r.relpath,
        )[: MAX_SELFIES - 1]
        if not extra:
            continue
        used = {str(ids[r.relpath]) for r in extra}
        want[name] = expected[name] - used
        images = [selfie.path.read_bytes(), *(r.path.read_bytes() for r in extra)]
        got["single"][name] = {p: v for p, v in found.get(name, {}).items() if p not in used}
        for merge in MERGES:
            start = time.perf_counter()
            try:
                result = search.search_many(event_id, images, threshold, merge=merge)
            except SelfieRejected:
                got[merge][name] = {}
                continue
            finally:
                times.append(time.perf_counter() - start)
            got[merge][name] = {str(m.photo.id): m.similarity for m in result.matches if str(m.photo.id) not in used}
    out: dict[str, Any] = {"queries": len(want), "expected_photos": sum(len(v) for v in want.values())}
    for merge, results in got.items():
        out[merge] = score(want, results, threshold)
    out["p50_ms"] = round(float(np.percentile(np.array(times) * 1000, 50)), 1) if times else 0.0
    return out


def run_search(args: argparse.Namespace) -> int:
    result = evaluate(args)
    out = sys.stderr if args.json else sys.stdout
    print(
        f"eval search: {result['queries']} queries over {result['event_photos']} photos "
        f"({result['event_faces']} faces), threshold {result['threshold']} (cosine {result['cosine_threshold']}): "
        f"precision {result['precision']:.4f}, recall {result['recall']:.4f}, "
        f"p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms",
        file=out,
        flush=True,
    )
    m = result["multi"]
    for merge in ("single", *MERGES):
        print(
            f"  {m['queries']} queries with 2-3 selfies, {merge}: precision {m[merge]['precision']:.4f}, "
            f"recall {m[merge]['recall']:.4f}",
            file=out,
            flush=True,
        )
    if args.json:
        print(json.dumps(result), flush=True)
    return 0

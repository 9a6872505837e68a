"""The `embedded` engine: usearch HNSW indexes in this process, files under one directory, a journal.

Why usearch (README "Central benchmark" and deploy/SCALING.md have the figures): its index is incremental
(an observation's prototype update is one add, ~1-2 ms at 1M, plus a batched removal: see `_Protos`; no rebuild
step), stores f16 (1 KB per 512-d vector), restores a saved 1M index in ~3 s, and releases the GIL while it
searches or adds, so the web and ingest threads keep running. Qdrant Edge was measured too: its HNSW build
(`optimize()`) holds the GIL for minutes and brute force at 1M takes ~74 ms, over the 50 ms budget of one
assignment.

What it keeps, per recognizer (never compared across recognizers):
- prototypes: one HNSW index per site (usearch has no payload filter; a site-scoped search asks one index,
  an all-sites search asks each and merges). Key = the low 64 bits of the visitor id; the high bits and the
  site are kept beside it, and a collision of the low bits is refused rather than overwriting.
- sightings: their ids only. Nothing searches sighting vectors and the database holds every embedding, so
  this engine does not keep a second copy of them; the ids let the service check the index against the
  database at start (`CentralService.repair_index`).
- event faces: one exact (brute force, f32) matrix per (event, recognizer): 100k faces answer in ~10 ms and
  the kiosk wants every face above a threshold, which an approximate index could miss.

Durability: every change is appended to `journal.bin` (length + CRC framed msgpack records, written through
to the OS before the call returns, so a killed process loses nothing it wrote) and applied in memory. A
checkpoint saves the changed collections (temporary file + rename), then the manifest, then empties the
journal; it runs when the journal passes `journal_limit` bytes and at `close()`. Opening loads the files and
replays the journal; a torn last record (power loss) is dropped and logged, and the service then re-upserts
the last minutes from the database (`repair_index`), the source of truth. Replayed prototype upserts do not
go into the graphs at open (a full journal is ~60k of them: minutes at 1M); they wait in an exact matrix that
searches also compare, and a background thread merges them into the graphs in steps (`_Protos.waiting`).
Bulk loads (`bulk()`, used by a full reindex) skip the journal and mark the manifest: if they are interrupted,
the next open starts empty and the service rebuilds from the database.

Locks: `lock` guards the visitors' collections, the journal and checkpoints; `faces_lock` the event matrices, so
a kiosk search (`search_faces`) and ingest never wait for each other (`revisit.central.kiosk.vectors`).

Approximate search: HNSW with connectivity 32, expansion 128 at build and `EXPANSION_SEARCH` at query; when
the best found is below the caller's `floor` (the assignment threshold: the observation would start a new
visitor) it searches again with `EXPANSION_RETRY`, because a missed returning visitor becomes a duplicate.
A first look of 128 (was 256) changed no nearest and no decision at 100k `calibrated` (bench/hnsw_exact.py) and no
`revisit eval cluster` figure, for ~30% less search CPU.
bench/central.py measures `exact_top1` against brute force (README "Central benchmark").
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from usearch.index import Index

from revisit.central.vectors import SightingPoint, Vectors, VectorStoreError, collection_base, event_prefix

log = logging.getLogger(__name__)
FORMAT = 1
CONNECTIVITY = 32
EXPANSION_ADD = 128
DTYPE = "f16"  # the graph's scalar kind (bench/hnsw_exact.py --dtype compares others)
EXPANSION_SEARCH = 128
EXPANSION_RETRY = 1024  # a search whose best is below the caller's floor looks again, wider
JOURNAL_LIMIT = 64 << 20
MERGE_STEP = 16  # waiting prototypes moved into a graph per step of the background merge (~50 ms at 1M)
REPAIR_STEP = 256  # graph entries checked per step of `repair_graphs` (~0.25 s at 1M, the lock held)
STALE_LIMIT = 64  # replaced prototypes kept in a graph (skipped by searches) before one removal pass
LOW = (1 << 64) - 1
FRAME = struct.Struct("<II")  # length, crc32 of the msgpack record


def _unit16(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms > 0, norms, 1)).astype(np.float16)


class _Protos:
    """One recognizer's prototypes: an HNSW index per site.

    A visitor is known by the low 64 bits of its id (`where`: those -> high bits, part, index key). Its vector
    sits in the graph under an index key of its own (`owner`: index key -> visitor), a fresh one each time the
    prototype changes: the old entry is only marked stale (left out of results) and removed with the part's
    other stale entries once STALE_LIMIT of them gather or at a save. usearch makes the first call after any
    removal pay a pass over the whole graph (~35 ms at 1M, measured), so a remove per update would cost that
    on every returning visitor; batched, it is one pass per STALE_LIMIT updates. Files written before this
    (`keys.npy` with 3 columns) used the visitor key as index key; they load as such.

    Waiting entries (`waiting`: visitor key -> part, vector) are in no graph yet: a journal replayed at open puts
    its upserts there (a 1M graph adds ~300 a second per core: replaying them into it would hold the service for
    minutes), searches compare them exactly, and `merge` moves them into the graphs in steps (a background
    thread of EmbeddedVectors). A save keeps those still waiting in `waiting.npz`."""

    def __init__(self, dim: int):
        self.dim = dim
        self.sites: list[str] = []  # part number -> site
        self.parts: list[Index] = []
        self.part_of: dict[str, int] = {}
        self.where: dict[int, tuple[int, int, int]] = {}  # visitor key -> (high 64 bits, part, index key)
        self.owner: dict[int, int] = {}  # index key -> visitor key (live entries only)
        self.stale: list[set[int]] = []  # per part: index keys of replaced or deleted entries, not yet removed
        self.next_key = 1  # fresh index keys: below 2**62, so never a visitor key (uuid4 low bits are >= 2**63)
        self.waiting: dict[int, tuple[int, np.ndarray]] = {}  # visitor key -> (part, f16 vector): not in a graph
        self._waiting_view: dict[int, tuple[list[int], np.ndarray]] | None = None  # part -> (keys, f32 matrix)

    def _new_index(self) -> Index:
        return Index(
            ndim=self.dim,
            metric="cos",
            dtype=DTYPE,
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )

    def _part(self, site: str) -> int:
        n = self.part_of.get(site)
        if n is None:
            n = self.part_of[site] = len(self.parts)
            self.sites.append(site)
            self.parts.append(self._new_index())
            self.stale.append(set())
        return n

    def _retire(self, key: int) -> None:
        """Mark the entry of visitor `key` stale (it stays in the graph until the part's next removal)."""
        _, part, ikey = self.where.pop(key)
        if self.waiting.pop(key, None) is not None:
            self._waiting_view = None
            return
        del self.owner[ikey]
        self.stale[part].add(ikey)

    def _remove_stale(self, part: int, at_least: int = 1) -> None:
        if len(self.stale[part]) >= at_least:
            self.parts[part].remove(np.fromiter(self.stale[part], dtype=np.uint64))
            self.stale[part].clear()

    def upsert(self, items: list[tuple[int, str, np.ndarray]], threads: int = 1, wait: bool = False) -> None:
        """(visitor id as int, site, f16 unit vector); the last entry of an id wins. `wait`: into `waiting`."""
        latest = {vid: (site, vec) for vid, site, vec in items}
        placed: list[tuple[int, int, np.ndarray]] = []
        for vid, (site, vec) in latest.items():
            key, high = vid & LOW, vid >> 64
            old = self.where.get(key)
            if old is not None:
                if old[0] != high:
                    raise VectorStoreError(f"visitor id {uuid.UUID(int=vid)} collides with another in the index")
                self._retire(key)
            part = self._part(site)
            self.where[key] = (high, part, 0)
            placed.append((key, part, vec))
        if wait:
            self.waiting.update((key, (part, vec)) for key, part, vec in placed)
            self._waiting_view = None
        else:
            self._add(placed, threads)
        for part in range(len(self.parts)):
            self._remove_stale(part, STALE_LIMIT)

    def _add(self, placed: list[tuple[int, int, np.ndarray]], threads: int) -> None:
        """Put (visitor key, part, vector) entries into their graphs, each under a fresh index key."""
        grouped: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        for key, part, vec in placed:
            ikey, self.next_key = self.next_key, self.next_key + 1
            self.where[key] = (self.where[key][0], part, ikey)
            self.owner[ikey] = key
            keys, vecs = grouped.setdefault(part, ([], []))
            keys.append(ikey)
            vecs.append(vec)
        for part, (keys, vecs) in grouped.items():
            self.parts[part].add(np.asarray(keys, dtype=np.uint64), np.stack(vecs), threads=threads)

    def unreachable(self, part: int, ikeys: np.ndarray, threads: int = 0) -> list[int]:
        """Those of these graph entries (index keys of part `part`) that a search for their own vector misses."""
        index = self.parts[part]
        index.expansion_search = EXPANSION_SEARCH
        m = index.search(_stored(index, ikeys), 1, threads=threads)
        keys, dists = np.atleast_2d(m.keys)[:, 0], np.atleast_2d(m.distances)[:, 0]
        return [
            int(k) for k, f, d in zip(ikeys.tolist(), keys.tolist(), dists.tolist(), strict=True) if k != f and d > 1e-6
        ]

    def repair(self, part: int, ikeys: list[int], threads: int = 0) -> int:
        """Put the unreachable among these entries into the graph again, under fresh keys (new links); how many.
        HNSW leaves a few nodes without incoming links (measured: 2-8 in 20k after a multi-threaded bulk load,
        ~1 in 20k after online updates); the search can never return those, whatever its width."""
        live = np.asarray([k for k in ikeys if k in self.owner and self.where[self.owner[k]][1] == part], np.uint64)
        if not len(live):
            return 0
        lost = self.unreachable(part, live, threads)
        if lost:
            placed = []
            for ikey, vec in zip(lost, _stored(self.parts[part], np.asarray(lost, dtype=np.uint64)), strict=True):
                key = self.owner.pop(ikey)
                self.stale[part].add(ikey)
                placed.append((key, part, vec))
            self._add(placed, threads)
            self._remove_stale(part, STALE_LIMIT)
        return len(lost)

    def merge(self, limit: int, threads: int = 0) -> int:
        """Move up to `limit` waiting entries into their graphs; the number still waiting."""
        if not self.waiting:
            return 0
        keys = list(itertools.islice(self.waiting, limit))
        self._add([(key, *self.waiting.pop(key)) for key in keys], threads)
        self._waiting_view = None
        return len(self.waiting)

    def delete(self, ids: Iterable[int]) -> None:
        for vid in ids:
            key = vid & LOW
            old = self.where.get(key)
            if old is not None and old[0] == vid >> 64:
                self._retire(key)
        for part in range(len(self.parts)):
            self._remove_stale(part, STALE_LIMIT)

    def search(
        self, vectors: np.ndarray, limit: int, sites: list[str | None], floor: float | None = None
    ) -> list[list[tuple[uuid.UUID, float]]]:
        """The nearest prototypes of each row of `vectors` (f16 unit vectors), within its site (None: all).
        Several rows are searched together on every core; each row's result is that of a search of its own."""
        found = self._search(vectors, limit, sites, EXPANSION_SEARCH)
        if floor is not None:  # "a new person": make sure, with a wider search
            again = [row for row, hits in enumerate(found) if not hits or hits[0][1] < floor]
            if again:
                wider = self._search(vectors[again], limit, [sites[row] for row in again], EXPANSION_RETRY)
                for row, hits in zip(again, wider, strict=True):
                    found[row] = hits
        return found

    def _search(
        self, queries: np.ndarray, limit: int, sites: list[str | None], expansion: int
    ) -> list[list[tuple[uuid.UUID, float]]]:
        rows_of: dict[int, list[int]] = {}  # part -> the query rows that search it
        for row, site in enumerate(sites):
            for n in range(len(self.parts)) if site is None else [self.part_of[site]] if site in self.part_of else []:
                rows_of.setdefault(n, []).append(row)
        found: list[list[tuple[float, int]]] = [[] for _ in sites]  # (cosine distance, visitor key)
        waiting = self._waiting_by_part() if self.waiting else {}
        for n, rows in rows_of.items():
            index = self.parts[n]
            if len(index):
                want = min(limit + len(self.stale[n]), len(index))  # stale entries are skipped below
                index.expansion_search = max(expansion, want)
                m = index.search(queries[rows], want, threads=0 if len(rows) > 1 else 1)
                keys, dists = np.atleast_2d(m.keys).tolist(), np.atleast_2d(m.distances).tolist()
                counts = m.counts.tolist() if hasattr(m, "counts") else [len(keys[0])]  # one row: usearch's Matches
                owner = self.owner
                for j, row in enumerate(rows):
                    hits = zip(dists[j][: counts[j]], keys[j][: counts[j]], strict=True)
                    found[row] += [(d, owner[k]) for d, k in hits if k in owner]
            if n in waiting:  # exactly
                wkeys, matrix = waiting[n]
                sims = queries[rows].astype(np.float32) @ matrix.T
                top = min(limit, len(wkeys))
                best = np.argpartition(-sims, top - 1, axis=1)[:, :top]
                for j, row in enumerate(rows):
                    found[row] += [(1.0 - float(sims[j, c]), wkeys[c]) for c in best[j].tolist()]
        out = []
        for hits in found:
            hits.sort()
            out.append([(uuid.UUID(int=(self.where[key][0] << 64) | key), 1.0 - dist) for dist, key in hits[:limit]])
        return out

    def _waiting_by_part(self) -> dict[int, tuple[list[int], np.ndarray]]:
        if self._waiting_view is None:
            grouped: dict[int, tuple[list[int], list[np.ndarray]]] = {}
            for key, (part, vec) in self.waiting.items():
                keys, vecs = grouped.setdefault(part, ([], []))
                keys.append(key)
                vecs.append(vec)
            self._waiting_view = {
                part: (keys, np.stack(vecs).astype(np.float32)) for part, (keys, vecs) in grouped.items()
            }
        return self._waiting_view

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for n, index in enumerate(self.parts):
            self._remove_stale(n)
            _atomic(folder / f"part{n}.usearch", lambda tmp, index=index: index.save(str(tmp)))
        table = np.array([(key, *value) for key, value in self.where.items()], dtype=np.uint64).reshape(-1, 4)
        _atomic(folder / "keys.npy", lambda tmp: np.save(tmp, table), suffix=".npy")
        if self.waiting:
            keys = np.fromiter(self.waiting, dtype=np.uint64, count=len(self.waiting))
            vecs = np.stack([vec for _, vec in self.waiting.values()]).astype(np.float16)
            _atomic(folder / "waiting.npz", lambda tmp: np.savez(tmp, keys=keys, vectors=vecs), suffix=".npz")
        else:
            (folder / "waiting.npz").unlink(missing_ok=True)
        _atomic(folder / "sites.json", lambda tmp: tmp.write_text(json.dumps(self.sites)))

    @classmethod
    def load(cls, folder: Path, dim: int) -> _Protos:
        self = cls(dim)
        self.sites = json.loads((folder / "sites.json").read_text())
        self.part_of = {s: n for n, s in enumerate(self.sites)}
        for n in range(len(self.sites)):
            index = Index.restore(str(folder / f"part{n}.usearch"))
            if index is None or index.ndim != dim:
                raise VectorStoreError(f"{folder}/part{n}.usearch is missing or not {dim}-d")
            index.expansion_search = EXPANSION_SEARCH
            self.parts.append(index)
            self.stale.append(set())
        table = np.load(folder / "keys.npy")
        if table.shape[1] == 3:  # written before index keys: the visitor key was the index key
            table = np.column_stack([table, table[:, 0]])
        keys, ikeys = table[:, 0].tolist(), table[:, 3].tolist()
        values = zip(table[:, 1].tolist(), table[:, 2].tolist(), ikeys, strict=True)
        self.where = dict(zip(keys, values, strict=True))
        if (folder / "waiting.npz").exists():
            data = np.load(folder / "waiting.npz")
            for key, vec in zip(data["keys"].tolist(), data["vectors"], strict=True):
                self.waiting[key] = (self.where[key][1], vec)
        self.owner = {ikey: key for ikey, key in zip(ikeys, keys, strict=True) if key not in self.waiting}
        fresh = [k for k in ikeys if k < 1 << 62]
        self.next_key = max(fresh, default=0) + 1
        return self

    def __len__(self) -> int:
        return len(self.where)


class _Faces:
    """One event's faces of one recognizer: an exact f32 matrix (grown by doubling), face ids and photo ids."""

    def __init__(self, dim: int):
        self.dim = dim
        self.buffer = np.zeros((16, dim), dtype=np.float32)
        self.faces: list[int] = []
        self.photos: list[int] = []
        self.row: dict[int, int] = {}

    @property
    def matrix(self) -> np.ndarray:
        return self.buffer[: len(self.faces)]

    def upsert(self, points: list[tuple[int, int, np.ndarray]]) -> None:
        for fid, pid, vec in points:
            r = self.row.get(fid)
            if r is None:
                r = self.row[fid] = len(self.faces)
                if r == len(self.buffer):
                    self.buffer = np.concatenate([self.buffer, np.zeros_like(self.buffer)])
                self.faces.append(fid)
                self.photos.append(pid)
            self.buffer[r], self.photos[r] = vec, pid

    def search(self, vector: np.ndarray, min_cosine: float, limit: int) -> list[tuple[uuid.UUID, uuid.UUID, float]]:
        if not self.faces:
            return []
        q = np.asarray(vector, dtype=np.float32)
        sims = self.matrix @ (q / (np.linalg.norm(q) or 1.0))
        rows = np.flatnonzero(sims >= min_cosine)
        if len(rows) > limit:
            rows = rows[np.argpartition(-sims[rows], limit - 1)[:limit]]
        rows = rows[np.argsort(-sims[rows], kind="stable")]
        return [(uuid.UUID(int=self.faces[r]), uuid.UUID(int=self.photos[r]), float(sims[r])) for r in rows]

    def save(self, file: Path) -> None:
        ids = np.array(
            [[f >> 64, f & LOW, p >> 64, p & LOW] for f, p in zip(self.faces, self.photos, strict=True)],
            dtype=np.uint64,
        ).reshape(-1, 4)
        _atomic(file, lambda tmp: np.savez(tmp, ids=ids, matrix=self.matrix), suffix=".npz")

    @classmethod
    def load(cls, file: Path) -> _Faces:
        data = np.load(file)
        matrix = data["matrix"]
        self = cls(int(matrix.shape[1]))
        self.buffer = np.concatenate([np.asarray(matrix, dtype=np.float32), np.zeros((16, self.dim), np.float32)])
        for hf, lf, hp, lp in data["ids"].tolist():
            self.row[(hf << 64) | lf] = len(self.faces)
            self.faces.append((hf << 64) | lf)
            self.photos.append((hp << 64) | lp)
        return self


def _stored(index: Index, keys: np.ndarray) -> np.ndarray:
    """The f16 vectors a graph holds under these keys, one row each."""
    got = index.get(keys)
    return (got if isinstance(got, np.ndarray) else np.vstack(got)).astype(np.float16)


def _atomic(target: Path, write: Any, suffix: str = "") -> None:
    """Write through `write(tmp)` and rename over `target` (np.save adds its suffix unless it is there)."""
    tmp = target.with_name(target.name + ".tmp" + suffix)
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def _ids(items: Iterable[uuid.UUID]) -> list[bytes]:
    return [u.bytes for u in items]


class EmbeddedVectors(Vectors):
    """usearch indexes in memory; `path` None keeps nothing on disk (tests, evaluation)."""

    def __init__(
        self,
        path: str | Path | None,
        prefix: str = "revisit",
        journal_limit: int = JOURNAL_LIMIT,
        background_adds: bool = False,
    ):
        self.prefix = prefix
        self.path = None if path is None or str(path) == ":memory:" else Path(path)
        self.journal_limit = journal_limit
        self.lock = threading.RLock()  # visitors' collections, the journal, checkpoints
        # the event matrices: a selfie search takes only this, so it never makes ingest wait; a face write (or a
        # checkpoint) takes `lock` first, then this
        self.faces_lock = threading.RLock()
        self._protos: dict[str, _Protos] = {}
        self._sightings: dict[str, set[int]] = {}
        self._faces: dict[str, _Faces] = {}
        self._dirty: set[str] = set()  # "r:<recognizer>" / "e:<event collection>"
        self._journal: Any = None
        self._lockfile: Any = None
        self._bulk = 0
        # `background_adds`: prototype upserts wait (searched exactly) and a thread adds them to the graphs, so the
        # caller (ingest) does not pay the graph's add (~3 ms a prototype at 1M); replayed ones always wait
        self.background_adds = background_adds
        self._merger: threading.Thread | None = None  # moves waiting prototypes into the graphs (`_merge_waiting`)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self.replayed = 0  # journal records replayed at open
        self.was_clean = True  # False when the last process did not close the index
        self.was_rebuilding = False  # an interrupted bulk load: the index was opened empty
        if self.path is not None:
            self._open_dir()

    # --- files ---

    def _open_dir(self) -> None:
        assert self.path is not None
        self.path.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.path / ".lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lockfile.close()
            raise VectorStoreError(
                f"vector index {self.path} is in use by another process (is the central service running? stop it first)"
            ) from exc
        manifest = self._read_manifest()
        if manifest is not None:
            self.was_clean = bool(manifest.get("clean"))
            self.was_rebuilding = bool(manifest.get("rebuilding"))
            if not self.was_rebuilding:
                for rec, meta in manifest["recognizers"].items():
                    folder = self.path / "rec" / meta["dir"]
                    self._protos[rec] = _Protos.load(folder, int(meta["dim"]))
                    table = np.load(folder / "sightings.npy")
                    self._sightings[rec] = {(int(h) << 64) | int(lo) for h, lo in table.tolist()}
                for name in manifest["events"]:
                    self._faces[name] = _Faces.load(self.path / "events" / f"{name}.npz")
                self.replayed = self._replay()
            else:
                (self.path / "journal.bin").unlink(missing_ok=True)
        self._journal = open(self.path / "journal.bin", "ab")  # noqa: SIM115 - held until close()
        self._write_manifest(clean=False, rebuilding=self.was_rebuilding)
        if self.waiting():
            log.info(
                "vector index: %d prototypes wait to be merged into the graph (searched exactly meanwhile)",
                self.waiting(),
            )
        if self.waiting() or self.background_adds:
            self._start_merger()

    def _read_manifest(self) -> dict[str, Any] | None:
        assert self.path is not None
        file = self.path / "manifest.json"
        if not file.exists():
            return None
        manifest = json.loads(file.read_text())
        if manifest.get("format") != FORMAT:
            raise VectorStoreError(f"{file}: format {manifest.get('format')} is not {FORMAT}")
        return manifest

    def _write_manifest(self, clean: bool, rebuilding: bool = False) -> None:
        assert self.path is not None
        manifest = {
            "format": FORMAT,
            "engine": "usearch",
            "clean": clean,
            "rebuilding": rebuilding,
            "recognizers": {
                rec: {"dim": p.dim, "dir": collection_base(self.prefix, rec)} for rec, p in self._protos.items()
            },
            "events": sorted(self._faces),
        }
        _atomic(self.path / "manifest.json", lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))

    def _replay(self) -> int:
        assert self.path is not None
        file = self.path / "journal.bin"
        if not file.exists():
            return 0
        data = file.read_bytes()
        pos = count = 0
        pending: list[Any] = []  # consecutive prototype upserts are applied as one batch
        while pos + FRAME.size <= len(data):
            size, crc = FRAME.unpack_from(data, pos)
            body = data[pos + FRAME.size : pos + FRAME.size + size]
            if len(body) < size or zlib.crc32(body) != crc:
                break
            op = msgpack.unpackb(body)
            if op[0] == "pu" and (not pending or pending[0][1] == op[1]):
                pending.append(op)
            else:
                self._flush_pending(pending)
                if op[0] == "pu":
                    pending.append(op)
                else:
                    self._apply(op)
            pos += FRAME.size + size
            count += 1
        self._flush_pending(pending)
        if pos < len(data):
            log.warning("vector journal %s: dropped a torn record at byte %d of %d", file, pos, len(data))
        if count:
            self._dirty.update(f"r:{r}" for r in self._protos)
            self._dirty.update(f"e:{n}" for n in self._faces)
        return count

    def _flush_pending(self, pending: list[Any]) -> None:
        if pending:
            self._apply(["pu", pending[0][1], [item for op in pending for item in op[2]]], wait=True)
            pending.clear()

    def _log(self, op: list[Any]) -> None:
        if self._journal is None or self._bulk:
            return
        body = msgpack.packb(op)
        self._journal.write(FRAME.pack(len(body), zlib.crc32(body)) + body)
        self._journal.flush()  # to the OS: survives a killed process

    def _write(self, op: list[Any], mark: str) -> None:
        with self.lock:
            self._log(op)
            if op[0] == "pu" and self.background_adds and not self._bulk:
                self._apply(op, wait=True)
                self._start_merger()
                self._wake.set()
            else:
                self._apply(op, threads=0 if self._bulk else 1)
            self._dirty.add(mark)
            if self._journal is not None and not self._bulk and self._journal.tell() > self.journal_limit:
                self.checkpoint()

    def waiting(self) -> int:
        """Prototypes not in a graph yet (a replayed journal's; with `background_adds`, recent changes), searched
        exactly until merged."""
        with self.lock:
            return sum(len(p.waiting) for p in self._protos.values())

    def merge_waiting(self, step: int | None = None, threads: int = 0) -> int:
        """Move waiting prototypes into their graphs (up to `step` per recognizer; None: all); the number left."""
        with self.lock:
            left = 0
            for rec, protos in self._protos.items():
                if protos.waiting:
                    left += protos.merge(step or len(protos.waiting), threads)
                    self._dirty.add(f"r:{rec}")
            return left

    def _start_merger(self) -> None:
        if self._merger is None and not self._closing.is_set():
            self._merger = threading.Thread(target=self._merge_waiting, name="vectors-merge", daemon=True)
            self._merger.start()

    def repair_graphs(self, step: int = REPAIR_STEP) -> dict[str, int]:
        """Find graph entries a search cannot reach and put them in again (`_Protos.repair`); per recognizer,
        how many. `step` entries a time, the lock held for one step. The service's scheduler runs it an hour
        after start (after a rebuild, too) and weekly (`index_repair`)."""
        fixed: dict[str, int] = {}
        for rec in list(self._protos):
            with self.lock:
                protos = self._protos.get(rec)
                groups = defaultdict(list) if protos is not None else {}
                for ikey, key in protos.owner.items() if protos is not None else []:
                    groups[protos.where[key][1]].append(ikey)
            for part, ikeys in groups.items():
                for start in range(0, len(ikeys), step):
                    with self.lock:
                        protos = self._protos.get(rec)
                        if protos is None or self._closing.is_set():
                            return fixed
                        n = protos.repair(part, ikeys[start : start + step])
                        if n:
                            fixed[rec] = fixed.get(rec, 0) + n
                            self._dirty.add(f"r:{rec}")
        if fixed:
            log.info("vector index: %s unreachable prototypes put into the graph again", fixed)
        return fixed

    def _merge_waiting(self) -> None:
        """The background merge: MERGE_STEP entries a step on one core, the lock held only for one step. Ends
        when nothing waits, unless `background_adds` (then it sleeps until the next upsert)."""
        start, total = time.monotonic(), self.waiting()
        while not self._closing.is_set():
            if self.merge_waiting(MERGE_STEP, threads=1):
                self._closing.wait(0.001)  # ingest and searches take the lock between steps
                continue
            if total:
                log.info("vector index: %d prototypes merged into the graph in %.0f s", total, time.monotonic() - start)
                total = 0
            if not self.background_adds:
                return
            self._wake.wait(1.0)
            self._wake.clear()

    def _apply(self, op: list[Any], threads: int = 1, wait: bool = False) -> None:
        kind = op[0]
        if kind == "ensure":
            rec, dim = op[1], int(op[2])
            self._protos.setdefault(rec, _Protos(dim))
            self._sightings.setdefault(rec, set())
        elif kind == "drop":
            self._protos.pop(op[1], None)
            self._sightings.pop(op[1], None)
        elif kind == "pu":
            items = [(int.from_bytes(i, "big"), site, np.frombuffer(v, dtype=np.float16)) for i, site, v in op[2]]
            self._protos[op[1]].upsert(items, threads=threads, wait=wait)
        elif kind == "pd":
            self._protos[op[1]].delete(int.from_bytes(i, "big") for i in op[2])
        elif kind == "su":
            self._sightings[op[1]].update(int.from_bytes(i, "big") for i in op[2])
        elif kind == "sd":
            self._sightings[op[1]].difference_update(int.from_bytes(i, "big") for i in op[2])
        elif kind == "fu":
            name, dim = op[1], int(op[2])
            points = [
                (int.from_bytes(f, "big"), int.from_bytes(p, "big"), np.frombuffer(v, dtype=np.float32))
                for f, p, v in op[3]
            ]
            with self.faces_lock:
                self._faces.setdefault(name, _Faces(dim)).upsert(points)
        elif kind == "fdrop":
            with self.faces_lock:
                self._faces.pop(op[1], None)
        else:
            raise VectorStoreError(f"unknown journal record {kind!r}")

    def checkpoint(self) -> None:
        """Save changed collections, then the manifest, then empty the journal (see the module docstring)."""
        if self.path is None:
            return
        with self.lock:
            for mark in sorted(self._dirty):
                kind, name = mark.split(":", 1)
                if kind == "r" and name in self._protos:
                    folder = self.path / "rec" / collection_base(self.prefix, name)
                    self._protos[name].save(folder)
                    ids = np.array([[i >> 64, i & LOW] for i in self._sightings[name]], dtype=np.uint64)
                    _atomic(
                        folder / "sightings.npy", lambda tmp, ids=ids: np.save(tmp, ids.reshape(-1, 2)), suffix=".npy"
                    )
                elif kind == "e" and name in self._faces:
                    (self.path / "events").mkdir(exist_ok=True)
                    with self.faces_lock:
                        self._faces[name].save(self.path / "events" / f"{name}.npz")
            self._write_manifest(clean=False)
            self._remove_unlisted()
            if self._journal is not None:
                self._journal.truncate(0)
                self._journal.seek(0)
                os.fsync(self._journal.fileno())
            self._dirty.clear()

    def _remove_unlisted(self) -> None:
        assert self.path is not None
        keep = {collection_base(self.prefix, r) for r in self._protos}
        for folder in (self.path / "rec").glob("*") if (self.path / "rec").exists() else []:
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        for file in (self.path / "events").glob("*.npz") if (self.path / "events").exists() else []:
            if file.stem not in self._faces:
                file.unlink(missing_ok=True)

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Load many points without the journal (multi-threaded adds); a checkpoint ends it. Interrupted, the
        next open starts empty (the manifest says so) and the service rebuilds from the database."""
        with self.lock:
            if self.path is not None and not self._bulk:
                self._write_manifest(clean=False, rebuilding=True)
            self._bulk += 1
            try:
                yield
            finally:
                self._bulk -= 1
            if not self._bulk:
                self._dirty.update(f"r:{r}" for r in self._protos)
                self.checkpoint()

    def interrupt(self) -> None:
        """Stop the background merge and a running `repair_graphs` at their next step (the service is stopping)."""
        self._closing.set()

    def close(self) -> None:
        self._closing.set()
        if self._merger is not None:
            self._merger.join()  # within one step; what still waits is saved as such
            self._merger = None
        with self.lock:
            if self.path is not None and self._journal is not None:
                self.checkpoint()
                self._write_manifest(clean=True)
                self._journal.close()
                self._journal = None
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)
                self._lockfile.close()
            self._protos.clear()
            self._sightings.clear()
            with self.faces_lock:
                self._faces.clear()

    # --- collections ---

    def ensure(self, recognizer_id: str, dim: int) -> None:
        known = self._protos.get(recognizer_id)
        if known is not None:
            if known.dim != dim:
                raise VectorStoreError(f"the index of {recognizer_id} holds {known.dim}-d vectors, not {dim}-d")
            return
        self._write(["ensure", recognizer_id, dim], f"r:{recognizer_id}")

    def recognizers(self) -> list[str]:
        with self.lock:
            return sorted(collection_base(self.prefix, r) for r in self._protos)

    def drop(self, recognizer_id: str) -> None:
        if recognizer_id in self._protos:
            self._write(["drop", recognizer_id], f"r:{recognizer_id}")

    # --- prototypes ---

    def search_prototypes(
        self, recognizer_id: str, vector: np.ndarray, limit: int, site: str | None = None, floor: float | None = None
    ) -> list[tuple[uuid.UUID, float]]:
        return self.search_prototypes_many(recognizer_id, [vector], limit, [site], floor)[0]

    def search_prototypes_many(
        self,
        recognizer_id: str,
        vectors: Sequence[np.ndarray],
        limit: int,
        sites: Sequence[str | None],
        floor: float | None = None,
    ) -> list[list[tuple[uuid.UUID, float]]]:
        if len(vectors) != len(sites):
            raise ValueError(f"{len(vectors)} vectors, {len(sites)} sites")
        with self.lock:
            protos = self._protos.get(recognizer_id)
            if protos is None or limit <= 0 or not len(vectors):
                return [[] for _ in vectors]
            return protos.search(_unit16(np.stack(vectors)), limit, list(sites), floor)

    def upsert_prototypes(self, recognizer_id: str, items: Iterable[tuple[uuid.UUID, np.ndarray, str]]) -> None:
        items = list(items)
        if not items:
            return
        vecs = _unit16(np.stack([np.asarray(v, dtype=np.float32) for _, v, _ in items]))
        records = [[vid.bytes, site, vec.tobytes()] for (vid, _, site), vec in zip(items, vecs, strict=True)]
        self._write(["pu", recognizer_id, records], f"r:{recognizer_id}")

    def delete_prototypes(self, recognizer_id: str, visitor_ids: Iterable[uuid.UUID]) -> None:
        ids = _ids(visitor_ids)
        if ids and recognizer_id in self._protos:
            self._write(["pd", recognizer_id, ids], f"r:{recognizer_id}")

    def count(self, recognizer_id: str, kind: str = "prototypes") -> int:
        with self.lock:
            if recognizer_id not in self._protos:
                return 0
            return len(self._protos[recognizer_id] if kind == "prototypes" else self._sightings[recognizer_id])

    # --- sightings ---

    def upsert_sightings(self, recognizer_id: str, points: Iterable[SightingPoint]) -> None:
        ids = _ids(p.id for p in points)
        if ids:
            self._write(["su", recognizer_id, ids], f"r:{recognizer_id}")

    def set_sighting_visitor(self, recognizer_id: str, sighting_ids: Iterable[uuid.UUID], visitor: uuid.UUID) -> None:
        """Nothing to do: this engine keeps sighting ids only (the owner lives in the database)."""

    def delete_sightings(self, recognizer_id: str, sighting_ids: Iterable[uuid.UUID]) -> None:
        ids = _ids(sighting_ids)
        if ids and recognizer_id in self._sightings:
            self._write(["sd", recognizer_id, ids], f"r:{recognizer_id}")

    # --- event faces ---

    def upsert_faces(
        self, event_id: uuid.UUID, recognizer_id: str, points: list[tuple[uuid.UUID, uuid.UUID, np.ndarray]]
    ) -> None:
        if not points:
            return
        name = self.event_name(event_id, recognizer_id)
        dim = len(points[0][2])
        with self.faces_lock:
            if name in self._faces and self._faces[name].dim != dim:
                raise VectorStoreError(f"event collection {name} holds {self._faces[name].dim}-d vectors, not {dim}-d")
        records = [[f.bytes, p.bytes, np.asarray(v, dtype=np.float32).tobytes()] for f, p, v in points]
        self._write(["fu", name, dim, records], f"e:{name}")

    def search_faces(
        self, event_id: uuid.UUID, recognizer_id: str, vector: np.ndarray, min_cosine: float, limit: int
    ) -> list[tuple[uuid.UUID, uuid.UUID, float]]:
        with self.faces_lock:
            faces = self._faces.get(self.event_name(event_id, recognizer_id))
            return [] if faces is None or limit <= 0 else faces.search(vector, min_cosine, limit)

    def count_faces(self, event_id: uuid.UUID, recognizer_id: str) -> int:
        with self.faces_lock:
            faces = self._faces.get(self.event_name(event_id, recognizer_id))
            return 0 if faces is None else len(faces.faces)

    def event_collections(self, event_id: uuid.UUID) -> list[str]:
        start = event_prefix(self.prefix, event_id)
        with self.faces_lock:
            return sorted(n for n in self._faces if n.startswith(start))

    def _drop_named(self, name: str) -> None:
        if name in self._faces:
            self._write(["fdrop", name], f"e:{name}")

"""The disk spool: every observation is committed here before it is sent, and deleted only once delivered: when
central confirms it stored it (`confirm`, delivery = "stored", the default) or on the broker's PUBACK (`ack`,
delivery = "broker").

SQLite (stdlib) in WAL mode with `synchronous=FULL`, so a committed row survives a crash or power cut. `seq` is
AUTOINCREMENT, so it never goes back and replay order (and the publisher's cursor) survives deletions. The spool
is bounded by payload bytes: when a new row would not fit, the oldest rows are dropped, counted and logged.
A full disk ("database or disk is full") or any other SQLite failure is logged and counted; `put` then returns
None and the caller decides (the publisher still sends the observation, unspooled). One connection, one lock.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from revisit.shared.logfmt import event

log = logging.getLogger(__name__)

# Bytes charged per row on top of its payload (key, id, timestamps, b-tree overhead): keeps the bound honest for
# small payloads.
ROW_OVERHEAD = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    observation_id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass
class SpoolStats:
    depth: int = 0  # rows waiting for a PUBACK
    bytes: int = 0  # their payload bytes
    written: int = 0
    acked: int = 0
    dropped: int = 0  # oldest rows dropped to respect the bound
    rejected: int = 0  # observations larger than the whole bound
    disk_full: int = 0  # writes refused because the disk (or the page cap) was full
    errors: int = 0  # other SQLite failures


class Spool:
    def __init__(self, path: str | Path, max_bytes: int, max_pages: int | None = None):
        """`max_pages` caps the database file (SQLite's max_page_count): a backstop, and how tests fill the disk."""
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        if max_pages is not None:
            self._db.execute(f"PRAGMA max_page_count={int(max_pages)}")
        count, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM spool").fetchone()
        self.stats = SpoolStats(depth=count, bytes=size)
        if count:
            log.info(event("spool_open", path=self.path, depth=count, bytes=size))

    def _cost(self, payload_len: int) -> int:
        return payload_len + ROW_OVERHEAD

    def _used(self) -> int:
        return self.stats.bytes + self.stats.depth * ROW_OVERHEAD

    def put(self, observation_id: str, payload: bytes, created: float | None = None) -> int | None:
        """Commit one observation; its seq, or None when it could not be stored (counted and logged)."""
        created = time.time() if created is None else created
        with self._lock:
            need = self._cost(len(payload))
            if need > self.max_bytes:
                self.stats.rejected += 1
                log.error(
                    event(
                        "spool_reject",
                        observation_id=observation_id,
                        bytes=len(payload),
                        max_bytes=self.max_bytes,
                        reason="larger than the whole spool",
                    )
                )
                return None
            for attempt in range(2):
                try:
                    return self._put(observation_id, payload, created, need)
                except sqlite3.OperationalError as exc:
                    self._rollback()
                    if "full" not in str(exc):
                        self.stats.errors += 1
                        log.error(event("spool_error", op="put", error=exc, observation_id=observation_id))
                        return None
                    self.stats.disk_full += 1
                    log.error(
                        event(
                            "spool_disk_full",
                            path=self.path,
                            depth=self.stats.depth,
                            error=exc,
                            action="dropping oldest quarter" if attempt == 0 else "observation not spooled",
                        )
                    )
                    if attempt == 0 and not self._drop_oldest(max(1, self.stats.depth // 4)):
                        return None
                except sqlite3.Error as exc:
                    self._rollback()
                    self.stats.errors += 1
                    log.error(event("spool_error", op="put", error=exc, observation_id=observation_id))
                    return None
            return None

    def _put(self, observation_id: str, payload: bytes, created: float, need: int) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        dropped: list[tuple[int, int]] = []  # (seq, payload bytes), oldest first
        excess, freed = self._used() + need - self.max_bytes, 0
        while freed < excess:
            after = dropped[-1][0] if dropped else 0
            rows = db.execute(
                "SELECT seq, length(payload) FROM spool WHERE seq > ? ORDER BY seq LIMIT 256", (after,)
            ).fetchall()
            if not rows:
                break
            for seq, n in rows:
                dropped.append((seq, n))
                freed += self._cost(n)
                if freed >= excess:
                    break
        if dropped:
            db.execute("DELETE FROM spool WHERE seq <= ?", (dropped[-1][0],))
        cur = db.execute(
            "INSERT OR IGNORE INTO spool (observation_id, payload, created) VALUES (?, ?, ?)",
            (observation_id, payload, created),
        )
        inserted = cur.rowcount == 1
        seq = (
            cur.lastrowid
            if inserted
            else db.execute("SELECT seq FROM spool WHERE observation_id = ?", (observation_id,)).fetchone()[0]
        )
        db.execute("COMMIT")
        if dropped:
            self.stats.depth -= len(dropped)
            self.stats.bytes -= sum(n for _, n in dropped)
            self.stats.dropped += len(dropped)
            log.warning(
                event(
                    "spool_full_dropped_oldest",
                    dropped=len(dropped),
                    first_seq=dropped[0][0],
                    last_seq=dropped[-1][0],
                    dropped_total=self.stats.dropped,
                    max_bytes=self.max_bytes,
                )
            )
        if inserted:
            self.stats.depth += 1
            self.stats.bytes += len(payload)
            self.stats.written += 1
        assert seq is not None
        return int(seq)

    def _drop_oldest(self, n: int) -> bool:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                "DELETE FROM spool WHERE seq IN (SELECT seq FROM spool ORDER BY seq LIMIT ?) RETURNING length(payload)",
                (n,),
            ).fetchall()
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            log.error(event("spool_error", op="drop_oldest", error=exc))
            return False
        self.stats.depth -= len(rows)
        self.stats.bytes -= sum(r[0] for r in rows)
        self.stats.dropped += len(rows)
        log.warning(event("spool_dropped_oldest", dropped=len(rows), dropped_total=self.stats.dropped))
        return bool(rows)

    def pending(self, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, payload) rows with seq > `after`, oldest first."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, payload FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
                ).fetchall()
            except sqlite3.Error as exc:
                self.stats.errors += 1
                log.error(event("spool_error", op="read", error=exc))
                return []
        return [(int(s), bytes(p)) for s, p in rows]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged rows in one transaction; how many were still there."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                sizes: list[int] = []
                for i in range(0, len(seqs), 500):  # SQLite's bound-parameter limit
                    chunk = seqs[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    sizes += [
                        r[0]
                        for r in self._db.execute(
                            f"DELETE FROM spool WHERE seq IN ({marks}) RETURNING length(payload)", chunk
                        )
                    ]
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                # The rows stay and are sent again after a restart: a duplicate, never a loss.
                self._rollback()
                self.stats.errors += 1
                log.error(event("spool_error", op="ack", error=exc, rows=len(seqs)))
                return 0
            self.stats.depth -= len(sizes)
            self.stats.bytes -= sum(sizes)
            self.stats.acked += len(sizes)
            return len(sizes)

    def get(self, seqs: Iterable[int]) -> list[tuple[int, bytes]]:
        """The (seq, payload) rows still there among `seqs`, in seq order."""
        seqs = list(seqs)
        out: list[tuple[int, bytes]] = []
        with self._lock:
            try:
                for i in range(0, len(seqs), 500):
                    chunk = seqs[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    out += self._db.execute(f"SELECT seq, payload FROM spool WHERE seq IN ({marks})", chunk).fetchall()
            except sqlite3.Error as exc:
                self.stats.errors += 1
                log.error(event("spool_error", op="read", error=exc))
                return []
        return sorted((int(s), bytes(p)) for s, p in out)

    def confirm(self, observation_ids: Iterable[str]) -> list[int]:
        """Delete the rows of these observations (central stored them) in one transaction; their seqs."""
        ids = list(observation_ids)
        if not ids:
            return []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                rows: list[tuple[int, int]] = []
                for i in range(0, len(ids), 500):
                    chunk = ids[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"DELETE FROM spool WHERE observation_id IN ({marks}) RETURNING seq, length(payload)", chunk
                    ).fetchall()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()  # the rows stay: resent and confirmed again later
                self.stats.errors += 1
                log.error(event("spool_error", op="confirm", error=exc, rows=len(ids)))
                return []
            self.stats.depth -= len(rows)
            self.stats.bytes -= sum(n for _, n in rows)
            self.stats.acked += len(rows)
            return [int(seq) for seq, _ in rows]

    def oldest_age_s(self, now: float | None = None) -> float:
        with self._lock:
            try:
                row = self._db.execute("SELECT MIN(created) FROM spool").fetchone()
            except sqlite3.Error:
                return 0.0
        return max(0.0, (now or time.time()) - row[0]) if row and row[0] is not None else 0.0

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

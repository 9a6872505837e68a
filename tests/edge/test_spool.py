from __future__ import annotations

import logging
import threading
import uuid

import pytest

from revisit.edge.spool import ROW_OVERHEAD, Spool


def _id() -> str:
    return str(uuid.uuid4())


def test_put_pending_ack_in_order(tmp_path):
    with Spool(tmp_path / "s.sqlite", 10_000_000) as spool:
        seqs = [spool.put(_id(), f"p{i}".encode()) for i in range(5)]
        assert seqs == sorted(seqs)
        assert [p for _, p in spool.pending()] == [f"p{i}".encode() for i in range(5)]
        assert [p for _, p in spool.pending(after=seqs[2], limit=1)] == [b"p3"]
        assert spool.ack([seqs[0], seqs[3], 999]) == 2
        assert [p for _, p in spool.pending()] == [b"p1", b"p2", b"p4"]
        assert spool.stats.depth == 3 and spool.stats.acked == 2


def test_survives_reopen_and_seq_never_goes_back(tmp_path):
    path = tmp_path / "s.sqlite"
    with Spool(path, 10_000_000) as spool:
        last = spool.put(_id(), b"a")
        spool.put(_id(), b"b")
        spool.ack([last + 1])  # delete the newest row: AUTOINCREMENT must not reuse its seq
    with Spool(path, 10_000_000) as spool:
        assert spool.stats.depth == 1 and spool.stats.bytes == 1
        assert spool.put(_id(), b"c") > last + 1
        assert [p for _, p in spool.pending()] == [b"a", b"c"]


def test_duplicate_observation_id_is_stored_once(tmp_path):
    with Spool(tmp_path / "s.sqlite", 10_000_000) as spool:
        oid = _id()
        assert spool.put(oid, b"x") == spool.put(oid, b"x")
        assert spool.stats.depth == 1


def test_bound_drops_oldest_counted_and_logged(tmp_path, caplog):
    size = 1000
    bound = 10 * (size + ROW_OVERHEAD)
    with Spool(tmp_path / "s.sqlite", bound) as spool, caplog.at_level(logging.WARNING):
        for i in range(25):
            assert spool.put(_id(), bytes([i]) * size) is not None
        assert spool.stats.depth == 10
        assert spool.stats.dropped == 15
        assert [p[0] for _, p in spool.pending(limit=100)] == list(range(15, 25))  # the newest survive
    assert "spool_full_dropped_oldest" in caplog.text


def test_larger_than_bound_is_rejected(tmp_path):
    with Spool(tmp_path / "s.sqlite", 1000) as spool:
        assert spool.put(_id(), b"x" * 2000) is None
        assert spool.stats.rejected == 1 and spool.stats.depth == 0


def test_disk_full_is_counted_not_raised(tmp_path, caplog):
    # max_page_count makes SQLite answer SQLITE_FULL ("database or disk is full"), as a full disk does.
    with Spool(tmp_path / "s.sqlite", 100_000_000, max_pages=12) as spool, caplog.at_level(logging.WARNING):
        results = [spool.put(_id(), b"z" * 3000) for _ in range(40)]
        # Full: the oldest quarter is dropped to make room, so new observations still get in.
        assert None not in results
        assert spool.stats.disk_full >= 1 and spool.stats.dropped >= 1
        assert "spool_disk_full" in caplog.text
        # One that cannot fit even in an emptied file is refused (None), counted, and nothing raises.
        before = spool.stats.disk_full
        assert spool.put(_id(), b"y" * 200_000) is None
        assert spool.stats.disk_full > before
        rows = spool.pending(limit=1000)
        spool.ack([s for s, _ in rows])
        assert spool.put(_id(), b"small") is not None


def test_thread_safe(tmp_path):
    with Spool(tmp_path / "s.sqlite", 100_000_000) as spool:

        def writer() -> None:
            for _ in range(50):
                spool.put(_id(), b"w" * 100)

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        acked = 0
        while any(t.is_alive() for t in threads) or spool.stats.depth:
            rows = spool.pending(limit=20)
            acked += spool.ack([s for s, _ in rows])
        for t in threads:
            t.join()
        assert acked == 200 and spool.stats.depth == 0 and spool.stats.written == 200


@pytest.mark.parametrize("mode", ["wal"])
def test_wal_mode(tmp_path, mode):
    import sqlite3

    with Spool(tmp_path / "s.sqlite", 1000):
        db = sqlite3.connect(tmp_path / "s.sqlite")
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == mode
        db.close()

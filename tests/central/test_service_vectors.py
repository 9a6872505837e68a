"""The service and its vector index: kill -9 loses nothing committed, old local-mode data dirs migrate."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import col, func, select

from revisit.central.config import CentralConfig
from revisit.central.service import CentralService
from revisit.central.store import Sighting, Visitor
from revisit.shared.assign import Prototype
from tests.central.conftest import DIM, REC, make_obs

REPO = Path(__file__).resolve().parents[2]


def config(data: Path, **extra) -> CentralConfig:
    return CentralConfig.model_validate({"data_dir": str(data), "ingest": {"recognizers": {REC: DIM}}} | extra)


def people(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(vec: np.ndarray, seed: int) -> np.ndarray:
    return vec + 0.25 * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)


def assert_index_matches_database(service: CentralService) -> None:
    """Every sighting and every visitor's prototype of the database is in the index, and findable."""
    with service.session() as s:
        sightings = int(s.exec(select(func.count()).select_from(Sighting)).one())
        visitors = list(s.exec(select(Visitor.id, Visitor.proto_sum).where(col(Visitor.proto_sum).is_not(None))))
    assert service.vectors.count(REC, "sightings") == sightings
    assert service.vectors.count(REC) == len(visitors)
    for vid, proto_sum in visitors:
        direction = Prototype.from_bytes(proto_sum).vector
        best, score = service.vectors.search_prototypes(REC, direction, 1)[0]
        assert best == vid and score > 0.99


CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService
    from tests.central.conftest import DIM, REC, make_obs
    vectors = {"background_adds": sys.argv[2] == "background"}
    ingest = {"recognizers": {REC: DIM}}
    cfg = CentralConfig.model_validate({"data_dir": sys.argv[1], "ingest": ingest, "vectors": vectors})
    service = CentralService(cfg).open()
    service.repair_index()
    rng = np.random.default_rng(1)
    faces = rng.standard_normal((30, DIM)).astype(np.float32)
    i = 0
    while True:  # until killed
        vec = faces[i % 30] + 0.02 * rng.standard_normal(DIM).astype(np.float32)
        service.clusterer.ingest(make_obs(vec, ts=1_800_000_000.0 + 100 * i, track=i))
        i += 1
        print(i, flush=True)
    """
)


@pytest.mark.parametrize("adds", ["ingest", "background"])
def test_kill_9_during_ingest_loses_nothing_committed(tmp_path, adds):
    """Killed while ingesting (prototypes added by the ingest thread, or waiting for the background thread):
    reopened and repaired, the index matches the database (the replayed journal's prototypes wait, searched
    exactly, until the background thread adds them)."""
    data = tmp_path / "central"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), adds],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done < 80 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            done = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done >= 80
    manifest = json.loads((data / "vectors" / "manifest.json").read_text())
    assert manifest["clean"] is False  # it really was killed
    service = CentralService(config(data)).open()
    try:
        assert not service.vectors.was_clean and service.vectors.replayed > 0
        service.repair_index()
        assert_index_matches_database(service)
        with service.session() as s:
            assert int(s.exec(select(func.count()).select_from(Sighting)).one()) >= done
        # and it keeps ingesting on top
        service.clusterer.ingest(make_obs(people(1, 9)[0], track=10_000))
        assert_index_matches_database(service)
    finally:
        service.stop()


def _old_data_dir(data: Path) -> list:
    """A data directory as the previous release wrote it: Qdrant local mode under <data_dir>/qdrant."""
    old = CentralService(config(data, vectors={"engine": "qdrant"})).open()
    faces = people(12, seed=3)
    try:
        results = [
            old.clusterer.ingest(
                make_obs(near(faces[i % 12], i), ts=1_800_000_000.0 + 60 * i, track=i, site=f"s{i % 2}")
            )
            for i in range(36)
        ]
    finally:
        old.stop()
    assert (data / "qdrant" / "collection").is_dir() and not (data / "vectors").exists()
    return results


def test_old_local_mode_data_dir_is_rebuilt_at_start(tmp_path, caplog):
    data = tmp_path / "central"
    results = _old_data_dir(data)
    caplog.set_level(logging.INFO, logger="revisit.central.service")
    service = CentralService(config(data)).open()  # the new default: the embedded engine
    try:
        assert service.config.vector_engine == "embedded" and service.needs_rebuild
        assert "old Qdrant local-mode storage" in caplog.text
        service.repair_index()  # what start() does first
        assert "rebuilt from the database: 36 sightings" in caplog.text
        assert_index_matches_database(service)
        assert len({r.visitor_id for r in results}) == service.vectors.count(REC)
    finally:
        service.stop()
    again = CentralService(config(data)).open()  # the second start needs nothing
    try:
        assert not again.needs_rebuild and again.vectors.was_clean
        assert_index_matches_database(again)
    finally:
        again.stop()


def test_migrate_vectors_command(tmp_path):
    data = tmp_path / "central"
    _old_data_dir(data)
    config_path = tmp_path / "central.toml"
    config_path.write_text(f'data_dir = "{data}"\n[ingest.recognizers]\n"{REC}" = {DIM}\n')
    command = [sys.executable, "-m", "revisit.cli", "central", "migrate-vectors", "--config", str(config_path)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["engine"] == "embedded" and report["sightings"] == 36
    service = CentralService(config(data)).open()
    try:
        assert not service.needs_rebuild
        assert_index_matches_database(service)
    finally:
        service.stop()


def test_an_old_config_with_a_qdrant_path_keeps_local_mode(tmp_path):
    data = tmp_path / "central"
    _old_data_dir(data)
    cfg = config(data, qdrant={"path": str(data / "qdrant")})
    assert cfg.vector_engine == "qdrant"
    service = CentralService(cfg).open()
    try:
        assert not service.needs_rebuild
        service.repair_index()
        assert_index_matches_database(service)
    finally:
        service.stop()

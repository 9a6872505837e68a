"""Retention: crops and sightings past their TTLs are deleted everywhere, counted, visitors recomputed."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as _timezone

from sqlmodel import select

from revisit.central.retention import run_retention
from revisit.central.store import AuditLog, DeadLetter, Sighting, Visit, Visitor
from tests.central.conftest import REC, make_obs, near, people

UTC = _timezone.utc  # datetime.UTC is Python 3.11+

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def ago(days: float) -> float:
    return (NOW - timedelta(days=days)).timestamp()


def test_retention_deletes_everywhere_and_recomputes(make_clusterer):
    c = make_clusterer()
    old_only, mixed = people(2)
    gone = [c.ingest(make_obs(near(old_only, seed=i), ts=ago(400 + i))) for i in range(2)]
    # mixed: one sighting past the sightings TTL (the best one), one past the crops TTL, one fresh
    m_old = c.ingest(make_obs(near(mixed, seed=10), ts=ago(380), quality=0.95))
    m_mid = c.ingest(make_obs(near(mixed, seed=11), ts=ago(40), quality=0.9))
    m_new = c.ingest(make_obs(near(mixed, seed=12), ts=ago(1), quality=0.5))
    assert c.vectors.count(REC, "sightings") == 5 and len(list(c.crops.root.rglob("*.jpg"))) == 5

    report = run_retention(c, crops_days=30, sightings_days=365, now=NOW)
    assert report.sightings_deleted == 3 and report.visitors_deleted == 1 and report.crops_deleted == 1

    assert c.vectors.count(REC, "sightings") == 2 and c.vectors.count(REC) == 1
    assert len(list(c.crops.root.rglob("*.jpg"))) == 1
    with c.store.session() as s:
        assert s.get(Visitor, gone[0].visitor_id) is None
        visitor = s.get(Visitor, m_new.visitor_id)
        assert visitor.sighting_count == 2 and visitor.visit_count == 2
        assert visitor.reference_sighting_id == m_new.sighting_id  # the best photo left with a crop
        assert s.get(Sighting, m_mid.sighting_id).crop_path is None
        assert s.get(Sighting, m_mid.sighting_id).embedding is not None  # embeddings follow the sightings TTL
        assert s.get(Sighting, m_old.sighting_id) is None
        assert len(list(s.exec(select(Visit)))) == 2
        log = s.exec(select(AuditLog).where(AuditLog.action == "retention")).one()
        assert log.details["sightings_deleted"] == 3

    again = run_retention(c, crops_days=30, sightings_days=365, now=NOW)
    assert again.sightings_deleted == again.crops_deleted == 0


def test_dead_letters_follow_the_sightings_ttl(make_clusterer):
    c = make_clusterer()
    with c.store.begin() as s:
        for days, digest in ((400, "a"), (10, "b")):
            s.add(DeadLetter(digest=digest, topic="t", payload=b"x", received_at=NOW - timedelta(days=days)))
    assert run_retention(c, crops_days=30, sightings_days=365, now=NOW).dead_letters_deleted == 1
    with c.store.session() as s:
        assert [d.digest for d in s.exec(select(DeadLetter))] == ["b"]
    assert run_retention(c, crops_days=None, sightings_days=None, now=NOW).dead_letters_deleted == 0


def test_retention_none_keeps_everything(make_clusterer):
    c = make_clusterer()
    c.ingest(make_obs(people(1)[0], ts=ago(5000)))
    report = run_retention(c, crops_days=None, sightings_days=None, now=NOW)
    assert report.sightings_deleted == report.crops_deleted == 0
    assert len(list(c.crops.root.rglob("*.jpg"))) == 1


def test_cli_retention_and_recluster(tmp_path, capsys):
    """`revisit central retention|recluster --config FILE` on a service's data (service stopped)."""
    import json

    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService
    from revisit.cli import main

    config = tmp_path / "central.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[retention]\nsightings_days = 30\n')
    service = CentralService(CentralConfig(data_dir=tmp_path / "data")).open()
    p = people(2)
    for i in range(3):
        service.clusterer.ingest(make_obs(near(p[0], seed=i), ts=ago(100 + i)))
        service.clusterer.ingest(make_obs(near(p[1], seed=9 + i)))
    service.stop()
    assert main(["central", "retention", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sightings_deleted"] == 3
    assert main(["central", "recluster", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["sightings"] == 3 and report["visitors_after"] == 1 and report["kept_ids"] == 1

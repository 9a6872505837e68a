"""The central service: wiring of broker, store, vector index, clusterer, MQTT ingest and the periodic jobs.

`CentralService(config).start()` brings everything up (the embedded broker first when no broker is
configured); `stop()` takes it down in reverse. The web app is built on the accessors: `session()` for
queries, `clusterer` for the manual edits, `crops` for the files, `counters` for metrics, `health()`.
`open()` alone (no MQTT, no background job) is what the offline commands use. The periodic jobs (retention here,
the kiosk's event expiry when the kiosk runs) share one `scheduler`, stopped with the service.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, func, select

from revisit.central.broker import EmbeddedBroker
from revisit.central.clustering import Clusterer, ClusterSettings
from revisit.central.config import CentralConfig
from revisit.central.ingest import Counters, Ingestor, MqttIngest, known_recognizers
from revisit.central.kiosk import models as kiosk_models
from revisit.central.retention import RetentionReport, run_retention
from revisit.central.scheduler import Scheduler
from revisit.central.store import CropStore, Sighting, Store, Visitor, ensure_site
from revisit.central.vectors import Vectors, open_vectors
from revisit.central.vectors.embedded import EmbeddedVectors

log = logging.getLogger(__name__)
# the embedded index's check for graph nodes no search reaches: weekly (~30 min of CPU at 1M)
INDEX_REPAIR_S = 7 * 24 * 3600
REINDEX_WINDOW = timedelta(minutes=10)  # on start, re-upsert what was committed this close to the last write


class CentralService:
    def __init__(self, config: CentralConfig):
        self.config = config
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttIngest | None = None
        self.ingestor: Ingestor | None = None
        self._store: Store | None = None
        self._vectors: Vectors | None = None
        self._clusterer: Clusterer | None = None
        self.scheduler = Scheduler()
        self.needs_rebuild = False  # the vector index must be rebuilt from the database (set by open())
        self.index_clean = False  # the embedded index was closed cleanly: no repair needed at start

    # --- accessors for the web app ---

    @property
    def store(self) -> Store:
        assert self._store is not None, "CentralService.open() first"
        return self._store

    @property
    def vectors(self) -> Vectors:
        assert self._vectors is not None, "CentralService.open() first"
        return self._vectors

    @property
    def clusterer(self) -> Clusterer:
        assert self._clusterer is not None, "CentralService.open() first"
        return self._clusterer

    @property
    def crops(self) -> CropStore:
        assert self.clusterer.crops is not None
        return self.clusterer.crops

    @property
    def counters(self) -> Counters:
        return self.ingestor.counters if self.ingestor else Counters()

    def session(self) -> Session:
        return self.store.session()

    @property
    def broker_address(self) -> tuple[str, int]:
        """Where edges publish: the configured broker, or the embedded one's bound address."""
        if self.config.broker is not None:
            return self.config.broker.host, self.config.broker.port
        port = self.broker.port if self.broker and self.broker.port else self.config.embedded_broker.port
        return self.config.embedded_broker.bind, port

    def health(self) -> dict[str, Any]:
        """MQTT, broker, counters and the ingest pipeline: `store_ok` is False while storing fails (503)."""
        ingestor, mqtt = self.ingestor, self.mqtt
        failing = ingestor.store_failing_since if ingestor else None
        return {
            "mqtt_connected": bool(mqtt and mqtt.connected.is_set()),
            "broker": "{}:{}".format(*self.broker_address),
            "client_id": mqtt.client_id if mqtt else None,
            "counters": self.counters.snapshot(),
            "ingest": {
                "backlog": mqtt.backlog if mqtt else 0,
                "oldest_unstored_s": round(mqtt.oldest_unstored_s(), 3) if mqtt else 0.0,
                "store_ok": failing is None,
                "store_failing_s": round(time.time() - failing, 3) if failing is not None else 0.0,
                "store_errors": self.counters.get("store_errors"),
                "last_store_error": ingestor.last_store_error if ingestor else "",
                "flow_refused": self.counters.get("flow_refused"),
                "flow_refused_messages": self.counters.get("flow_refused_messages"),
                "dead_letters": self.counters.get("dead_letters"),
                "mqtt_disconnects": mqtt.disconnects if mqtt else 0,
            },
        }

    # --- lifecycle ---

    def open(self) -> CentralService:
        """Database, Qdrant and clusterer (no MQTT): enough for recluster, retention and queries."""
        if self._clusterer is not None:
            return self
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self._store = Store(cfg.database)
        self._store.create_all()
        kiosk_models.create_tables(self._store)  # the kiosk's tables, on the same database
        self._vectors = self._open_vectors()
        settings = ClusterSettings(
            threshold=cfg.cluster.threshold,
            scope=cfg.cluster.scope,
            visit_gap=timedelta(minutes=cfg.cluster.visit_gap_min),
            candidates=cfg.cluster.candidates,
            found_min_quality=cfg.cluster.found_min_quality,
            low_quality_threshold=cfg.cluster.low_quality_threshold,
        )
        self._clusterer = Clusterer(self._store, self._vectors, CropStore(cfg.crops_dir), settings)
        self._apply_site_zones()
        return self

    def make_ingestor(self) -> Ingestor:
        """The validating, assigning ingestor of this configuration (the service's, or a backfill's)."""
        cfg = self.open().config
        return Ingestor(
            self.clusterer,
            self.store,
            known_recognizers(cfg.ingest.recognizers),
            max_crop_pixels=cfg.ingest.max_crop_pixels,
            max_past_s=cfg.ingest.max_past_s,
            max_future_s=cfg.ingest.max_future_s,
        )

    def _apply_site_zones(self) -> None:
        """Configured site zones (validated with the configuration) win over ones set on the Sites page."""
        if not self.config.sites:
            return
        with self.store.begin() as s:
            for name, site_cfg in self.config.sites.items():
                ensure_site(s, name).timezone = site_cfg.timezone

    def _open_vectors(self) -> Vectors:
        """The configured engine; says at once what the embedded index needs (migration, replay, rebuild)."""
        cfg = self.config
        api_key = cfg.qdrant.api_key.get_secret_value() if cfg.qdrant.api_key else None
        engine = cfg.vector_engine
        if engine == "qdrant":
            log.info("vector index: Qdrant %s", cfg.qdrant.url or f"local mode at {cfg.qdrant_path}")
            return open_vectors(
                "qdrant", path=cfg.qdrant_path, url=cfg.qdrant.url, api_key=api_key, prefix=cfg.qdrant.prefix
            )
        fresh = not (cfg.vectors_path / "manifest.json").exists()
        vectors = open_vectors(
            "embedded", path=cfg.vectors_path, prefix=cfg.qdrant.prefix, background_adds=cfg.vectors.background_adds
        )
        old = old_local_storage(cfg.data_dir / "qdrant")
        if fresh and old:
            log.warning(
                "vector index: old Qdrant local-mode storage found at %s and no embedded index at %s: the embedded "
                "index is rebuilt from the database at start (`revisit central migrate-vectors` does it offline); "
                "the old directory is left as it was: delete it once the service runs",
                old,
                cfg.vectors_path,
            )
            self.needs_rebuild = True
        elif fresh:
            self.needs_rebuild = True  # a new (or deleted) index over a database that may hold sightings
        elif getattr(vectors, "was_rebuilding", False):
            log.warning("vector index %s: a rebuild was interrupted; rebuilding from the database", cfg.vectors_path)
            self.needs_rebuild = True
        elif not getattr(vectors, "was_clean", True):
            log.warning(
                "vector index %s was not closed cleanly: replayed %d journal records; checking it against the database",
                cfg.vectors_path,
                getattr(vectors, "replayed", 0),
            )
        else:
            log.info("vector index: embedded (usearch) at %s", cfg.vectors_path)
            self.index_clean = True  # closed by a checkpoint: nothing to repair
        return vectors

    def migrate_vectors(self) -> int:
        """Rebuild the vector index from the database's sightings and visitors (and the kiosk's faces)."""
        written = self.clusterer.reindex()
        from revisit.central.kiosk.events import Events

        events = Events.for_service(self)
        try:
            with self.session() as s:
                event_ids = list(s.exec(select(kiosk_models.Event.id)))
            for event_id in event_ids:
                events.reindex(event_id)
        finally:
            events.close()
        self.vectors.checkpoint()
        self.needs_rebuild = False
        return written

    def start(self) -> CentralService:
        self.open()
        cfg = self.config
        self.repair_index()
        if cfg.broker is None:
            emb = cfg.embedded_broker
            self.broker = EmbeddedBroker(emb.bind, emb.port, emb.password_file, central=emb.username)
            self.broker.start()
        self.ingestor = self.make_ingestor()
        b, emb = cfg.broker, cfg.embedded_broker
        host, port = self.broker_address
        self.mqtt = MqttIngest(
            self.ingestor,
            "127.0.0.1" if b is None and host in ("0.0.0.0", "::") else host,
            port,
            client_id=cfg.mqtt_client_id,
            username=b.username if b else emb.username,
            password=_secret(b.password if b else emb.password),
            tls=b.tls if b else None,
            keepalive=b.keepalive_s if b else 30,
            shared_group=b.shared_group if b else None,
            max_inflight=b.max_inflight if b else 20,
            queue_size=cfg.ingest.queue_size,
            batch_size=cfg.ingest.batch_size,
            batch_ms=cfg.ingest.batch_ms,
            app_acks=cfg.ingest.app_acks,
        )
        self.mqtt.start()
        self.scheduler.add("retention", cfg.retention.interval_min * 60, self.run_retention)
        if isinstance(self.vectors, EmbeddedVectors):  # HNSW strands a few nodes now and then: put them back weekly
            self.scheduler.add("index_repair", INDEX_REPAIR_S, self.vectors.repair_graphs, first_in_s=3600)
        self.scheduler.start()
        log.info("central service started: database %s, broker %s:%d", _db_name(cfg.database), *self.broker_address)
        return self

    def stop(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
            self.mqtt = None
        if isinstance(self._vectors, EmbeddedVectors):
            self._vectors.interrupt()  # a running index repair or merge stops at its next step
        self.scheduler.stop()
        self.scheduler.remove("retention")
        self.scheduler.remove("index_repair")
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self._vectors is not None:
            self._vectors.close()
        if self._store is not None:
            self._store.dispose()
        self._store = self._vectors = self._clusterer = None

    def __enter__(self) -> CentralService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- jobs ---

    def run_retention(self) -> RetentionReport:
        r = self.config.retention
        return run_retention(self.clusterer, crops_days=r.crops_days, sightings_days=r.sightings_days)

    def repair_index(self) -> int:
        """Bring the vector index up to the database after a crash: re-upsert recent sightings, or everything
        when the counts still differ (a lost, new or migrated index). Returns the number of sightings written."""
        if self.needs_rebuild:
            written = self.migrate_vectors()
            log.info("vector index rebuilt from the database: %d sightings", written)
            return written
        if self.index_clean:
            return 0
        embedded = col(Sighting.embedding).is_not(None)
        with self.session() as s:
            last = s.exec(select(func.max(Sighting.created_at))).one()
            if last is None:
                return 0
            per_rec = list(
                s.exec(select(Sighting.recognizer_id, func.count()).where(embedded).group_by(Sighting.recognizer_id))
            )
            dims = {
                rec: len(
                    s.exec(select(Sighting.embedding).where(embedded, Sighting.recognizer_id == rec)).first() or b""
                )
                // 4
                for rec, _ in per_rec
            }
            protos = dict(
                s.exec(
                    select(Visitor.recognizer_id, func.count())
                    .where(col(Visitor.proto_sum).is_not(None))
                    .group_by(Visitor.recognizer_id)
                ).all()
            )
        written = self.clusterer.reindex(since=last - REINDEX_WINDOW)
        for rec, n in per_rec:
            self.vectors.ensure(rec, dims[rec])
            have, want = self.vectors.count(rec, "sightings"), self.vectors.count(rec)
            if have != n or want != protos.get(rec, 0):
                log.warning(
                    "the vector index holds %d of %d sightings and %d of %d visitors of %s: rebuilding it "
                    "from the database",
                    have,
                    n,
                    want,
                    protos.get(rec, 0),
                    rec,
                )
                written = self.clusterer.reindex()
                break
        return written


def old_local_storage(path: Path) -> Path | None:
    """`path` when it holds qdrant-client local-mode storage (the embedded default before the usearch engine)."""
    return path if (path / "collection").is_dir() or (path / "meta.json").is_file() else None


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _db_name(url: str) -> str:
    from revisit.central.store import _redact

    return _redact(url)

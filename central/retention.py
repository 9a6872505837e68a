"""Retention: crops, then whole sightings (row, embedding in the database and Qdrant, crop file), deleted
once older than their TTLs; affected visitors are recomputed (prototype, visits, reference) and visitors
left with no sightings are deleted. Dead letters (unstored observations: a crop and an embedding each) follow the
sightings TTL, by their receive time. Each run is counted and written to the audit log."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlmodel import col, delete, select

from revisit.central.clustering import Editor
from revisit.central.store import AuditLog, DeadLetter, Sighting, Visitor, utcnow

log = logging.getLogger(__name__)
BATCH = 1000


@dataclass
class RetentionReport:
    crops_deleted: int = 0
    sightings_deleted: int = 0
    visitors_deleted: int = 0
    visitors_updated: int = 0
    dead_letters_deleted: int = 0


def run_retention(
    clusterer: Editor,
    *,
    crops_days: float | None,
    sightings_days: float | None,
    now: datetime | None = None,
) -> RetentionReport:
    """Apply the TTLs (None keeps forever); ages are measured from a sighting's best-shot time."""
    now = now or utcnow()
    report = RetentionReport()
    store, crops = clusterer.store, clusterer.crops
    if sightings_days is not None:
        cutoff = now - timedelta(days=sightings_days)
        while True:
            with store.session() as s:
                ids = list(s.exec(select(Sighting.id).where(Sighting.best_ts < cutoff).limit(BATCH)))
            if not ids:
                break
            deleted, gone, recomputed = clusterer.erase_sightings(ids)
            report.sightings_deleted += deleted
            report.visitors_deleted += gone
            report.visitors_updated += recomputed
        with store.begin() as s:
            gone = s.exec(delete(DeadLetter).where(col(DeadLetter.received_at) < cutoff))  # type: ignore[call-overload]
            report.dead_letters_deleted = int(gone.rowcount or 0)
    if crops_days is not None:
        cutoff = now - timedelta(days=crops_days)
        touched: set = set()
        while True:
            with clusterer.lock, store.begin() as s:
                rows = list(
                    s.exec(
                        select(Sighting)
                        .where(Sighting.best_ts < cutoff, col(Sighting.crop_path).is_not(None))
                        .limit(BATCH)
                    )
                )
                for row in rows:
                    if crops is not None:
                        crops.delete(row.crop_path)
                    row.crop_path = None
                    touched.add(row.visitor_id)
            report.crops_deleted += len(rows)
            if not rows:
                break
        with clusterer.lock, store.begin() as s:  # the reference photo must be one that still exists
            for visitor in s.exec(select(Visitor).where(col(Visitor.id).in_(list(touched)))):
                ref = s.get(Sighting, visitor.reference_sighting_id) if visitor.reference_sighting_id else None
                if ref is None or ref.crop_path is None:
                    best = s.exec(
                        select(Sighting)
                        .where(Sighting.visitor_id == visitor.id, col(Sighting.crop_path).is_not(None))
                        .order_by(col(Sighting.quality).desc())
                    ).first()
                    visitor.reference_sighting_id = best.id if best else visitor.reference_sighting_id
                    visitor.reference_quality = best.quality if best else -1.0
                    report.visitors_updated += 1
    if report.crops_deleted or report.sightings_deleted or report.dead_letters_deleted:
        with store.begin() as s:
            s.add(AuditLog(actor="retention", action="retention", details=asdict(report)))
        log.info("retention: %s", report)
    return report

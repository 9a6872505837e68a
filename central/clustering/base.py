"""What the clustering stages share: settings, the stored prototype and embedding, and a visitor's upkeep.

A visitor's prototype is the normalised quality-weighted mean of its members (`Prototype`); its running sum and
weight are kept in the visitor row (`visitor_prototype`, `save_prototype`) so each sighting updates it
incrementally, and its direction is the visitor's point in the vector index (`ClusterBase._sync_visitor`).
`recompute` rebuilds a visitor (prototype, counts, reference, visits) from its sightings after an edit or a
rebuild. Visits: a visitor's sightings at one site closer than the visit gap are one visit (`sessionise`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from revisit.central.store import CropStore, Sighting, Site, Store, Visit, Visitor
from revisit.central.vectors import Vectors
from revisit.shared.assign import DEFAULT_THRESHOLD, Prototype
from revisit.shared.errors import NotFound, RevisitError

log = logging.getLogger(__name__)
Scope = Literal["all", "site"]


class ClusterError(RevisitError):
    """A manual edit that cannot be done (unknown ids, mixed visitors, different recognizers)."""


class UnknownId(ClusterError, NotFound):
    """No visitor or sighting with that id (404 on the web)."""


@dataclass(frozen=True)
class ClusterSettings:
    threshold: float = DEFAULT_THRESHOLD
    scope: Scope = "all"
    visit_gap: timedelta = timedelta(minutes=30)
    candidates: int = 8
    found_min_quality: float = 0.0  # below this a face never founds a visitor: it joins one or waits unassigned
    low_quality_threshold: float | None = None  # the cosine such a face needs to join ("clearly"); None: threshold

    def join_threshold(self, quality: float) -> float:
        if quality < self.found_min_quality and self.low_quality_threshold is not None:
            return max(self.threshold, self.low_quality_threshold)
        return self.threshold


def sessionise(spans: Sequence[tuple[datetime, datetime]], gap: timedelta) -> list[list[int]]:
    """Indices of `spans` ([start, end] of sightings at one site) grouped into visits, in time order."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], spans[i][1]))
    visits: list[list[int]] = []
    end: datetime | None = None
    for i in order:
        start, stop = spans[i]
        if end is None or start > end + gap:
            visits.append([i])
            end = stop
        else:
            visits[-1].append(i)
            end = max(end, stop)
    return visits


def visitor_prototype(visitor: Visitor, dim: int) -> Prototype:
    """The prototype kept in a visitor's row (empty when it has none yet)."""
    if not visitor.proto_sum:
        return Prototype(np.zeros(dim, dtype=np.float64))
    return Prototype.from_bytes(visitor.proto_sum, visitor.proto_weight, visitor.sighting_count)


def save_prototype(visitor: Visitor, proto: Prototype) -> None:
    visitor.proto_sum = proto.to_bytes()
    visitor.proto_weight = float(proto.weight)


def sighting_vector(embedding: bytes) -> np.ndarray:
    """A stored embedding (`Sighting.embedding`: little-endian float32, as on the wire)."""
    return np.frombuffer(embedding, dtype="<f4")


@dataclass
class ClusterBase:
    """The database, the vector index, crops and settings, and one lock for every change to them. The stages
    (`Assigner`, `Editor`, `Rebuilder`) extend it; `Clusterer` is all three on one lock."""

    store: Store
    vectors: Vectors
    crops: CropStore | None = None
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _site_names: dict[uuid.UUID, str] = field(default_factory=dict)

    def recompute(self, s: Session, visitor: Visitor) -> bool:
        """Rebuild a visitor's prototype, counts, reference and visits from its sightings; False if it has none
        (the visitor row is then deleted)."""
        members = list(s.exec(select(Sighting).where(Sighting.visitor_id == visitor.id)))
        own_visits = select(Visit.id).where(Visit.visitor_id == visitor.id)
        s.exec(update(Sighting).where(col(Sighting.visit_id).in_(own_visits)).values(visit_id=None))
        s.exec(delete(Visit).where(col(Visit.visitor_id) == visitor.id))
        if not members:
            s.delete(visitor)
            s.flush()
            return False
        proto: Prototype | None = None
        for m in members:
            if m.embedding is None:
                continue
            vec = sighting_vector(m.embedding)
            if proto is None:
                proto = Prototype(np.zeros(len(vec), dtype=np.float64))
            proto.add(vec, m.quality)
        if proto is not None:
            save_prototype(visitor, proto)
        visitor.sighting_count = len(members)
        visitor.first_seen = min(m.first_ts for m in members)
        visitor.last_seen = max(m.last_ts for m in members)
        best = max(members, key=lambda m: (m.crop_path is not None, m.quality))
        visitor.reference_sighting_id = best.id
        visitor.reference_quality = best.quality if best.crop_path else -1.0
        by_site: dict[uuid.UUID, list[Sighting]] = defaultdict(list)
        for m in members:
            by_site[m.site_id].append(m)
        visits = 0
        for site_id, rows in by_site.items():
            for group in sessionise([(r.first_ts, r.last_ts) for r in rows], self.settings.visit_gap):
                picked = [rows[i] for i in group]
                visit = Visit(
                    visitor_id=visitor.id,
                    site_id=site_id,
                    start=min(r.first_ts for r in picked),
                    end=max(r.last_ts for r in picked),
                    sighting_count=len(picked),
                )
                s.add(visit)
                s.flush()
                for r in picked:
                    r.visit_id = visit.id
                visits += 1
        visitor.visit_count = visits
        s.flush()
        return True

    def _sync_visitor(self, visitor: Visitor, alive: bool) -> None:
        """Push a recomputed visitor's prototype (or its removal) to Qdrant (after commit)."""
        rec = visitor.recognizer_id
        if not alive or not visitor.proto_sum or visitor.unassigned:
            self.vectors.delete_prototypes(rec, [visitor.id])
            return
        vec = Prototype.from_bytes(visitor.proto_sum).vector
        self.vectors.ensure(rec, len(vec))
        self.vectors.upsert_prototypes(rec, [(visitor.id, vec, self._site_name(visitor.site_id))])

    def _site_name(self, site_id: uuid.UUID | None) -> str:
        """Site names by id, cached (sites are never renamed); reads in a session of its own."""
        if site_id is None:
            return ""
        if site_id not in self._site_names:
            with self.store.session() as s:
                site = s.get(Site, site_id)
            self._site_names[site_id] = site.name if site else ""
        return self._site_names[site_id]

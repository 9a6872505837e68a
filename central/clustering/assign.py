"""Recurrence clustering: which visitor is this observation? Plus the manual edits and offline `recluster`.

One rule everywhere (`revisit.shared.assign`): the nearest visitor prototype (cosine) is joined when it is
at least the threshold and no cannot-link forbids it, else a new anonymous visitor starts. A prototype is
the normalised quality-weighted mean of the visitor's members (`Prototype`); its running sum and weight are
kept in the visitor row so each sighting updates it incrementally, and its direction is the visitor's point
in Qdrant. The search is limited to the observation's site when the scope is "site", and always to the
observation's recognizer (each recognizer has its own collections).

Cannot-links: tracks of the same camera seen in the same frames (the observation's `co_tracks`, and earlier
sightings that listed this track) are different people; "not this person" and splits add more. Must-links:
merges and splits. Both are stored between sightings so `recluster` (a fresh pass over every stored
embedding in time order) rebuilds visitors that keep the manual edits; visitors keep their ids, labels
and notes where most of their sightings land.

Visits: a visitor's sightings at one site closer than the visit gap are one visit; `visit_count` counts
visits, not sightings. The reference sighting is the best-quality one that still has a crop.

Ordering: the database commits first, then Qdrant is updated. A crash in between leaves Qdrant behind the
database; `reindex(since)` (run by the service at start) re-upserts recent points from the database.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, func, select

from revisit.central.store import (
    VISITOR_STATUSES,
    AuditLog,
    CannotLink,
    CropStore,
    MustLink,
    Sighting,
    SightingFlag,
    Site,
    Store,
    Visit,
    Visitor,
    ensure_camera,
    ensure_device,
    ensure_site,
    from_epoch,
    pair,
    utcnow,
)
from revisit.central.vectors import SightingPoint, Vectors
from revisit.shared.assign import DEFAULT_THRESHOLD, Prototype, PrototypeTable, decide, member_weight
from revisit.shared.errors import RevisitError
from revisit.shared.schema import Observation

log = logging.getLogger(__name__)
Scope = Literal["all", "site"]
CHUNK = 2000  # rows per chunk when streaming sightings (reindex, recluster)
MAX_FEEDBACK_LINKS = 200  # "not this person": links to at most this many of the visitor's best sightings


class ClusterError(RevisitError):
    """A manual edit that cannot be done (unknown ids, mixed visitors, different recognizers)."""


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


@dataclass(frozen=True)
class Assignment:
    sighting_id: uuid.UUID
    visitor_id: uuid.UUID
    visit_id: uuid.UUID | None
    created: bool  # a new visitor was started
    duplicate: bool  # the observation was already stored: nothing changed
    score: float  # cosine to the best allowed prototype (-1 when there was none)
    unassigned: bool = False  # a low-quality face that matched nobody: held apart, founding nothing


@dataclass(frozen=True)
class SightingNote:
    """Stored beside a sighting (`SightingFlag`): `clock_skew` (times stamped at receipt) or `backfill`."""

    kind: Literal["clock_skew", "backfill"]
    device_ts: float  # the edge's best_ts
    received_at: datetime


# Prototypes changed by a batch not yet upserted: recognizer -> visitor id -> (unit vector, site name).
Overlay = dict[str, dict[uuid.UUID, tuple[np.ndarray, str]]]


@dataclass
class ReclusterReport:
    sightings: int = 0
    visitors_before: int = 0
    visitors_after: int = 0
    kept_ids: int = 0
    must_links: int = 0
    cannot_links: int = 0


# --- pure decisions -----------------------------------------------------------------------------------------


def choose(
    candidates: Sequence[tuple[uuid.UUID, float]], threshold: float, forbidden: Iterable[uuid.UUID] = ()
) -> tuple[uuid.UUID | None, float]:
    """`decide` on (visitor id, cosine) candidates: the visitor to join, or None and the best allowed score."""
    index = {vid: i for i, (vid, _) in enumerate(candidates)}
    banned = [index[v] for v in forbidden if v in index]
    best, score = decide(((i, s) for i, (_, s) in enumerate(candidates)), threshold, banned)
    return (None if best is None else candidates[best][0]), score


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


def cluster_offline(
    vectors: Iterable[np.ndarray],
    qualities: Sequence[float],
    threshold: float,
    *,
    scopes: Sequence[str] | None = None,
    must: Sequence[Sequence[int]] = (),
    cannot: Iterable[tuple[int, int]] = (),
    found_min_quality: float = 0.0,
    low_quality_threshold: float | None = None,
) -> list[int]:
    """Cluster rows in order with the assignment rule; returns a cluster index per row.

    `vectors` may be a stream (one row at a time, e.g. from the database in chunks): only the clusters' sums
    are held, one row per cluster. `scopes`: rows only join clusters of their own scope key. `must`: groups
    of rows that share a cluster (the first to arrive decides it; a person's edit wins over the threshold).
    `cannot`: row pairs that never share a cluster through the rule. A row below `found_min_quality` joins only
    at `low_quality_threshold` (when set) and, joining nothing, founds no cluster: its label is -1 (unassigned),
    unless a must-link group holds it.
    """
    n = len(qualities)
    group_of = list(range(n))
    for members in must:
        for m in members:
            group_of[m] = members[0]
    banned: dict[int, set[int]] = defaultdict(set)
    for a, b in cannot:
        banned[group_of[a]].add(b)
        banned[group_of[b]].add(a)
    label = [-1] * n
    group_size = Counter(group_of)
    group_label: dict[int, int] = {}
    home: list[tuple[str, int]] = []  # cluster -> (its scope, its row there)
    tables: dict[str, PrototypeTable] = {}
    for i, raw in enumerate(vectors):
        vec = np.asarray(raw, dtype=np.float32)
        weight = member_weight(qualities[i])
        key = scopes[i] if scopes is not None else ""
        table = tables.get(key)
        if table is None:
            table = tables[key] = PrototypeTable(len(vec))
        g = group_of[i]
        cluster = group_label.get(g)
        if cluster is None:
            forbidden = {label[j] for j in banned[g] if label[j] >= 0}
            poor = qualities[i] < found_min_quality and low_quality_threshold is not None
            need = max(threshold, low_quality_threshold) if poor else threshold  # type: ignore[type-var]
            row = table.best(vec, forbidden, need)
            cluster = None if row is None else table.clusters[row]
            if cluster is None and qualities[i] < found_min_quality and group_size[g] == 1:
                continue  # label stays -1
        if cluster is None:
            cluster = len(home)
            home.append((key, table.append(cluster, vec, weight)))
        else:  # a must-link group may span scopes: update the table the cluster lives in
            where, row = home[cluster]
            tables[where].add(row, vec, weight)
        label[i] = cluster
        group_label.setdefault(g, cluster)
    return label


# --- the clusterer ------------------------------------------------------------------------------------------


def _proto(visitor: Visitor, dim: int) -> Prototype:
    if not visitor.proto_sum:
        return Prototype(np.zeros(dim, dtype=np.float64))
    return Prototype(np.frombuffer(visitor.proto_sum, dtype=np.float64).copy(), visitor.proto_weight,
                     visitor.sighting_count)  # fmt: skip


def _save_proto(visitor: Visitor, proto: Prototype) -> None:
    visitor.proto_sum = np.asarray(proto.total, dtype=np.float64).tobytes()
    visitor.proto_weight = float(proto.weight)


def _vector(sighting: Sighting) -> np.ndarray | None:
    return None if sighting.embedding is None else np.frombuffer(sighting.embedding, dtype="<f4")


@dataclass
class Clusterer:
    store: Store
    vectors: Vectors
    crops: CropStore | None = None
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _site_names: dict[uuid.UUID, str] = field(default_factory=dict)

    # --- ingest ---

    def ingest(self, obs: Observation, save_crop: bool = True) -> Assignment:
        """Store one observation as a sighting of a known or new visitor. Idempotent by observation id."""
        return self.ingest_batch([obs], save_crop=save_crop)[0]

    def ingest_batch(
        self, observations: Sequence[Observation], notes: Sequence[SightingNote | None] | None = None,
        save_crop: bool = True,
    ) -> list[Assignment]:  # fmt: skip
        """`ingest` for several observations in order, in one database transaction and one vector upsert per
        recognizer. Each is assigned exactly as `ingest` would one after the other: the prototypes the batch
        changed are kept aside (`Overlay`) and searched together with the index. On an error nothing is committed
        (the crops saved are deleted) and the exception is raised. `notes`: flags stored beside the sightings."""
        if not observations:
            return []
        notes = list(notes) if notes is not None else [None] * len(observations)
        with self.lock:
            for obs in observations:
                self.vectors.ensure(obs.recognizer_id, obs.embedding_dim)
            overlay: Overlay = defaultdict(dict)
            points: dict[str, dict[uuid.UUID, SightingPoint]] = defaultdict(dict)
            saved: list[str] = []
            results: list[Assignment] = []
            try:
                with self.store.begin() as s:
                    for obs, note in zip(observations, notes, strict=True):
                        results.append(self._ingest_in(s, obs, note, overlay, points, saved, save_crop))
            except BaseException:
                if self.crops is not None:
                    for path in saved:
                        self.crops.delete(path)
                raise
            for rec, pts in points.items():
                self.vectors.upsert_sightings(rec, list(pts.values()))
            for rec, protos in overlay.items():
                self.vectors.upsert_prototypes(rec, [(vid, vec, site) for vid, (vec, site) in protos.items()])
            return results

    def _ingest_in(
        self,
        s: Session,
        obs: Observation,
        note: SightingNote | None,
        overlay: Overlay,
        points: dict[str, dict[uuid.UUID, SightingPoint]],
        saved: list[str],
        save_crop: bool,
    ) -> Assignment:
        """One observation of a batch inside its session; the vector writes are collected, not made."""
        vec = obs.vector().astype(np.float32)
        rec = obs.recognizer_id
        found = s.exec(select(Sighting).where(Sighting.observation_id == uuid.UUID(obs.observation_id))).first()
        if found is not None:  # a resend: its points are upserted again (mends an index left behind)
            site_row, owner = s.get(Site, found.site_id), s.get(Visitor, found.visitor_id)
            if site_row is not None and owner is not None:
                points[rec][found.id] = SightingPoint(found.id, vec, owner.id, site_row.name, obs.best_ts)
                if owner.id not in overlay[rec] and not owner.unassigned:
                    overlay[rec][owner.id] = (_proto(owner, obs.embedding_dim).vector, site_row.name)
            return Assignment(found.id, found.visitor_id, found.visit_id, False, True, 1.0)
        site = ensure_site(s, obs.site)
        device = ensure_device(s, site, obs.device)
        camera = ensure_camera(s, site, device, obs.camera)
        first, last, best = from_epoch(obs.first_ts), from_epoch(obs.last_ts), from_epoch(obs.best_ts)
        device.last_seen = camera.last_seen = utcnow()
        device.observations += 1
        co = self._co_track_sightings(s, obs, camera.id, first, last)
        visitor, created, score = self._pick(s, obs, vec, site, {c.visitor_id for c in co}, overlay)
        held = visitor.unassigned
        crop_path: str | None = None
        if save_crop and self.crops is not None:
            crop_path = self.crops.save(obs.crop_jpeg)
            saved.append(crop_path)
        sighting = Sighting(
            observation_id=uuid.UUID(obs.observation_id), visitor_id=visitor.id, site_id=site.id,
            device_id=device.id, camera_id=camera.id, track_id=obs.track_id, first_ts=first,
            last_ts=last, best_ts=best, quality=obs.quality.score, det_score=obs.det_score,
            box=list(obs.box), frame_size=list(obs.frame_size), co_tracks=list(obs.co_tracks),
            crop_path=crop_path, recognizer_id=obs.recognizer_id, embedding=obs.embedding,
        )  # fmt: skip
        s.add(sighting)
        s.flush()
        if note is not None:
            s.add(SightingFlag(sighting_id=sighting.id, kind=note.kind, device_ts=note.device_ts,
                               received_at=note.received_at))  # fmt: skip
        for other in co:
            a, b = pair(sighting.id, other.id)
            s.add(CannotLink(a_id=a, b_id=b, reason="co_track"))
        proto = _proto(visitor, obs.embedding_dim)
        proto.add(vec, obs.quality.score)
        _save_proto(visitor, proto)
        visitor.sighting_count += 1
        visitor.first_seen = min(visitor.first_seen, first)
        visitor.last_seen = max(visitor.last_seen, last)
        if crop_path and sighting.quality > visitor.reference_quality:
            visitor.reference_sighting_id, visitor.reference_quality = sighting.id, sighting.quality
        visit = self._add_to_visit(s, visitor.id, site.id, sighting)
        s.flush()
        visitor.visit_count = self._count_visits(s, visitor.id)
        points[rec][sighting.id] = SightingPoint(sighting.id, vec, visitor.id, site.name, obs.best_ts)
        if not held:  # a held sighting has no prototype: nothing can join it
            overlay[rec][visitor.id] = (proto.vector, site.name)
        return Assignment(sighting.id, visitor.id, visit.id, created, False, score, held)

    def _pick(
        self,
        s: Session,
        obs: Observation,
        vec: np.ndarray,
        site: Site,
        forbidden: set[uuid.UUID],
        overlay: Overlay | None = None,
    ) -> tuple[Visitor, bool, float]:
        """The visitor to join (locked for update) or a new one; stale index entries are dropped. `overlay`: the
        prototypes a batch changed so far, which take the place of the index's (not yet upserted) ones."""
        scope_site = site.name if self.settings.scope == "site" else None
        limit = self.settings.candidates + len(forbidden)
        pending = (overlay or {}).get(obs.recognizer_id, {})
        candidates = self.vectors.search_prototypes(
            obs.recognizer_id, vec, limit + len(pending), scope_site, floor=self.settings.threshold
        )
        if pending:
            scores = {vid: score for vid, score in candidates if vid not in pending}
            for vid, (proto, proto_site) in pending.items():
                if scope_site is None or proto_site == scope_site:
                    scores[vid] = float(np.dot(proto, vec))
            candidates = sorted(scores.items(), key=lambda kv: -kv[1])[:limit]
        while True:
            chosen, score = choose(candidates, self.settings.join_threshold(obs.quality.score), forbidden)
            if chosen is None:
                break
            visitor = s.get(Visitor, chosen, with_for_update=True)
            if visitor is not None and visitor.recognizer_id == obs.recognizer_id:
                return visitor, False, score
            log.warning("prototype of missing visitor %s in the index: removed", chosen)
            self.vectors.delete_prototypes(obs.recognizer_id, [chosen])
            forbidden = forbidden | {chosen}
        first = from_epoch(obs.first_ts)
        visitor = Visitor(
            recognizer_id=obs.recognizer_id, site_id=site.id, first_seen=first, last_seen=from_epoch(obs.last_ts),
            unassigned=obs.quality.score < self.settings.found_min_quality,
        )  # fmt: skip
        s.add(visitor)
        s.flush()  # no ORM relationships: insert the visitor before its sighting
        return visitor, True, score

    def _co_track_sightings(
        self, s: Session, obs: Observation, camera_id: uuid.UUID, first: datetime, last: datetime
    ) -> list[Sighting]:
        """Stored sightings of this camera's other tracks in the same frames: different people."""
        overlapping = s.exec(
            select(Sighting)
            .where(Sighting.camera_id == camera_id, Sighting.first_ts <= last)
            .where(Sighting.last_ts >= first)
        ).all()
        return [
            x for x in overlapping
            if x.track_id != obs.track_id and (x.track_id in obs.co_tracks or obs.track_id in (x.co_tracks or []))
        ]  # fmt: skip

    def _add_to_visit(self, s: Session, visitor_id: uuid.UUID, site_id: uuid.UUID, sighting: Sighting) -> Visit:
        """Extend the visit this sighting falls in (merging visits it bridges), or start one."""
        gap = self.settings.visit_gap
        near = list(
            s.exec(
                select(Visit)
                .where(Visit.visitor_id == visitor_id, Visit.site_id == site_id)
                .where(Visit.start <= sighting.last_ts + gap, Visit.end >= sighting.first_ts - gap)
                .order_by(Visit.start)
            )
        )
        if not near:
            visit = Visit(visitor_id=visitor_id, site_id=site_id, start=sighting.first_ts, end=sighting.last_ts)
            s.add(visit)
        else:
            visit = near[0]
            for other in near[1:]:
                s.exec(update(Sighting).where(col(Sighting.visit_id) == other.id).values(visit_id=visit.id))
                visit.start, visit.end = min(visit.start, other.start), max(visit.end, other.end)
                visit.sighting_count += other.sighting_count
                s.delete(other)
            visit.start, visit.end = min(visit.start, sighting.first_ts), max(visit.end, sighting.last_ts)
        visit.sighting_count += 1
        s.flush()
        sighting.visit_id = visit.id
        return visit

    def unassigned_count(self) -> int:
        """Low-quality sightings waiting unassigned (each held by an `unassigned` visitor row)."""
        with self.store.session() as s:
            return int(s.exec(select(func.count()).select_from(Visitor).where(col(Visitor.unassigned).is_(True))).one())

    @staticmethod
    def _count_visits(s: Session, visitor_id: uuid.UUID) -> int:
        return int(s.exec(select(func.count()).select_from(Visit).where(Visit.visitor_id == visitor_id)).one())

    # --- recomputation ---

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
            vec = _vector(m)
            if vec is None:
                continue
            if proto is None:
                proto = Prototype(np.zeros(len(vec), dtype=np.float64))
            proto.add(vec, m.quality)
        if proto is not None:
            _save_proto(visitor, proto)
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
                visit = Visit(visitor_id=visitor.id, site_id=site_id, start=min(r.first_ts for r in picked),
                              end=max(r.last_ts for r in picked), sighting_count=len(picked))  # fmt: skip
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
        vec = Prototype(np.frombuffer(visitor.proto_sum, dtype=np.float64)).vector
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

    # --- manual edits (the visitor page) ---

    def update_visitor(self, visitor_id: uuid.UUID, *, label: str | None = None, notes: str | None = None) -> Visitor:
        with self.lock, self.store.begin() as s:
            visitor = self._get(s, visitor_id)
            if label is not None:
                visitor.label = label.strip()[:200]
            if notes is not None:
                visitor.notes = notes[:10_000]
            return visitor

    def set_status(self, visitor_ids: list[uuid.UUID], status: str, actor: str = "") -> int:
        """Mark visitors as customer, staff or excluded (reversible; audit-logged per visitor). Their sightings
        still attach to them; queries leave staff and excluded visitors out. Returns how many changed."""
        if status not in VISITOR_STATUSES:
            raise ClusterError(f"unknown visitor status {status!r} (one of {', '.join(VISITOR_STATUSES)})")
        changed = 0
        with self.lock, self.store.begin() as s:
            for visitor_id in dict.fromkeys(visitor_ids):
                visitor = self._get(s, visitor_id)
                if visitor.status == status:
                    continue
                details = {"from": visitor.status, "to": status}
                visitor.status = status
                s.add(AuditLog(actor=actor, action="status", visitor_id=visitor.id, details=details))
                changed += 1
        return changed

    def merge(self, visitor_a: uuid.UUID, visitor_b: uuid.UUID, actor: str = "") -> Visitor:
        """Merge visitor_b into visitor_a (a keeps its id; an empty label or notes is taken from b)."""
        if visitor_a == visitor_b:
            raise ClusterError("cannot merge a visitor with itself")
        with self.lock:
            with self.store.begin() as s:
                a, b = self._get(s, visitor_a), self._get(s, visitor_b)
                if a.recognizer_id != b.recognizer_id:
                    raise ClusterError(
                        f"visitors {a.id} and {b.id} come from different recognizers "
                        f"({a.recognizer_id}, {b.recognizer_id}); they cannot be compared or merged"
                    )
                ids_a = set(s.exec(select(Sighting.id).where(Sighting.visitor_id == a.id)))
                ids_b = list(s.exec(select(Sighting.id).where(Sighting.visitor_id == b.id)))
                if ids_a and ids_b:  # a person's merge overrides earlier "different people" links
                    s.exec(delete(CannotLink).where(
                        or_(col(CannotLink.a_id).in_(ids_a) & col(CannotLink.b_id).in_(ids_b),
                            col(CannotLink.a_id).in_(ids_b) & col(CannotLink.b_id).in_(ids_a))))  # fmt: skip
                    # pin the merged membership: every member linked to one anchor, so recluster keeps it
                    anchor = a.reference_sighting_id if a.reference_sighting_id in ids_a else next(iter(ids_a))
                    for other in [*ids_a, *ids_b]:
                        self._link(s, MustLink, anchor, other, "merge")
                s.exec(update(Sighting).where(col(Sighting.visitor_id) == b.id).values(visitor_id=a.id, visit_id=None))
                a.unassigned = False  # a person placed a held sighting: it is a visitor now
                a.label = a.label or b.label
                a.notes = "\n".join(n for n in (a.notes, b.notes) if n)[:10_000]
                a.first_seen = min(a.first_seen, b.first_seen)
                s.exec(delete(Visit).where(col(Visit.visitor_id) == b.id))
                s.delete(b)
                s.flush()
                self.recompute(s, a)
                s.add(AuditLog(actor=actor, action="merge", visitor_id=a.id,
                               details={"merged": str(b.id), "sightings": len(ids_b)}))  # fmt: skip
            self.vectors.set_sighting_visitor(a.recognizer_id, ids_b, a.id)
            self.vectors.delete_prototypes(a.recognizer_id, [b.id])
            self._sync_visitor(a, True)
            return a

    def split(self, sighting_ids: Sequence[uuid.UUID], actor: str = "") -> Visitor:
        """Move these sightings (all of one visitor, not all of them) to a new visitor."""
        if not sighting_ids:
            raise ClusterError("split: no sightings selected")
        with self.lock:
            with self.store.begin() as s:
                rows = [self._get_sighting(s, i) for i in dict.fromkeys(sighting_ids)]
                owners = {r.visitor_id for r in rows}
                if len(owners) != 1:
                    raise ClusterError("split: the sightings belong to different visitors")
                old = self._get(s, owners.pop())
                rest = list(s.exec(select(Sighting).where(Sighting.visitor_id == old.id,
                                                          col(Sighting.id).not_in([r.id for r in rows]))))  # fmt: skip
                if not rest:
                    raise ClusterError("split: that is every sighting of the visitor; nothing would be left")
                moved, kept = [r.id for r in rows], [r.id for r in rest]
                s.exec(delete(MustLink).where(  # a split overrides an earlier merge of these sightings
                    or_(col(MustLink.a_id).in_(moved) & col(MustLink.b_id).in_(kept),
                        col(MustLink.a_id).in_(kept) & col(MustLink.b_id).in_(moved))))  # fmt: skip
                new = self._new_visitor_for(s, old, rows)
                anchor = max(rows, key=lambda r: r.quality)
                for r in rows:
                    if r.id != anchor.id:
                        self._link(s, MustLink, anchor.id, r.id, "split")
                self._link(s, CannotLink, anchor.id, max(rest, key=lambda r: r.quality).id, "split")
                self.recompute(s, old)
                self.recompute(s, new)
                s.add(AuditLog(actor=actor, action="split", visitor_id=old.id,
                               details={"new_visitor": str(new.id), "sightings": len(rows)}))  # fmt: skip
            self.vectors.set_sighting_visitor(old.recognizer_id, [r.id for r in rows], new.id)
            self._sync_visitor(old, True)
            self._sync_visitor(new, True)
            return new

    def not_this_person(self, sighting_id: uuid.UUID, actor: str = "") -> Visitor:
        """This sighting is not the visitor it was given to: it becomes a new visitor, and never rejoins."""
        with self.lock:
            with self.store.begin() as s:
                row = self._get_sighting(s, sighting_id)
                old = self._get(s, row.visitor_id)
                rest = list(s.exec(
                    select(Sighting).where(Sighting.visitor_id == old.id, Sighting.id != row.id)
                    .order_by(col(Sighting.quality).desc()).limit(MAX_FEEDBACK_LINKS)
                ))  # fmt: skip
                if not rest:
                    raise ClusterError("not this person: it is the visitor's only sighting")
                s.exec(delete(MustLink).where(or_(MustLink.a_id == row.id, MustLink.b_id == row.id)))
                for other in rest:
                    self._link(s, CannotLink, row.id, other.id, "not_this_person")
                new = self._new_visitor_for(s, old, [row])
                self.recompute(s, old)
                self.recompute(s, new)
                s.add(AuditLog(actor=actor, action="not_this_person", visitor_id=old.id,
                               details={"sighting": str(row.id), "new_visitor": str(new.id)}))  # fmt: skip
            self.vectors.set_sighting_visitor(old.recognizer_id, [row.id], new.id)
            self._sync_visitor(old, True)
            self._sync_visitor(new, True)
            return new

    def erase_visitor(self, visitor_id: uuid.UUID, actor: str = "", reason: str = "") -> dict[str, int]:
        """Delete a visitor everywhere: crops, vectors, sightings, visits, links; write an audit row."""
        with self.lock:
            with self.store.begin() as s:
                visitor = self._get(s, visitor_id)
                rec = visitor.recognizer_id
                sightings = list(s.exec(select(Sighting).where(Sighting.visitor_id == visitor.id)))
                ids = [x.id for x in sightings]
                crops = [x.crop_path for x in sightings if x.crop_path]
                self._delete_sightings(s, ids)
                visits = s.exec(delete(Visit).where(col(Visit.visitor_id) == visitor.id)).rowcount
                s.delete(visitor)
                counts = {"sightings": len(ids), "crops": len(crops), "visits": int(visits or 0)}
                s.add(AuditLog(actor=actor, action="erase", visitor_id=visitor_id,
                               details={**counts, "reason": reason[:500]}))  # fmt: skip
            self.vectors.delete_sightings(rec, ids)
            self.vectors.delete_prototypes(rec, [visitor_id])
            counts["crops"] = sum(self.crops.delete(c) for c in crops) if self.crops else 0
            return counts

    def erase_sightings(self, sighting_ids: Sequence[uuid.UUID]) -> tuple[int, int, int]:
        """Delete sightings everywhere and recompute their visitors.

        Returns (sightings deleted, visitors deleted because none was left, visitors recomputed)."""
        with self.lock:
            with self.store.begin() as s:
                rows = list(s.exec(select(Sighting).where(col(Sighting.id).in_(list(sighting_ids)))))
                owners = {r.visitor_id for r in rows}
                self._delete_sightings(s, [r.id for r in rows])
                touched = [(v, self.recompute(s, v)) for v in (s.get(Visitor, o) for o in owners) if v is not None]
            by_rec: dict[str, list[uuid.UUID]] = defaultdict(list)
            for r in rows:
                by_rec[r.recognizer_id].append(r.id)
            for rec, ids in by_rec.items():
                self.vectors.delete_sightings(rec, ids)
            for visitor, alive in touched:
                self._sync_visitor(visitor, alive)
            if self.crops is not None:
                for r in rows:
                    self.crops.delete(r.crop_path)
            gone = sum(not alive for _, alive in touched)
            return len(rows), gone, len(touched) - gone

    @staticmethod
    def _delete_sightings(s: Session, ids: list[uuid.UUID]) -> None:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for link in (CannotLink, MustLink):
                s.exec(delete(link).where(or_(col(link.a_id).in_(chunk), col(link.b_id).in_(chunk))))
            s.exec(delete(Sighting).where(col(Sighting.id).in_(chunk)))

    def _new_visitor_for(self, s: Session, old: Visitor, rows: list[Sighting]) -> Visitor:
        new = Visitor(recognizer_id=old.recognizer_id, site_id=rows[0].site_id, status=old.status,
                      first_seen=min(r.first_ts for r in rows), last_seen=max(r.last_ts for r in rows))  # fmt: skip
        s.add(new)
        s.flush()
        moved = col(Sighting.id).in_([r.id for r in rows])
        s.exec(update(Sighting).where(moved).values(visitor_id=new.id, visit_id=None))
        for r in rows:
            r.visitor_id = new.id
        return new

    @staticmethod
    def _link(s: Session, model: type[CannotLink] | type[MustLink], x: uuid.UUID, y: uuid.UUID, reason: str) -> None:
        a, b = pair(x, y)
        if a != b and s.exec(select(model).where(model.a_id == a, model.b_id == b)).first() is None:
            s.add(model(a_id=a, b_id=b, reason=reason))

    @staticmethod
    def _get(s: Session, visitor_id: uuid.UUID) -> Visitor:
        visitor = s.get(Visitor, visitor_id, with_for_update=True)
        if visitor is None:
            raise ClusterError(f"no visitor {visitor_id}")
        return visitor

    @staticmethod
    def _get_sighting(s: Session, sighting_id: uuid.UUID) -> Sighting:
        row = s.get(Sighting, sighting_id)
        if row is None:
            raise ClusterError(f"no sighting {sighting_id}")
        return row

    # --- offline ---

    def recluster(self, actor: str = "") -> ReclusterReport:
        """Rebuild every visitor from all stored embeddings (time order), keeping must/cannot-links, ids where
        most of a visitor's sightings land, and labels/notes with them. Rebuilds the vector index.

        Memory stays bounded at millions of sightings: embeddings are streamed from the database in chunks
        (`CHUNK`), the offline pass holds one sum per cluster, and visitors are recomputed in chunks with the
        session cleared in between. One transaction: a failure changes nothing."""
        report = ReclusterReport()
        with self.lock:
            with self.store.begin() as s:
                report.visitors_before = int(s.exec(select(func.count()).select_from(Visitor)).one())
                musts = list(s.exec(select(MustLink.a_id, MustLink.b_id)))
                cannots = list(s.exec(select(CannotLink.a_id, CannotLink.b_id)))
                report.must_links, report.cannot_links = len(musts), len(cannots)
                recognizers = list(s.exec(select(Sighting.recognizer_id).distinct()))
                old_ids = set(s.exec(select(Visitor.id)))
                used: set[uuid.UUID] = set()
                final: list[uuid.UUID] = []
                for rec in recognizers:
                    final += self._recluster_one(s, rec, musts, cannots, old_ids, used, report)
                s.exec(update(Sighting).values(visit_id=None))  # visits are rebuilt by recompute below
                s.exec(delete(Visit))
                gone = list(old_ids - used)
                for k in range(0, len(gone), 500):
                    s.exec(delete(Visitor).where(col(Visitor.id).in_(gone[k : k + 500])))
                s.flush()
                s.expunge_all()
                for k in range(0, len(final), 500):
                    for visitor in s.exec(select(Visitor).where(col(Visitor.id).in_(final[k : k + 500]))):
                        self.recompute(s, visitor)
                    s.flush()
                    s.expunge_all()  # bounded: this chunk's visitors and sightings leave the session
                report.visitors_after = len(final)
                s.add(AuditLog(actor=actor, action="recluster", details=report.__dict__.copy()))
            self.reindex()
        log.info("recluster: %s", report)
        return report

    def _recluster_one(
        self,
        s: Session,
        rec: str,
        musts: list[Any],
        cannots: list[Any],
        old_ids: set[uuid.UUID],
        used: set[uuid.UUID],
        report: ReclusterReport,
    ) -> list[uuid.UUID]:
        where = (Sighting.recognizer_id == rec, col(Sighting.embedding).is_not(None))
        order = (Sighting.best_ts, Sighting.id)
        rows = list(s.exec(select(Sighting.id, Sighting.visitor_id, Sighting.site_id, Sighting.quality)
                           .where(*where).order_by(*order).execution_options(yield_per=CHUNK)))  # fmt: skip
        if not rows:
            return []
        index = {r[0]: i for i, r in enumerate(rows)}
        parent = list(range(len(rows)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in musts:
            if a in index and b in index:
                ra, rb = find(index[a]), find(index[b])
                parent[max(ra, rb)] = min(ra, rb)  # the earliest row leads the group
        groups: dict[int, list[int]] = defaultdict(list)
        for i in range(len(rows)):
            groups[find(i)].append(i)
        stream = (np.frombuffer(blob, dtype="<f4") for blob in s.exec(
            select(Sighting.embedding).where(*where).order_by(*order).execution_options(yield_per=CHUNK)))  # fmt: skip
        labels = cluster_offline(
            stream,
            [r[3] for r in rows],
            self.settings.threshold,
            scopes=[str(r[2]) for r in rows] if self.settings.scope == "site" else None,
            must=[g for g in groups.values() if len(g) > 1],
            cannot=[(index[a], index[b]) for a, b in cannots if a in index and b in index],
            found_min_quality=self.settings.found_min_quality,
            low_quality_threshold=self.settings.low_quality_threshold,
        )
        labels = [c if c >= 0 else -1 - i for i, c in enumerate(labels)]  # each held row on its own
        del index, groups
        report.sightings += len(rows)
        # keep an old visitor's id (and label, notes) for the new cluster holding most of its sightings
        overlap = Counter((labels[i], rows[i][1]) for i in range(len(rows)))
        owner: dict[int, uuid.UUID] = {}
        for (cluster, old_id), _ in overlap.most_common():
            if cluster not in owner and old_id not in used and old_id in old_ids:
                owner[cluster] = old_id
                used.add(old_id)
                report.kept_ids += 1
        first_row = {}
        for i, c in enumerate(labels):
            first_row.setdefault(c, i)
        for cluster, i in first_row.items():
            if cluster not in owner:
                # a new cluster keeps the staff/excluded mark of the old visitor most of its sightings came from
                origin = next((old for (c, old), _ in overlap.most_common() if c == cluster), None)
                status = s.exec(select(Visitor.status).where(Visitor.id == origin)).first() if origin else None
                visitor = Visitor(recognizer_id=rec, site_id=rows[i][2], first_seen=utcnow(), last_seen=utcnow(),
                                  unassigned=cluster < 0, status=status or "customer")  # fmt: skip
                s.add(visitor)
                owner[cluster] = visitor.id
        s.flush()
        for held in (True, False):  # kept ids: a held row alone, or a visitor (negative labels are held rows)
            kept = [owner[c] for c in owner if (c < 0) == held]
            for k in range(0, len(kept), 500):
                s.exec(update(Visitor).where(col(Visitor.id).in_(kept[k : k + 500])).values(unassigned=held)
                       .execution_options(synchronize_session="fetch"))  # fmt: skip
        by_visitor: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for i, c in enumerate(labels):
            if owner[c] != rows[i][1]:
                by_visitor[owner[c]].append(rows[i][0])
        for vid, ids in by_visitor.items():
            for k in range(0, len(ids), 500):
                s.exec(update(Sighting).where(col(Sighting.id).in_(ids[k : k + 500])).values(visitor_id=vid))
        return list(dict.fromkeys(owner.values()))

    def reindex(self, since: datetime | None = None) -> int:
        """Upsert sightings (created since `since`, or all after dropping the collections) and the prototypes
        of their visitors (all visitors when `since` is None) from the database into the vector index. Streams
        the rows in chunks (bounded memory at millions of sightings). Returns the number of sightings written."""
        written = 0
        full = since is None
        with self.lock, self.vectors.bulk() if full else nullcontext(), self.store.session() as s:
            cols = (Sighting.id, Sighting.recognizer_id, Sighting.visitor_id, Sighting.site_id, Sighting.best_ts,
                    Sighting.embedding)  # fmt: skip
            stmt = select(*cols).where(col(Sighting.embedding).is_not(None))
            if since is not None:
                stmt = stmt.where(Sighting.created_at >= since)
            seen_rec: set[str] = set()
            visitors: set[uuid.UUID] = set()
            batch: dict[str, list[SightingPoint]] = defaultdict(list)
            rows = s.exec(stmt.order_by(Sighting.created_at).execution_options(yield_per=CHUNK))
            for sid, rec, vid, site_id, best_ts, blob in rows:
                vec = np.frombuffer(blob, dtype="<f4")
                if rec not in seen_rec:
                    if full:
                        self.vectors.drop(rec)
                    self.vectors.ensure(rec, len(vec))
                    seen_rec.add(rec)
                batch[rec].append(SightingPoint(sid, vec, vid, self._site_name(site_id), best_ts.timestamp()))
                if not full:
                    visitors.add(vid)
                if len(batch[rec]) >= CHUNK:
                    self.vectors.upsert_sightings(rec, batch.pop(rec))
                written += 1
            for rec, points in batch.items():
                self.vectors.upsert_sightings(rec, points)
            vstmt = select(Visitor.id, Visitor.recognizer_id, Visitor.site_id, Visitor.proto_sum).where(
                col(Visitor.proto_sum).is_not(None),
                col(Visitor.unassigned).is_(False),  # held rows have none
            )
            if full:
                chunks: Iterable[Any] = [s.exec(vstmt.execution_options(yield_per=CHUNK))]
            else:
                vids = list(visitors)
                chunks = (s.exec(vstmt.where(col(Visitor.id).in_(vids[k : k + 500]))) for k in range(0, len(vids), 500))
            protos: dict[str, list[tuple[uuid.UUID, np.ndarray, str]]] = defaultdict(list)
            for chunk in chunks:
                for vid, rec, site_id, proto_sum in chunk:
                    if rec not in seen_rec:
                        continue
                    vec = Prototype(np.frombuffer(proto_sum, dtype=np.float64)).vector
                    protos[rec].append((vid, vec, self._site_name(site_id)))
                    if len(protos[rec]) >= CHUNK:
                        self.vectors.upsert_prototypes(rec, protos.pop(rec))
            for rec, items in protos.items():
                self.vectors.upsert_prototypes(rec, items)
        return written

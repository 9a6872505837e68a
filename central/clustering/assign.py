"""The online assignment path: which visitor is this observation?

One rule everywhere (`revisit.shared.assign`): the nearest visitor prototype (cosine) in the vector index is joined
when it is at least the threshold and no cannot-link forbids it, else a new anonymous visitor starts. The search is
limited to the observation's site when the scope is "site", and always to the observation's recognizer (each
recognizer has its own collections). A face below `found_min_quality` joins only a clear match and otherwise waits
unassigned, founding nothing.

Cannot-links: tracks of the same camera seen in the same frames (the observation's `co_tracks`, and earlier
sightings that listed this track) are different people. Each sighting extends (or bridges) its visitor's visit at
its site. Ordering: the database commits first, then the vector index is updated (`Rebuilder.reindex` mends it).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
from sqlalchemy import update
from sqlmodel import Session, col, func, select

from revisit.central.clustering.base import ClusterBase, save_prototype, visitor_prototype
from revisit.central.store import (
    Camera,
    CannotLink,
    Device,
    Sighting,
    SightingFlag,
    Site,
    Visit,
    Visitor,
    ensure_camera,
    ensure_device,
    ensure_site,
    from_epoch,
    pair,
    utcnow,
)
from revisit.central.vectors import SightingPoint
from revisit.shared.assign import decide
from revisit.shared.schema import Observation

log = logging.getLogger(__name__)


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


# A batch's searches ask for this many candidates beyond `candidates`: room for those it changed or forbids.
BATCH_SEARCH_SPARE = 16

# Prototypes changed by a batch not yet upserted: recognizer -> visitor id -> (unit vector, site name).
Overlay = dict[str, dict[uuid.UUID, tuple[np.ndarray, str]]]


@dataclass
class _BatchRows:
    """Rows a batch looks up once and reuses (all live in the batch's session): the stored sightings of its
    observation ids (one query, then each sighting the batch adds) and its (site, device, camera) rows."""

    sightings: dict[uuid.UUID, Sighting]
    places: dict[tuple[str, str, str], tuple[Site, Device, Camera]]
    seen: defaultdict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))

    def stamp(self) -> None:
        """Count the batch's observations on their devices and mark them and their cameras seen now."""
        now = utcnow()
        for key, n in self.seen.items():
            _, device, camera = self.places[key]
            device.observations += n
            device.last_seen = camera.last_seen = now


def choose(
    candidates: Sequence[tuple[uuid.UUID, float]], threshold: float, forbidden: Iterable[uuid.UUID] = ()
) -> tuple[uuid.UUID | None, float]:
    """`decide` on (visitor id, cosine) candidates: the visitor to join, or None and the best allowed score."""
    index = {vid: i for i, (vid, _) in enumerate(candidates)}
    banned = [index[v] for v in forbidden if v in index]
    best, score = decide(((i, s) for i, (_, s) in enumerate(candidates)), threshold, banned)
    return (None if best is None else candidates[best][0]), score


class Assigner(ClusterBase):
    """Stores observations as sightings of known or new visitors (`ingest`, `ingest_batch`)."""

    def ingest(self, obs: Observation, save_crop: bool = True) -> Assignment:
        """Store one observation as a sighting of a known or new visitor. Idempotent by observation id."""
        return self.ingest_batch([obs], save_crop=save_crop)[0]

    def ingest_batch(
        self,
        observations: Sequence[Observation],
        notes: Sequence[SightingNote | None] | None = None,
        save_crop: bool = True,
    ) -> list[Assignment]:
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
                    rows = _BatchRows(self._stored_sightings(s, observations), {})
                    searched = self._search_batch(observations, rows)
                    for obs, note, hits in zip(observations, notes, searched, strict=True):
                        results.append(self._ingest_in(s, obs, note, overlay, points, saved, save_crop, rows, hits))
                    rows.stamp()
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
        rows: _BatchRows,
        hits: list[tuple[uuid.UUID, float]] | None = None,
    ) -> Assignment:
        """One observation of a batch inside its session; the vector writes are collected, not made. `hits`:
        its index search, made with the batch's (`_search_batch`)."""
        vec = obs.vector().astype(np.float32)
        rec = obs.recognizer_id
        found = rows.sightings.get(uuid.UUID(obs.observation_id))
        if found is not None:  # a resend: its points are upserted again (mends an index left behind)
            site_row, owner = s.get(Site, found.site_id), s.get(Visitor, found.visitor_id)
            if site_row is not None and owner is not None:
                points[rec][found.id] = SightingPoint(found.id, vec, owner.id, site_row.name, obs.best_ts)
                if owner.id not in overlay[rec] and not owner.unassigned:
                    overlay[rec][owner.id] = (visitor_prototype(owner, obs.embedding_dim).vector, site_row.name)
            return Assignment(found.id, found.visitor_id, found.visit_id, False, True, 1.0)
        place = rows.places.get((obs.site, obs.device, obs.camera))
        if place is None:
            site = ensure_site(s, obs.site)
            device = ensure_device(s, site, obs.device)
            place = rows.places[(obs.site, obs.device, obs.camera)] = (
                site,
                device,
                ensure_camera(s, site, device, obs.camera),
            )
        site, device, camera = place
        first, last, best = from_epoch(obs.first_ts), from_epoch(obs.last_ts), from_epoch(obs.best_ts)
        rows.seen[(obs.site, obs.device, obs.camera)] += 1  # devices' and cameras' counters: once a batch
        co = self._co_track_sightings(s, obs, camera.id, first, last)
        visitor, created, score = self._pick(s, obs, vec, site, {c.visitor_id for c in co}, overlay, hits)
        held = visitor.unassigned
        crop_path: str | None = None
        if save_crop and self.crops is not None:
            crop_path = self.crops.save(obs.crop_jpeg)
            saved.append(crop_path)
        sighting = Sighting(
            observation_id=uuid.UUID(obs.observation_id),
            visitor_id=visitor.id,
            site_id=site.id,
            device_id=device.id,
            camera_id=camera.id,
            track_id=obs.track_id,
            first_ts=first,
            last_ts=last,
            best_ts=best,
            quality=obs.quality.score,
            det_score=obs.det_score,
            box=list(obs.box),
            frame_size=list(obs.frame_size),
            co_tracks=list(obs.co_tracks),
            crop_path=crop_path,
            recognizer_id=obs.recognizer_id,
            embedding=obs.embedding,
        )
        visit, new_visits = self._add_to_visit(s, visitor.id, site.id, sighting)  # before the insert: no update
        s.add(sighting)
        s.flush()
        rows.sightings[sighting.observation_id] = sighting
        if note is not None:
            s.add(
                SightingFlag(
                    sighting_id=sighting.id, kind=note.kind, device_ts=note.device_ts, received_at=note.received_at
                )
            )
        for other in co:
            a, b = pair(sighting.id, other.id)
            s.add(CannotLink(a_id=a, b_id=b, reason="co_track"))
        proto = visitor_prototype(visitor, obs.embedding_dim)
        proto.add(vec, obs.quality.score)
        save_prototype(visitor, proto)
        visitor.sighting_count += 1
        visitor.first_seen = min(visitor.first_seen, first)
        visitor.last_seen = max(visitor.last_seen, last)
        if crop_path and sighting.quality > visitor.reference_quality:
            visitor.reference_sighting_id, visitor.reference_quality = sighting.id, sighting.quality
        visitor.visit_count += new_visits  # kept exact by every writer (`recompute`): no count query
        s.flush()
        points[rec][sighting.id] = SightingPoint(sighting.id, vec, visitor.id, site.name, obs.best_ts)
        if not held:  # a held sighting has no prototype: nothing can join it
            overlay[rec][visitor.id] = (proto.vector, site.name)
        return Assignment(sighting.id, visitor.id, visit.id, created, False, score, held)

    @staticmethod
    def _stored_sightings(s: Session, observations: Sequence[Observation]) -> dict[uuid.UUID, Sighting]:
        """The already stored sightings of these observations (resends), by observation id."""
        ids = list({uuid.UUID(o.observation_id) for o in observations})
        found: dict[uuid.UUID, Sighting] = {}
        for start in range(0, len(ids), 500):
            query = select(Sighting).where(col(Sighting.observation_id).in_(ids[start : start + 500]))
            found.update((x.observation_id, x) for x in s.exec(query))
        return found

    def _search_batch(
        self, observations: Sequence[Observation], rows: _BatchRows
    ) -> list[list[tuple[uuid.UUID, float]] | None]:
        """The index search of each new observation of a batch, made together (the index does not change during
        a batch: its upserts come after the commit). None for a resend."""
        out: list[list[tuple[uuid.UUID, float]] | None] = [None] * len(observations)
        by_recognizer: defaultdict[str, list[int]] = defaultdict(list)
        for i, obs in enumerate(observations):
            if uuid.UUID(obs.observation_id) not in rows.sightings:
                by_recognizer[obs.recognizer_id].append(i)
        for rec, numbers in by_recognizer.items():
            vectors = [observations[i].vector().astype(np.float32) for i in numbers]
            sites = [observations[i].site if self.settings.scope == "site" else None for i in numbers]
            limit = self.settings.candidates + BATCH_SEARCH_SPARE
            found = self.vectors.search_prototypes_many(rec, vectors, limit, sites, floor=self.settings.threshold)
            for i, hits in zip(numbers, found, strict=True):
                out[i] = hits
        return out

    def _pick(
        self,
        s: Session,
        obs: Observation,
        vec: np.ndarray,
        site: Site,
        forbidden: set[uuid.UUID],
        overlay: Overlay | None = None,
        found: list[tuple[uuid.UUID, float]] | None = None,
    ) -> tuple[Visitor, bool, float]:
        """The visitor to join (locked for update) or a new one; stale index entries are dropped. `overlay`: the
        prototypes a batch changed so far, which take the place of the index's (not yet upserted) ones. `found`:
        the batch's search for this observation, used when it holds enough candidates the batch left alone."""
        scope_site = site.name if self.settings.scope == "site" else None
        limit = self.settings.candidates + len(forbidden)
        pending = (overlay or {}).get(obs.recognizer_id, {})
        if found is not None and (
            len(found) < self.settings.candidates + BATCH_SEARCH_SPARE  # all the index had
            or sum(vid not in pending for vid, _ in found) >= limit
        ):
            candidates = found
        else:
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
            recognizer_id=obs.recognizer_id,
            site_id=site.id,
            first_seen=first,
            last_seen=from_epoch(obs.last_ts),
            unassigned=obs.quality.score < self.settings.found_min_quality,
        )
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
            x
            for x in overlapping
            if x.track_id != obs.track_id and (x.track_id in obs.co_tracks or obs.track_id in (x.co_tracks or []))
        ]

    def _add_to_visit(
        self, s: Session, visitor_id: uuid.UUID, site_id: uuid.UUID, sighting: Sighting
    ) -> tuple[Visit, int]:
        """Extend the visit this sighting falls in (merging visits it bridges), or start one. Also returns the
        change in the visitor's number of visits (1: started, 0: extended, -k: k bridged visits merged)."""
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
        return visit, 1 - len(near)

    def unassigned_count(self) -> int:
        """Low-quality sightings waiting unassigned (each held by an `unassigned` visitor row)."""
        with self.store.session() as s:
            return int(s.exec(select(func.count()).select_from(Visitor).where(col(Visitor.unassigned).is_(True))).one())

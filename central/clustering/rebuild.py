"""Rebuilds from the database: `recluster` (every visitor again from all stored embeddings, keeping the manual
edits) and `reindex` (the vector index again from the database, e.g. after a crash between commit and upsert).

Both stream the sightings in chunks (`CHUNK`), so memory follows the number of visitors, not of sightings.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import delete, update
from sqlmodel import Session, col, func, select

from revisit.central.clustering.base import ClusterBase, sighting_vector
from revisit.central.store import AuditLog, CannotLink, MustLink, Sighting, Visit, Visitor, utcnow
from revisit.central.vectors import SightingPoint
from revisit.shared.assign import Prototype, PrototypeTable, member_weight

log = logging.getLogger(__name__)
CHUNK = 2000  # rows per chunk when streaming sightings (reindex, recluster)


@dataclass
class ReclusterReport:
    sightings: int = 0
    visitors_before: int = 0
    visitors_after: int = 0
    kept_ids: int = 0
    must_links: int = 0
    cannot_links: int = 0


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


class Rebuilder(ClusterBase):
    """`recluster` and `reindex`."""

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
        rows = list(
            s.exec(
                select(Sighting.id, Sighting.visitor_id, Sighting.site_id, Sighting.quality)
                .where(*where)
                .order_by(*order)
                .execution_options(yield_per=CHUNK)
            )
        )
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
        stream = (
            sighting_vector(blob)
            for blob in s.exec(
                select(Sighting.embedding).where(*where).order_by(*order).execution_options(yield_per=CHUNK)
            )
        )
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
                visitor = Visitor(
                    recognizer_id=rec,
                    site_id=rows[i][2],
                    first_seen=utcnow(),
                    last_seen=utcnow(),
                    unassigned=cluster < 0,
                    status=status or "customer",
                )
                s.add(visitor)
                owner[cluster] = visitor.id
        s.flush()
        for held in (True, False):  # kept ids: a held row alone, or a visitor (negative labels are held rows)
            kept = [owner[c] for c in owner if (c < 0) == held]
            for k in range(0, len(kept), 500):
                s.exec(
                    update(Visitor)
                    .where(col(Visitor.id).in_(kept[k : k + 500]))
                    .values(unassigned=held)
                    .execution_options(synchronize_session="fetch")
                )
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
            cols = (
                Sighting.id,
                Sighting.recognizer_id,
                Sighting.visitor_id,
                Sighting.site_id,
                Sighting.best_ts,
                Sighting.embedding,
            )
            stmt = select(*cols).where(col(Sighting.embedding).is_not(None))
            if since is not None:
                stmt = stmt.where(Sighting.created_at >= since)
            seen_rec: set[str] = set()
            visitors: set[uuid.UUID] = set()
            batch: dict[str, list[SightingPoint]] = defaultdict(list)
            rows = s.exec(stmt.order_by(Sighting.created_at).execution_options(yield_per=CHUNK))
            for sid, rec, vid, site_id, best_ts, blob in rows:
                vec = sighting_vector(blob)
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
                    vec = Prototype.from_bytes(proto_sum).vector
                    protos[rec].append((vid, vec, self._site_name(site_id)))
                    if len(protos[rec]) >= CHUNK:
                        self.vectors.upsert_prototypes(rec, protos.pop(rec))
            for rec, items in protos.items():
                self.vectors.upsert_prototypes(rec, items)
        return written

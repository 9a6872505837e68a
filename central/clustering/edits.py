"""Manual edits from the visitor pages and the API: label and notes, status, merge, split, "not this person", erasure.

Each edit runs in one transaction under the clusterer's lock, recomputes the visitors it touched, writes an audit
row, then updates the vector index. Merges and splits store must-links, splits and "not this person" cannot-links,
between sightings, so `Rebuilder.recluster` rebuilds visitors that keep them.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from revisit.central.clustering.base import ClusterBase, ClusterError, UnknownId
from revisit.central.store import VISITOR_STATUSES, AuditLog, CannotLink, MustLink, Sighting, Visit, Visitor, pair

MAX_FEEDBACK_LINKS = 200  # "not this person": links to at most this many of the visitor's best sightings


class Editor(ClusterBase):
    """The manual edits (`merge`, `split`, `not_this_person`, `set_status`, `update_visitor`) and erasure."""

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
                    s.exec(
                        delete(CannotLink).where(
                            or_(
                                col(CannotLink.a_id).in_(ids_a) & col(CannotLink.b_id).in_(ids_b),
                                col(CannotLink.a_id).in_(ids_b) & col(CannotLink.b_id).in_(ids_a),
                            )
                        )
                    )
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
                s.add(
                    AuditLog(
                        actor=actor,
                        action="merge",
                        visitor_id=a.id,
                        details={"merged": str(b.id), "sightings": len(ids_b)},
                    )
                )
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
                rest = list(
                    s.exec(
                        select(Sighting).where(
                            Sighting.visitor_id == old.id, col(Sighting.id).not_in([r.id for r in rows])
                        )
                    )
                )
                if not rest:
                    raise ClusterError("split: that is every sighting of the visitor; nothing would be left")
                moved, kept = [r.id for r in rows], [r.id for r in rest]
                s.exec(
                    delete(MustLink).where(  # a split overrides an earlier merge of these sightings
                        or_(
                            col(MustLink.a_id).in_(moved) & col(MustLink.b_id).in_(kept),
                            col(MustLink.a_id).in_(kept) & col(MustLink.b_id).in_(moved),
                        )
                    )
                )
                new = self._new_visitor_for(s, old, rows)
                anchor = max(rows, key=lambda r: r.quality)
                for r in rows:
                    if r.id != anchor.id:
                        self._link(s, MustLink, anchor.id, r.id, "split")
                self._link(s, CannotLink, anchor.id, max(rest, key=lambda r: r.quality).id, "split")
                self.recompute(s, old)
                self.recompute(s, new)
                s.add(
                    AuditLog(
                        actor=actor,
                        action="split",
                        visitor_id=old.id,
                        details={"new_visitor": str(new.id), "sightings": len(rows)},
                    )
                )
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
                rest = list(
                    s.exec(
                        select(Sighting)
                        .where(Sighting.visitor_id == old.id, Sighting.id != row.id)
                        .order_by(col(Sighting.quality).desc())
                        .limit(MAX_FEEDBACK_LINKS)
                    )
                )
                if not rest:
                    raise ClusterError("not this person: it is the visitor's only sighting")
                s.exec(delete(MustLink).where(or_(MustLink.a_id == row.id, MustLink.b_id == row.id)))
                for other in rest:
                    self._link(s, CannotLink, row.id, other.id, "not_this_person")
                new = self._new_visitor_for(s, old, [row])
                self.recompute(s, old)
                self.recompute(s, new)
                s.add(
                    AuditLog(
                        actor=actor,
                        action="not_this_person",
                        visitor_id=old.id,
                        details={"sighting": str(row.id), "new_visitor": str(new.id)},
                    )
                )
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
                s.add(
                    AuditLog(
                        actor=actor, action="erase", visitor_id=visitor_id, details={**counts, "reason": reason[:500]}
                    )
                )
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
        new = Visitor(
            recognizer_id=old.recognizer_id,
            site_id=rows[0].site_id,
            status=old.status,
            first_seen=min(r.first_ts for r in rows),
            last_seen=max(r.last_ts for r in rows),
        )
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
            raise UnknownId(f"no visitor {visitor_id}")
        return visitor

    @staticmethod
    def _get_sighting(s: Session, sighting_id: uuid.UUID) -> Sighting:
        row = s.get(Sighting, sighting_id)
        if row is None:
            raise UnknownId(f"no sighting {sighting_id}")
        return row

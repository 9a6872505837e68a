"""Recurrence clustering: which visitor is this observation? Plus the manual edits and the rebuilds.

One rule everywhere (`revisit.shared.assign`): the nearest visitor prototype (cosine) is joined when it is at least
the threshold and no cannot-link forbids it, else a new anonymous visitor starts. The stages, one module each:

- `assign`: the online path (`Assigner.ingest`, `ingest_batch`): decide the visitor, store the sighting, extend
  its visit, update the prototype.
- `edits`: the manual edits (`Editor.merge`, `split`, `not_this_person`, `set_status`, `update_visitor`, erasure).
- `rebuild`: `Rebuilder.recluster` (a fresh pass over every stored embedding in time order, keeping the manual
  edits: visitors keep their ids, labels and notes where most of their sightings land) and `reindex`.
- `base`: what they share: settings, the stored prototype and embedding, a visitor's recompute and its sync to the
  vector index.

Cannot-links (tracks seen in the same frames, "not this person", splits) and must-links (merges, splits) are
stored between sightings. Ordering: the database commits first, then the vector index is updated; a crash in
between leaves the index behind, and `reindex(since)` (run by the service at start) re-upserts recent points.
"""

from __future__ import annotations

from revisit.central.clustering.assign import Assigner, Assignment, SightingNote
from revisit.central.clustering.base import ClusterError, ClusterSettings
from revisit.central.clustering.edits import Editor
from revisit.central.clustering.rebuild import Rebuilder, ReclusterReport

__all__ = [
    "Assigner",
    "Assignment",
    "ClusterError",
    "ClusterSettings",
    "Clusterer",
    "Editor",
    "Rebuilder",
    "ReclusterReport",
    "SightingNote",
]


class Clusterer(Assigner, Editor, Rebuilder):
    """The three stages on one database, index and lock: what the service holds (`CentralService.clusterer`)."""

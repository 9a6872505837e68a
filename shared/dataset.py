"""Labelled face data: a `labels.csv` beside the files it describes, read into typed records.

Columns used (others are ignored): `path` (relative to the CSV), `identity` (one name; for a group
photo or video the `;`-separated names of the people in it; may be empty when nobody is labelled) and
`kind` (`photo`: one labelled person, the centred face; `group`: several people; `video`).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from revisit.shared.errors import RevisitError

REQUIRED_COLUMNS = ("path", "identity", "kind")
KINDS = ("photo", "group", "video")
Kind = Literal["photo", "group", "video"]


class DatasetError(RevisitError):
    """A labels file that is missing or malformed."""


@dataclass(frozen=True, slots=True)
class Record:
    path: Path  # the file, resolved against the CSV's directory
    relpath: str  # as written in the CSV
    identities: tuple[str, ...]
    kind: Kind

    @property
    def identity(self) -> str:
        """The one labelled person of a photo ('' when unlabelled); for groups the names joined by ';'."""
        return ";".join(self.identities)


def labels_file(data: str | Path) -> Path:
    """`data` is a directory holding labels.csv, or the CSV itself."""
    path = Path(data)
    return path if path.suffix.lower() == ".csv" or path.is_file() else path / "labels.csv"


def load_labels(data: str | Path) -> list[Record]:
    """Read every row of the labels file, in file order, validating columns, kinds and photo labels."""
    path = labels_file(data)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(
                    f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"(needs {', '.join(REQUIRED_COLUMNS)}; found {', '.join(reader.fieldnames or []) or 'none'})"
                )
            rows = list(reader)
    except OSError as exc:
        raise DatasetError(f"cannot read labels {path}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a valid CSV file: {exc}") from exc
    records = []
    for line, row in enumerate(rows, start=2):
        kind = (row["kind"] or "").strip()
        rel = (row["path"] or "").strip()
        names = tuple(n.strip() for n in (row["identity"] or "").split(";") if n.strip())
        if kind not in KINDS:
            raise DatasetError(f"{path}:{line}: kind is {kind!r}; expected one of {', '.join(KINDS)}")
        if not rel:
            raise DatasetError(f"{path}:{line}: empty path")
        if kind == "photo" and len(names) != 1:
            raise DatasetError(f"{path}:{line}: a photo needs exactly one identity, got {row['identity']!r}")
        records.append(Record(path.parent / rel, rel, names, cast(Kind, kind)))
    return records


def by_identity(records: list[Record]) -> dict[str, list[Record]]:
    """Photos grouped by their identity, identities and photos in sorted order."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.kind == "photo":
            groups[r.identity].append(r)
    return {name: sorted(groups[name], key=lambda r: r.relpath) for name in sorted(groups)}


def limit_photos(records: list[Record], limit: int | None) -> list[Record]:
    """The photos (kind=photo) to evaluate, sorted by identity then path.

    With `limit` N: all photos of the first N identities (in sorted order) that have at least 2 photos,
    plus the first photo of each of the first N identities (in sorted order) that have exactly one
    photo (distractors that only take part in different-identity pairs). Without it: every photo.
    """
    groups = by_identity(records)
    if limit is None:
        return [r for photos in groups.values() for r in photos]
    multi = [name for name, photos in groups.items() if len(photos) >= 2][:limit]
    single = [name for name, photos in groups.items() if len(photos) == 1][:limit]
    keep = set(multi) | set(single)
    return [r for name, photos in groups.items() if name in keep for r in photos]

"""labels.csv parsing, validation and the --limit selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revisit.shared.dataset import DatasetError, limit_photos, load_labels
from revisit.shared.evaluate import make_pairs

HEADER = "path,identity,source_repo,kind,notes\n"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "labels.csv").write_text(text)
    return tmp_path


def test_parses_photos_groups_and_videos(tmp_path):
    data = write(
        tmp_path,
        HEADER
        + "photos/A/a1.jpg,Ann,x,photo,\n"
        + 'photos/_groups/g.jpg,Ann; Bob ;Cy,x,group,"three, maybe"\n'
        + "videos/v.mp4,,x,video,\n",
    )
    photo, group, video = load_labels(data)
    assert photo.path == tmp_path / "photos/A/a1.jpg" and photo.relpath == "photos/A/a1.jpg"
    assert photo.kind == "photo" and photo.identities == ("Ann",) and photo.identity == "Ann"
    assert group.kind == "group" and group.identities == ("Ann", "Bob", "Cy")
    assert video.kind == "video" and video.identities == ()
    assert load_labels(data / "labels.csv") == load_labels(data)  # the CSV itself also works


@pytest.mark.parametrize(
    ("header", "missing"),
    [("path,identity,notes", "kind"), ("file,identity,kind", "path"), ("path,kind", "identity")],
)
def test_missing_column_names_the_column_and_the_file(tmp_path, header, missing):
    data = write(tmp_path, header + "\n")
    with pytest.raises(DatasetError, match=rf"labels\.csv: missing column {missing}\b"):
        load_labels(data)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a.jpg,Ann,x,selfie,", r"labels\.csv:2: kind is 'selfie'"),
        ("a.jpg,Ann;Bob,x,photo,", r"labels\.csv:2: a photo needs exactly one identity"),
        ("a.jpg,,x,photo,", r"labels\.csv:2: a photo needs exactly one identity"),
        (",Ann,x,photo,", r"labels\.csv:2: empty path"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, row, message):
    with pytest.raises(DatasetError, match=message):
        load_labels(write(tmp_path, HEADER + row + "\n"))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot read labels .*labels.csv"):
        load_labels(tmp_path)


def test_limit_takes_first_identities_with_pairs_and_as_many_singletons(tmp_path):
    rows = [
        ("Dan", 2),
        ("Ann", 3),
        ("Eve", 1),
        ("Bob", 1),
        ("Cy", 2),
        ("Fay", 1),
        ("Gus", 2),
    ]
    lines = [f"p/{name}/{k}.jpg,{name},x,photo," for name, n in rows for k in range(n)]
    records = load_labels(write(tmp_path, HEADER + "\n".join(lines) + "\n"))
    assert [r.identity for r in limit_photos(records, None)] == [
        "Ann",
        "Ann",
        "Ann",
        "Bob",
        "Cy",
        "Cy",
        "Dan",
        "Dan",
        "Eve",
        "Fay",
        "Gus",
        "Gus",
    ]
    # 2 identities with 2+ photos (Ann, Cy) and the first 2 with one photo (Bob, Eve), sorted by name
    assert [r.relpath for r in limit_photos(records, 2)] == [
        "p/Ann/0.jpg",
        "p/Ann/1.jpg",
        "p/Ann/2.jpg",
        "p/Bob/0.jpg",
        "p/Cy/0.jpg",
        "p/Cy/1.jpg",
        "p/Eve/0.jpg",
    ]


def test_make_pairs_is_deterministic_and_balanced():
    names = ["A"] * 4 + ["B"] * 3 + ["C", "D", "E"]
    same, different = make_pairs(names)
    assert len(same) == 6 + 3 and len(different) == len(same)
    assert all(names[a] == names[b] and a < b for a, b in same)
    assert all(names[a] != names[b] and a < b for a, b in different)
    assert len({tuple(p) for p in different.tolist()}) == len(different)  # distinct unordered pairs
    again = make_pairs(names)
    assert np.array_equal(again[0], same) and np.array_equal(again[1], different)


def test_make_pairs_when_few_different_pairs_exist():
    names = ["A"] * 5 + ["B"]  # 10 same pairs but only 5 different ones possible
    same, different = make_pairs(names)
    assert len(same) == 10 and sorted(map(tuple, different.tolist())) == [(i, 5) for i in range(5)]
    assert all(len(p) == 0 for p in make_pairs([]))

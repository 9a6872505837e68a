"""`revisit eval verify` / `eval detect`: a regression test on real models and photos, plus unit checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from revisit.cli import main
from revisit.shared.errors import RevisitError
from revisit.shared.evaluate import cosine, pair_scores

BASELINE = Path(__file__).with_name("eval_baseline.json")
VERIFY_KEYS = {
    "photos",
    "detect_failures",
    "pairs",
    "tar_at_far_1e-3",
    "tar_at_far_1e-2",
    "auc",
    "best_accuracy",
    "best_threshold",
    "ms_per_photo",
    "ms_per_photo_p50",
    "detector",
    "recognizer_id",
    "backend",
}
DETECT_KEYS = {
    "photos",
    "photo_found_one_or_more",
    "photo_detect_rate",
    "groups",
    "group_people",
    "group_faces_found",
    "group_recall_estimate",
    "ms_per_image",
    "ms_per_image_p50",
    "detector",
    "backend",
}
# How far below the committed baseline a figure may fall (onnxruntime versions differ in the last bits).
TAR_TOLERANCE = 0.005
AUC_TOLERANCE = 0.002


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.models
@pytest.mark.facedata
@pytest.mark.slow
def test_verify_does_not_regress(capsys, models_dir, facedata):
    baseline = json.loads(BASELINE.read_text())
    limit = baseline["command"].split("--limit ")[1].split()[0]
    result = run_json(
        capsys, ["eval", "verify", "--data", str(facedata), "--json", "--limit", limit, "--models", str(models_dir)]
    )
    assert result.keys() >= VERIFY_KEYS
    # the pair list depends only on the labels and the seed
    for key in ("photos", "pairs", "same_pairs", "different_pairs", "detector", "recognizer_id", "backend"):
        assert result[key] == baseline[key], key
    assert result["detect_failures"] <= baseline["detect_failures"]
    assert result["tar_at_far_1e-2"] >= baseline["tar_at_far_1e-2"] - TAR_TOLERANCE
    assert result["tar_at_far_1e-3"] >= baseline["tar_at_far_1e-3"] - TAR_TOLERANCE
    assert result["auc"] >= baseline["auc"] - AUC_TOLERANCE
    assert result["ms_per_photo"] > 0


@pytest.mark.models
@pytest.mark.facedata
def test_detect_on_limited_photos_and_all_groups(capsys, models_dir, facedata):
    result = run_json(
        capsys, ["eval", "detect", "--data", str(facedata), "--json", "--limit", "5", "--models", str(models_dir)]
    )
    assert result.keys() >= DETECT_KEYS
    assert result["photos"] > 10 and result["photo_found_one_or_more"] == result["photos"]
    assert result["groups"] >= 1 and result["group_people"] >= 2 * result["groups"]
    assert 0.8 <= result["group_recall_estimate"] <= 1.0
    assert result["detector"] == "scrfd_2.5g_kps" and result["backend"] == "onnxruntime"


def test_failed_photos_score_minus_inf():
    vectors = [np.array([1.0, 0.0]), None, np.array([0.6, 0.8])]
    scores = pair_scores(vectors, np.array([[0, 2], [0, 1], [1, 2]]), cosine)
    assert scores[0] == pytest.approx(0.6) and scores[1] == scores[2] == -math.inf


def test_verify_without_pairs_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("path,identity,kind\na.jpg,Ann,photo\nb.jpg,Bob,photo\n")
    assert main(["eval", "verify", "--data", str(tmp_path), "--json"]) == 2
    assert "need at least one same-identity" in capsys.readouterr().err


def test_missing_peer_library_is_a_clear_error(monkeypatch):
    import importlib.util

    from revisit.shared import peer

    real = importlib.util.find_spec
    # Every module the peer needs is "absent" (an edge-only install has none of them): the first is named.
    peer_modules = {"dlib", "face_recognition_models", "face_recognition"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in peer_modules else real(n, *a))
    with pytest.raises(RevisitError, match="needs the 'dlib' package; install it"):
        peer.create_peer("face_recognition")


@pytest.mark.models
@pytest.mark.facedata
def test_unreadable_and_faceless_photos_are_failures_scored_minus_inf(tmp_path, capsys, models_dir, facedata):
    import shutil

    import cv2

    from revisit.shared.dataset import by_identity, load_labels

    photos = by_identity(load_labels(facedata))
    two = next(name for name, recs in photos.items() if len(recs) >= 2)
    other = next(name for name in photos if name != two)
    rows = []
    for i, record in enumerate([*photos[two][:2], photos[other][0]]):
        shutil.copy(record.path, tmp_path / f"{i}.jpg")
        rows.append(f"{i}.jpg,{record.identity},photo")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((150, 150, 3), 128, np.uint8))
    rows += [f"broken.jpg,{two},photo", "blank.png,Nobody,photo"]
    (tmp_path / "labels.csv").write_text("path,identity,kind\n" + "\n".join(rows) + "\n")

    result = run_json(capsys, ["eval", "verify", "--data", str(tmp_path), "--json", "--models", str(models_dir)])
    assert (result["photos"], result["unreadable"], result["detect_failures"]) == (5, 1, 2)
    # 3 same-identity pairs (2 involve the broken photo: misses at every threshold) and 3 different ones
    assert (result["same_pairs"], result["different_pairs"]) == (3, 3)
    assert result["tar_at_far_1e-2"] <= 1 / 3

"""`revisit eval cluster`: BCubed as a table, and a regression test on real models and photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revisit.central.config import DEFAULT_MATCH_THRESHOLD
from revisit.central.evaluate import bcubed
from revisit.cli import main

BASELINE = Path(__file__).with_name("eval_cluster_baseline.json")
KEYS = {"photos", "identities", "clusters", "bcubed_precision", "bcubed_recall", "bcubed_f1", "threshold"}
PRECISION_TOLERANCE = 0.003  # onnxruntime versions differ in the last bits
F1_TOLERANCE = 0.005


@pytest.mark.parametrize(
    ("truth", "predicted", "expected"),
    [
        (["a", "a", "b"], [0, 0, 1], (1.0, 1.0, 1.0)),
        (["a", "a", "b"], [0, 1, 2], (1.0, 2 / 3, 0.8)),  # all split: perfect precision
        (["a", "a", "b"], [0, 0, 0], (5 / 9, 1.0, 2 * (5 / 9) / (1 + 5 / 9))),  # all merged: perfect recall
        (["a", "b", "c", "d"], [0, 0, 1, 2], (0.75, 1.0, 6 / 7)),
        ([], [], (0.0, 0.0, 0.0)),
    ],
)
def test_bcubed(truth, predicted, expected):
    assert bcubed(truth, predicted) == pytest.approx(expected)


@pytest.mark.models
@pytest.mark.facedata
@pytest.mark.slow
def test_eval_cluster_does_not_regress(capsys, models_dir, facedata):
    baseline = json.loads(BASELINE.read_text())
    limit = baseline["command"].split("--limit ")[1].split()[0]
    argv = ["eval", "cluster", "--data", str(facedata), "--json", "--limit", limit, "--models", str(models_dir)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result.keys() >= KEYS
    assert result["threshold"] == baseline["threshold"] == DEFAULT_MATCH_THRESHOLD
    for key in ("photos", "identities", "recognizer_id", "seed"):
        assert result[key] == baseline[key], key
    assert result["detect_failures"] <= baseline["detect_failures"]
    assert result["bcubed_precision"] >= baseline["bcubed_precision"] - PRECISION_TOLERANCE
    assert result["bcubed_f1"] >= baseline["bcubed_f1"] - F1_TOLERANCE

"""`revisit models list` and `revisit models fetch` through the real command-line entry point."""

from __future__ import annotations

import json

import pytest

from revisit.cli import main
from revisit.models.manifest import Manifest
from revisit.models.store import sha256_file

NAMES = {"scrfd_2.5g_kps", "scrfd_500m_kps", "yunet", "w600k_mbf"}


def list_json(capsys, directory) -> tuple[int, list[dict], str]:
    code = main(["models", "list", "--models", str(directory), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


@pytest.mark.models
def test_list_json_on_the_real_models(models_dir, capsys):
    code, rows, err = list_json(capsys, models_dir)
    assert code == 0
    assert {r["name"] for r in rows} >= NAMES
    assert all(r["status"] == "verified" for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["scrfd_2.5g_kps"]["default"] and by_name["w600k_mbf"]["default"]
    assert not by_name["yunet"]["default"]
    assert by_name["w600k_mbf"]["model_id"] == Manifest.load().get("w600k_mbf").model_id
    assert by_name["w600k_mbf"]["role"] == "recognizer" and by_name["w600k_mbf"]["embedding_dim"] == 512
    assert by_name["yunet"]["model_id"] is None
    assert by_name["yunet"]["licence"].startswith("MIT")
    assert "fetch" not in err  # nothing to hint about


def test_list_json_on_an_empty_dir(tmp_path, capsys):
    code, rows, err = list_json(capsys, tmp_path)
    assert code == 0  # a report, not a failure
    assert {r["name"] for r in rows} >= NAMES
    assert all(r["status"] == "missing" for r in rows)
    assert "missing" in err and "revisit models fetch" in err


def test_list_table_marks_defaults_and_mismatches(tmp_path, capsys):
    (tmp_path / "yunet_2026may.onnx").write_bytes(b"not yunet")
    assert main(["models", "list", "--models", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "hash mismatch" in lines["yunet"]
    assert lines["scrfd_2.5g_kps"].split()[1] == "*"
    assert lines["w600k_mbf"].split()[1] == "*"
    assert Manifest.load().get("w600k_mbf").model_id in lines["w600k_mbf"]
    assert "non-commercial" in lines["w600k_mbf"]
    assert len(err.strip().splitlines()) == 1 and "revisit models fetch" in err


def test_list_uses_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REVISIT_MODELS", str(tmp_path))
    assert main(["models", "list"]) == 0
    assert str(tmp_path) in capsys.readouterr().out


@pytest.mark.models
def test_fetch_from_a_directory_mirror(models_dir, tmp_path, capsys):
    target = tmp_path / "models"
    argv = ["models", "fetch", "yunet", "w600k_mbf", "--models", str(target), "--mirror", str(models_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "yunet: fetched and verified" in out and "w600k_mbf: fetched and verified" in out
    assert sha256_file(target / "w600k_mbf.onnx") == Manifest.load().get("w600k_mbf").sha256
    assert main(["models", "fetch", "yunet", "--models", str(target), "--mirror", models_dir.as_uri()]) == 0
    assert "yunet: already verified" in capsys.readouterr().out


def test_fetch_without_a_source_or_mirror_exits_non_zero(tmp_path, capsys):
    assert main(["models", "fetch", "w600k_mbf", "--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "w600k_mbf" in err and "--mirror" in err
    assert list(tmp_path.iterdir()) == []


def test_fetch_unknown_model(tmp_path, capsys):
    assert main(["models", "fetch", "nope", "--models", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_models_needs_an_action(capsys):
    with pytest.raises(SystemExit) as info:
        main(["models"])
    assert info.value.code == 2

import json
import subprocess
import sys

import pytest

from revisit.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("models", "faces", "eval"):
        assert command in out


def test_faces_json(models_dir, facedata, capsys):
    photo = sorted((facedata / "photos").glob("*/*_0001.jpg"))[0]
    assert main(["faces", "--json", "--models", str(models_dir), str(photo)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["recognizer_id"].startswith("w600k_mbf@")
    assert len(record["faces"]) >= 1 and 0 <= record["faces"][0]["quality"]["score"] <= 1


def test_faces_bad_image_is_reported_not_raised(models_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    assert main(["faces", "--models", str(models_dir), str(bad)]) == 1
    assert "not a supported image" in capsys.readouterr().out


def test_missing_models_is_one_clear_line(tmp_path):
    # Run as the console script would: a RevisitError is one line on stderr and exit code 2, no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "revisit.cli", "faces", "--models", str(tmp_path), "x.jpg"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "error: model scrfd_2.5g_kps" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_is_reported(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[engine]\nbogus = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "revisit.cli", "faces", "--config", str(config), "x.jpg"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "bogus: unknown key" in proc.stderr


def test_the_cli_logs_logfmt(tmp_path):
    """A central command's log lines (here a rejected message) are logfmt, like the edge daemon's."""
    from tests.shared.test_logfmt import parse

    pytest.importorskip("sqlmodel", reason="a central command: needs the central extra (edge-only install)")
    config = tmp_path / "central.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[ingest.recognizers]\n"w600k_mbf@test" = 512\n')
    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(b"\xc1 not msgpack")
    command = [sys.executable, "-m", "revisit.cli", "central", "backfill", "--config", str(config), str(bad)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    lines = [parse(line) for line in run.stderr.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger"} <= set(f) and ("msg" in f or "event" in f) for f in lines)
    assert any(f["logger"].startswith("revisit.central") and "bad.msgpack" in f.get("msg", "") for f in lines)

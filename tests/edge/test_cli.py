"""`revisit edge run` / `revisit edge check-config`: clear errors (exit 2) for bad configuration, redacted output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revisit.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "edge.example.toml"
REVISIT = Path(sys.executable).with_name("revisit")


def test_check_config_prints_redacted(capsys):
    assert main(["edge", "check-config", "--config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["site"] == "store-1"
    assert data["cameras"][0]["source"] == "rtsp://viewer:***@10.0.0.5:554/stream1"
    assert "secret" not in out
    assert "valid (3 camera(s))" in err


def test_check_config_masks_password(tmp_path, capsys):
    path = tmp_path / "edge.toml"
    path.write_text(
        'site = "s"\ndevice = "d"\n[broker]\nusername = "u"\npassword = "pw-123"\n'
        '[[cameras]]\nid = "c"\nsource = "rtsp://a:b@h/x"\n'
    )
    assert main(["edge", "check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pw-123" not in out and json.loads(out)["broker"]["password"] == "**********"


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_malformed_config_is_a_clear_error(tmp_path, capsys, command):
    path = tmp_path / "edge.toml"
    path.write_text('site = "s"\ndevice = "d"\nsatte_dir = "/x"\n[[cameras]]\nid = "c"\nsource = "x"\nfps = -1\n')
    assert main(["edge", command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "revisit: error:" in err and "satte_dir: unknown key" in err and "cameras.0.fps" in err
    assert "Traceback" not in err


def test_not_toml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("site = \n")
    assert main(["edge", "run", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["edge", "run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_console_script_exit_code(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('site = "s"\n')
    done = subprocess.run(
        [str(REVISIT), "edge", "run", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "device: Field required" in done.stderr and "cameras: Field required" in done.stderr


def test_unusable_state_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = tmp_path / "edge.toml"
    path.write_text(
        f'site = "s"\ndevice = "d"\nstate_dir = "{blocker / "state"}"\n[[cameras]]\nid = "c"\nsource = "/nothing.mp4"\n'
    )
    assert main(["edge", "run", "--config", str(path)]) == 2
    assert "cannot create the spool" in capsys.readouterr().err

"""The `revisit` command in an edge-only install (no `central` extra): every edge command runs, a central
command fails with one line saying what to install.

An edge-only install is simulated in a subprocess whose import system refuses the central extra's packages (a
meta-path finder installed by a sitecustomize on PYTHONPATH), as if they were absent. CI also runs the
edge/shared/models tests in real edge-only venvs (`.ci/run`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from revisit.cli import EVAL_PARTS, PARTS, build_parser, missing_central

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "edge.example.toml"
BLOCKED = ("sqlmodel", "sqlalchemy", "qdrant_client", "fastapi", "starlette", "uvicorn", "amqtt", "psycopg")
BLOCKER = f"""
import importlib.abc, sys

BLOCKED = {BLOCKED!r}


class _EdgeOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (edge-only test)", name=name)
        return None


sys.meta_path.insert(0, _EdgeOnly())
"""


@pytest.fixture(scope="module")
def edge_only(tmp_path_factory):
    site = tmp_path_factory.mktemp("edge-only")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    def run(*args: str) -> subprocess.CompletedProcess:
        code = "import sys; from revisit.cli import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120, cwd=site
        )

    return run


def test_the_blocker_blocks(edge_only):
    if missing_central():
        pytest.skip("this environment is edge-only already")
    result = edge_only("central", "run")
    assert result.returncode == 2, result.stderr
    proc = subprocess.run([sys.executable, "-c", "import qdrant_client"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0  # this environment has it: the refusal above came from the blocker


def test_edge_commands_run_without_central(edge_only, tmp_path):
    help_ = edge_only("--help")
    assert help_.returncode == 0, help_.stderr
    for command in ("edge", "faces", "models", "deploy", "central", "eval"):
        assert f"    {command} " in help_.stdout
    checked = edge_only("edge", "check-config", "--config", str(EXAMPLE))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["site"] == "store-1"
    for args in (
        ("edge", "run", "--help"),
        ("edge", "doctor", "--help"),
        ("faces", "--help"),
        ("models", "fetch", "--help"),
        ("eval", "verify", "--help"),
        ("eval", "video", "--help"),
        ("deploy", "bundle", "--help"),
    ):
        result = edge_only(*args)
        assert result.returncode == 0 and "usage: revisit" in result.stdout, (args, result.stderr)
    listed = edge_only("models", "list", "--json", "--models", str(tmp_path))
    assert listed.returncode == 0 and {r["status"] for r in json.loads(listed.stdout)} == {"missing"}
    # The box's engine step: an ONNX Runtime configuration has no engines to build.
    engines = edge_only("deploy", "build-engines", "--config", str(EXAMPLE))
    assert engines.returncode == 0 and "no engines to build" in engines.stdout, engines.stderr


@pytest.mark.parametrize(
    "args",
    [("central", "run"), ("central", "--help"), ("demo",), ("eval", "cluster", "--data", "x"), ("eval", "search")],
)
def test_central_commands_say_what_to_install(edge_only, args):
    result = edge_only(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "needs the central extra" in lines[0] and "pip install 'revisit[central]'" in lines[0]
    assert "sqlmodel" in lines[0] and "qdrant_client" in lines[0]


def test_faces_runs_without_central(edge_only, models_dir, facedata):
    photo = sorted((facedata / "photos").glob("*/*_0001.jpg"))[0]
    result = edge_only("faces", "--json", "--models", str(models_dir), str(photo))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(record["faces"]) >= 1 and record["recognizer_id"].startswith("w600k_mbf@")


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def test_help_lines_match_the_modules():
    """The help listed without importing a part is the help its module gives the command."""
    for parts, prefix in ((PARTS, []), (EVAL_PARTS, ["eval"])):
        for part in parts:
            if part.central and missing_central():
                continue  # an edge-only environment: central's modules cannot be imported
            for name, help_ in part.commands.items():
                sub = _subcommands(build_parser([*prefix, name]))
                if prefix:
                    sub = _subcommands(sub.choices["eval"])
                assert {a.dest: a.help for a in sub._choices_actions}[name] == help_, (part.module, name)

"""The systemd units (systemd-analyze verify), the central example configuration, the Qdrant collection script."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = [REPO / "systemd" / "revisit-edge.service", REPO / "systemd" / "revisit-central.service"]
PROGRAM = "/opt/revisit/.venv/bin/revisit"


def verify(unit_text: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (Debian package `systemd`)")
    # The program exists only on an installed box: verify against a stand-in at another path.
    stand_in = tmp_path / "revisit"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    assert PROGRAM in unit_text
    unit = tmp_path / name
    unit.write_text(unit_text.replace(PROGRAM, str(stand_in)))
    return subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path):
    result = verify(unit.read_text(), tmp_path, unit.name)
    # systemd-analyze exits 0 on settings it ignores; those are printed: nothing may be.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_verify_would_catch_a_bad_setting(tmp_path):
    text = UNITS[1].read_text().replace("Type=exec", "Type=exce")
    assert "Failed to parse service type" in verify(text, tmp_path, "revisit-central.service").stderr


def unit_settings(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keep the keys' case
    parser.read_string(path.read_text())
    return parser


def test_central_unit_runs_the_service_as_revisit_with_hardening():
    unit = unit_settings(UNITS[1])["Service"]
    assert unit["ExecStart"] == f"{PROGRAM} central run --config /etc/revisit/central.toml"
    assert (unit["User"], unit["StateDirectory"], unit["EnvironmentFile"]) == (
        "revisit",
        "revisit-central",
        "/etc/revisit/central.env",
    )
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
    ):
        assert unit[key] == value, key


def test_central_example_loads_in_production_mode(monkeypatch):
    config_module = pytest.importorskip("revisit.central.config")
    monkeypatch.setenv("REVISIT_SECRET_KEY", "k" * 48)
    monkeypatch.setenv("REVISIT_ADMIN_PASSWORD", "a-long-admin-passphrase")
    config = config_module.load(REPO / "deploy" / "central.example.toml")
    assert isinstance(config, config_module.CentralConfig)
    assert config.production and config.broker is not None and config.broker.tls is not None
    assert config.broker.client_id == "revisit-central"  # = the certificate's name (use_username_as_clientid)
    assert config.database.startswith("postgresql+psycopg://") and config.qdrant.url


def test_qdrant_init_collections_creates_replicated_collections(capsys):
    script = REPO / "deploy" / "qdrant" / "init_collections.py"
    spec = importlib.util.spec_from_file_location("init_collections", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")  # local mode accepts (and ignores) the cluster settings
    with pytest.warns(UserWarning, match="Payload indexes"):
        report = module.init_collections(client, {"w600k_mbf@5e03a553209a": 512}, site_tenant=True)
    assert len(report) == 2 and all("created (512-d, replication_factor 2" in line for line in report)
    assert all("exists" in line for line in module.init_collections(client, {"w600k_mbf@5e03a553209a": 512}))
    from revisit.central.vectors import collection_base

    base = collection_base("revisit", "w600k_mbf@5e03a553209a")  # the names central/vectors.py looks for
    assert {c.name for c in client.get_collections().collections} == {f"{base}_prototypes", f"{base}_sightings"}

"""Central configuration: defaults, strictness, TOML, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from revisit.central.config import CentralConfig, load
from revisit.shared.config import validate
from revisit.shared.errors import ConfigError

STRONG = "x" * 40


def test_defaults_are_a_single_box(tmp_path):
    config = CentralConfig(data_dir=tmp_path)
    assert config.broker is None and config.embedded_broker.port == 1883
    assert config.database == f"sqlite:///{tmp_path / 'revisit.db'}"
    assert config.qdrant_path == tmp_path / "qdrant" and config.crops_dir == tmp_path / "crops"
    assert config.cluster.scope == "all" and config.cluster.visit_gap_min == 30
    assert config.loyal.min_visits == 3 and config.loyal.window_days == 30
    assert config.secret_key is None and not config.production  # development: a random one per data_dir


def test_toml_file_with_external_services(tmp_path):
    path = tmp_path / "central.toml"
    path.write_text(f"""
data_dir = "{tmp_path}"
database_url = "postgresql+psycopg://revisit@db/revisit"
[broker]
host = "mqtt.example.com"
port = 8883
shared_group = "central"
client_id = "central-1"
[broker.tls]
ca = "/etc/revisit/ca.pem"
[qdrant]
url = "https://qdrant.example.com:6333"
api_key = "k"
[cluster]
threshold = 0.5
scope = "site"
[retention]
crops_days = 7
sightings_days = 90
""")
    config = load(path)
    assert config.broker.shared_group == "central" and config.broker.tls.ca == Path("/etc/revisit/ca.pem")
    assert config.qdrant_path is None and config.qdrant.api_key.get_secret_value() == "k"
    assert config.database.startswith("postgresql+psycopg://") and config.cluster.scope == "site"
    assert config.retention.crops_days == 7


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"databse_url": "x"}, "databse_url: unknown key"),
        ({"cluster": {"treshold": 0.5}}, "cluster.treshold: unknown key"),
        ({"cluster": {"threshold": 1.5}}, "cluster.threshold"),
        ({"cluster": {"scope": "region"}}, "cluster.scope"),
        ({"qdrant": {"path": "/q", "url": "http://q"}}, "not both"),
        ({"qdrant": {"api_key": "k"}}, "api_key needs qdrant.url"),
        ({"broker": {"shared_group": "a/b"}}, "broker.shared_group"),
        ({"embedded_broker": {"port": 70000}}, "embedded_broker.port"),
        ({"retention": {"crops_days": 0}}, "retention.crops_days"),
    ],
)
def test_invalid_configuration_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate(CentralConfig, data, "central.toml")


def test_production_refuses_default_secrets(monkeypatch):
    monkeypatch.delenv("REVISIT_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("REVISIT_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        validate(CentralConfig, {"production": True})
    assert "secret_key" in str(err.value) and "admin.password_hash" in str(err.value)
    with pytest.raises(ConfigError, match="admin password is a default"):
        monkeypatch.setenv("REVISIT_ADMIN_PASSWORD", "admin")
        validate(CentralConfig, {"production": True, "secret_key": STRONG})
    monkeypatch.setenv("REVISIT_ADMIN_PASSWORD", "a long passphrase")
    with pytest.raises(ConfigError, match="beyond localhost"):
        validate(CentralConfig, {"production": True, "secret_key": STRONG, "embedded_broker": {"bind": "0.0.0.0"}})
    config = validate(CentralConfig, {"production": True, "secret_key": STRONG})
    assert config.admin.password() == "a long passphrase"


def test_secret_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("REVISIT_SECRET_KEY", STRONG)
    monkeypatch.setenv("REVISIT_ADMIN_PASSWORD", "a long passphrase")
    config = validate(CentralConfig, {"production": True})
    assert config.secret_key.get_secret_value() == STRONG


def test_reading_the_configuration_registers_no_kiosk_table(tmp_path):
    """The `[kiosk]` settings come from `kiosk/config.py`; the tables are registered by the service (explicitly)."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom sqlmodel import SQLModel\nimport revisit.central.config\n"
        "assert 'revisit.central.kiosk.models' not in sys.modules, 'kiosk models imported'\n"
        "assert 'event' not in SQLModel.metadata.tables, 'kiosk tables registered'\n"
        "import revisit.central.service\n"
        "assert {'event', 'event_photo', 'event_guest_order'} <= set(SQLModel.metadata.tables)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

"""Edge configuration: validation names the bad key, duplicates and pairs are refused, secrets are redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from revisit.edge.cli import redacted
from revisit.edge.config import EdgeConfig, load, redact
from revisit.shared.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "edge.example.toml"

MINIMAL = """
site = "s1"
device = "d1"
[[cameras]]
id = "door"
source = "rtsp://u:p@10.0.0.5/s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_example_file_loads():
    config = load(EXAMPLE)
    assert config.site == "store-1"
    assert [c.id for c in config.cameras] == ["door", "till", "jetson-hw"]
    assert [c.enabled for c in config.cameras] == [True, True, False]
    assert config.broker.tls is not None and config.broker.tls.cert is not None
    assert config.broker.protocol == "3.1.1"


def test_minimal_defaults(tmp_path):
    config = load(write(tmp_path, MINIMAL))
    assert config.broker.port == 1883 and config.broker.max_inflight == 20
    assert config.cameras[0].fps == 5 and config.live.port == 8090 and config.spool.max_mb == 512


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ("colour = 'red'\n", ["colour", "unknown key"]),
        ("[broker]\nhots = 'x'\n", ["broker.hots", "unknown key"]),
        ("[spool]\nmax_gb = 1\n", ["spool.max_gb", "unknown key"]),
        ("[engine.detector]\nmodle = 'x'\n", ["engine.detector.modle", "unknown key"]),
    ],
)
def test_unknown_keys_are_named(tmp_path, extra, names):
    text = (
        MINIMAL.replace('device = "d1"\n', 'device = "d1"\n' + extra) if not extra.startswith("[") else MINIMAL + extra
    )
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    for name in names:
        assert name in str(err.value)


def test_unknown_camera_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"cameras\.0\.fsp: unknown key"):
        load(write(tmp_path, MINIMAL + "fsp = 5\n"))


def test_duplicate_camera_ids(tmp_path):
    text = MINIMAL + '[[cameras]]\nid = "door"\nsource = "/videos/a.mp4"\n'
    with pytest.raises(ConfigError, match="duplicate camera ids: door"):
        load(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('site = "s 1"\ndevice = "d"\n[[cameras]]\nid = "c"\nsource = "x"\n', "site"),
        ('site = "s"\ndevice = "d"\ncameras = []\n', "cameras"),
        (MINIMAL + "[broker]\nport = 70000\n", "broker.port"),
        (MINIMAL + "[broker.tls]\nca = '/ca.pem'\ncert = '/c.pem'\n", "tls.cert and tls.key go together"),
        (MINIMAL + "[broker]\nprotocol = '3'\n", "broker.protocol"),
        (MINIMAL + "dead_zones = [[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]]\n", "dead_zones"),
        ("site = 's'\ndevice = 'd'\n[[cameras]\n", "not valid TOML"),
    ],
)
def test_invalid_values(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "nope.toml")


def test_redaction(tmp_path):
    text = MINIMAL + "[broker]\nusername = 'edge'\npassword = 'pw-secret'\n"
    config = load(write(tmp_path, text))
    data = redacted(config)
    flat = repr(data)
    assert "pw-secret" not in flat and "rtsp://u:***@10.0.0.5/s" in flat and "'p@" not in flat
    assert data["broker"]["username"] == "edge"
    assert "pw-secret" not in repr(config)  # SecretStr hides it in reprs (and so in logs) too
    assert config.broker.password.get_secret_value() == "pw-secret"


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("rtsp://admin:p4ss@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
        ("/videos/door.mp4", "/videos/door.mp4"),
        (
            "rtspsrc location=rtsp://u:pw@h/x ! decodebin ! appsink",
            "rtspsrc location=rtsp://u:***@h/x ! decodebin ! appsink",
        ),
    ],
)
def test_redact_sources(source, shown):
    assert redact(source) == shown
    assert (
        EdgeConfig.model_validate({"site": "s", "device": "d", "cameras": [{"id": "c", "source": source}]})
        .cameras[0]
        .safe_source
        == shown
    )

"""Fixtures of the deployment tests: a CA with enrolled identities (made by the `revisit deploy` commands), and
Mosquitto running the production configuration with them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from revisit.cli import main
from tests.deploy.broker import SecureBroker
from tests.mosquitto import MOSQUITTO

DEVICES = ("s1/d1", "s1/d2", "s2/d1", "s1/gone")  # s1/gone is revoked before the broker starts


@dataclass
class PKI:
    ca_dir: Path
    server: Path
    central: Path
    devices: dict[str, Path] = field(default_factory=dict)
    foreign: Path | None = None  # an identity `s1/d1` from another CA

    def device(self, cn: str) -> tuple[Path, Path, Path]:
        d = self.devices[cn] if cn != "foreign" else self.foreign
        assert d is not None
        return d / "ca.pem", d / "device.pem", d / "device.key"

    def enrol(self, site: str, device: str) -> Path:
        out = self.ca_dir / "enrolled" / site / device
        assert main(["deploy", "enrol", site, device, "--dir", str(self.ca_dir), "--broker", "127.0.0.1:8883"]) == 0
        self.devices[f"{site}/{device}"] = out
        return out


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca_dir = root / "ca"
    assert main(["deploy", "ca", "init", "--dir", str(ca_dir)]) == 0
    assert main(["deploy", "server-cert", "localhost", "--san", "127.0.0.1", "--dir", str(ca_dir)]) == 0
    assert main(["deploy", "central-cert", "--dir", str(ca_dir)]) == 0
    pki = PKI(ca_dir, ca_dir / "server" / "localhost", ca_dir / "central" / "revisit-central")
    for cn in DEVICES:
        pki.enrol(*cn.split("/"))
    assert main(["deploy", "revoke", "s1/gone", "--dir", str(ca_dir)]) == 0
    other = root / "other-ca"
    assert main(["deploy", "ca", "init", "--dir", str(other)]) == 0
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(other)]) == 0
    pki.foreign = other / "enrolled" / "s1" / "d1"
    return pki


@pytest.fixture(scope="session")
def secure_broker(pki: PKI, tmp_path_factory) -> Iterator[SecureBroker]:
    """deploy/mosquitto/mosquitto.conf + acl on a free loopback port, with the `pki` CA's files."""
    if not MOSQUITTO.is_file():
        pytest.skip(f"{MOSQUITTO} not installed (Debian package `mosquitto`)")
    broker = SecureBroker(tmp_path_factory.mktemp("broker"), pki.ca_dir, pki.server).start()
    yield broker
    broker.stop()

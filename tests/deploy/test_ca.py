"""`revisit deploy ca|enrol|server-cert|central-cert|revoke|crl|list`: the private CA and its files."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from revisit.cli import main
from revisit.edge.config import EdgeConfig
from revisit.pki import CertificateAuthority

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def crl_serials(ca_dir: Path) -> set[int]:
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    return {r.serial_number for r in crl}


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ca"
    assert main(["deploy", "ca", "init", "--dir", str(d)]) == 0
    return d


def test_ca_init_writes_a_private_ca_and_refuses_to_overwrite(ca_dir, capsys):
    assert mode(ca_dir / "ca.key") == 0o600 and mode(ca_dir) == 0o700
    ca = cert(ca_dir / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.issuer == ca.subject
    assert crl_serials(ca_dir) == set()
    before = (ca_dir / "ca.key").read_bytes()
    assert main(["deploy", "ca", "init", "--dir", str(ca_dir)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (ca_dir / "ca.key").read_bytes() == before


def test_a_ca_dir_is_required(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REVISIT_CA_DIR", raising=False)
    assert main(["deploy", "enrol", "s1", "d1"]) == 2
    assert "--dir" in capsys.readouterr().err
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(tmp_path / "nothing")]) == 2
    assert "revisit deploy ca init" in capsys.readouterr().err


def test_enrol_writes_the_boxs_identity_and_config_snippet(ca_dir, tmp_path):
    out = tmp_path / "box"
    assert (
        main(
            [
                "deploy",
                "enrol",
                "store-1",
                "box-a",
                "--dir",
                str(ca_dir),
                "--out",
                str(out),
                "--broker",
                "mqtt.example.com:8883",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["ca.pem", "device.key", "device.pem", "edge.toml"]
    assert mode(out / "device.key") == 0o600
    c = cert(out / "device.pem")
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "store-1/box-a"
    assert c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    assert not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    c.verify_directly_issued_by(cert(ca_dir / "ca.pem"))
    # The snippet, plus a camera, is a valid edge configuration.
    data = tomllib.loads((out / "edge.toml").read_text())
    data["cameras"] = [{"id": "door", "source": "rtsp://10.0.0.5/x"}]
    config = EdgeConfig.model_validate(data)
    assert (config.site, config.device, config.broker.host, config.broker.port) == (
        "store-1",
        "box-a",
        "mqtt.example.com",
        8883,
    )
    assert str(config.broker.tls.cert) == "/etc/revisit/tls/device.pem"


def test_enrol_refuses_bad_ids_duplicates_and_overwrites(ca_dir, capsys):
    for site, device in (("a/b", "d"), ("s", "d#"), ("s", "")):
        assert main(["deploy", "enrol", site, device, "--dir", str(ca_dir)]) == 2
        assert "use 1-64 of letters" in capsys.readouterr().err
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(ca_dir)]) == 0
    # Without --broker the snippet names no host: the installer asks for --broker instead of guessing one.
    snippet = tomllib.loads((ca_dir / "enrolled" / "s1" / "d1" / "edge.toml").read_text())
    assert "host" not in snippet["broker"]
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(ca_dir), "--out", str(ca_dir / "x")]) == 2
    assert "already has an active certificate" in capsys.readouterr().err
    # --reissue (renewal) into the default folder would overwrite the key: refused before anything is issued.
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(ca_dir), "--reissue"]) == 2
    assert "already holds device.key" in capsys.readouterr().err
    assert len(CertificateAuthority.open(ca_dir).issued()) == 1
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(ca_dir), "--reissue", "--out", str(ca_dir / "y")]) == 0
    assert len(CertificateAuthority.open(ca_dir).issued()) == 2


def test_server_and_central_certificates(ca_dir, capsys):
    assert main(["deploy", "server-cert", "mqtt.example.com", "--san", "10.0.0.2", "--dir", str(ca_dir)]) == 0
    server = cert(ca_dir / "server" / "mqtt.example.com" / "server.pem")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.com"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.2"]
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert (ca_dir / "server" / "mqtt.example.com" / "crl.pem").is_file()
    capsys.readouterr()
    assert main(["deploy", "central-cert", "--name", "central-2", "--dir", str(ca_dir)]) == 0
    assert "user central-2\n  topic read revisit/v1/#\n  topic write revisit/v1/+/+/acks" in capsys.readouterr().out
    c = cert(ca_dir / "central" / "central-2" / "central.pem")
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "central-2"
    assert main(["deploy", "central-cert", "--name", "a/b", "--dir", str(ca_dir)]) == 2


def test_revoke_updates_the_crl(ca_dir, capsys):
    for site, device in (("s1", "d1"), ("s1", "d2"), ("s2", "d2")):
        assert main(["deploy", "enrol", site, device, "--dir", str(ca_dir)]) == 0
    ca = CertificateAuthority.open(ca_dir)
    serial = {r.cn: int(r.serial, 16) for r in ca.issued()}

    def number() -> int:
        crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    first = number()
    assert main(["deploy", "revoke", "d1", "--dir", str(ca_dir)]) == 0  # a device id used at one site
    assert crl_serials(ca_dir) == {serial["s1/d1"]} and number() == first + 1
    assert main(["deploy", "revoke", "d2", "--dir", str(ca_dir)]) == 2  # used at two sites: ambiguous
    assert "several sites" in capsys.readouterr().err
    assert main(["deploy", "revoke", "--serial", f"{serial['s2/d2']:X}", "--dir", str(ca_dir)]) == 0
    assert crl_serials(ca_dir) == {serial["s1/d1"], serial["s2/d2"]}
    assert main(["deploy", "revoke", "nobody", "--dir", str(ca_dir)]) == 2
    # Revoked: enrolling the same box again needs no --reissue.
    assert main(["deploy", "enrol", "s1", "d1", "--dir", str(ca_dir), "--out", str(ca_dir / "again")]) == 0
    capsys.readouterr()
    assert main(["deploy", "list", "--dir", str(ca_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["cn"] for r in rows if r["revoked_at"]] == ["s1/d1", "s2/d2"]
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(cert(ca_dir / "ca.pem").public_key())
    assert main(["deploy", "crl", "--dir", str(ca_dir)]) == 0
    assert crl_serials(ca_dir) == {serial["s1/d1"], serial["s2/d2"]}


def test_ca_key_encrypted_with_a_passphrase(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REVISIT_CA_PASSPHRASE", "correct horse")
    d = tmp_path / "ca"
    assert main(["deploy", "ca", "init", "--dir", str(d)]) == 0
    assert b"ENCRYPTED" in (d / "ca.key").read_bytes()
    assert main(["deploy", "enrol", "s", "d", "--dir", str(d)]) == 0
    monkeypatch.setenv("REVISIT_CA_PASSPHRASE", "wrong")
    assert main(["deploy", "enrol", "s", "e", "--dir", str(d)]) == 2
    assert "REVISIT_CA_PASSPHRASE" in capsys.readouterr().err

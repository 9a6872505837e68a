"""`revisit deploy ca|enrol|server-cert|central-cert|revoke|crl|list`: the private CA's commands (revisit/pki.py
does the cryptography)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from revisit.deploy.errors import DeployError
from revisit.pki import CA_CERT, CRL_FILE, CertificateAuthority, PKIError, device_cn, write_atomic, write_identity

CA_DIR_ENV = "REVISIT_CA_DIR"
TLS_DIR = "/etc/revisit/tls"  # where install-edge.sh puts a box's identity


def _ca_dir(args: argparse.Namespace) -> Path:
    if not args.dir:
        raise DeployError(f"give the CA directory with --dir DIR (or set ${CA_DIR_ENV})")
    return Path(args.dir)


def _fresh_out(out: Path, names: list[str]) -> None:
    """Refuse before issuing anything if a key would be overwritten (the index must match what exists)."""
    taken = [n for n in names if (out / n).exists()]
    if taken:
        raise PKIError(f"{out} already holds {', '.join(taken)}: choose another --out or remove them")


def run_ca_init(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.init(_ca_dir(args), name=args.name, days=args.days)
    print(f"CA created in {ca.dir}: {CA_CERT} (give to every box, central and the broker), {CRL_FILE} (the broker),")
    print("ca.key (mode 0600: keep it here, offline and backed up; set $REVISIT_CA_PASSPHRASE to encrypt it)")
    return 0


def run_enrol(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_ca_dir(args))
    cn = device_cn(args.site, args.device)
    out = args.out or ca.dir / "enrolled" / args.site / args.device
    _fresh_out(out, ["device.key", "device.pem"])
    host, port = _host_port(args.broker) if args.broker else (None, 8883)
    identity = ca.issue("device", cn, days=args.days, reissue=args.reissue)
    files = write_identity(identity, ca, out, "device")
    snippet = out / "edge.toml"
    write_atomic(
        snippet,
        edge_snippet(args.site, args.device, host, port, identity.record.serial, identity.record.not_after).encode(),
    )
    print(f"enrolled {cn} (serial {identity.record.serial}, valid until {identity.record.not_after[:10]})")
    for path in [*files, snippet]:
        print(f"  {path}")
    broker = "" if args.broker else " --broker HOST:PORT"
    print(
        f"on the box: sudo install-edge.sh --certs <this folder>{broker} --camera ID=URL ...; then delete this "
        "copy of device.key"
    )
    return 0


def edge_snippet(site: str, device: str, host: str | None, port: int, serial: str, not_after: str) -> str:
    """The settings of a box's identity; without a host the installer asks for --broker."""
    host_line = (
        f"host = {json.dumps(host)}\n" if host else "# host: not given at enrolment (install-edge.sh --broker)\n"
    )
    return (
        f'# Revisit identity of {site}/{device}: certificate CN "{site}/{device}", serial {serial}, '
        f"valid until {not_after[:10]}.\n"
        "# install-edge.sh --certs DIR copies ca.pem, device.pem and device.key to /etc/revisit/tls/ and writes\n"
        "# these settings into /etc/revisit/edge.toml; site and device must match the certificate.\n"
        f'site = "{site}"\n'
        f'device = "{device}"\n\n'
        "[broker]\n"
        f"{host_line}"
        f"port = {port}\n\n"
        "[broker.tls]\n"
        f'ca = "{TLS_DIR}/ca.pem"\n'
        f'cert = "{TLS_DIR}/device.pem"\n'
        f'key = "{TLS_DIR}/device.key"\n'
    )


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DeployError(f"--broker {value!r}: expected HOST:PORT, e.g. mqtt.example.com:8883")
    return host.strip("[]"), int(port)


def run_server_cert(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_ca_dir(args))
    out = args.out or ca.dir / "server" / args.hostname
    _fresh_out(out, ["server.key", "server.pem"])
    sans = list(dict.fromkeys([args.hostname, *args.san]))
    identity = ca.issue("server", args.hostname, sans=sans, days=args.days)
    files = write_identity(identity, ca, out, "server")
    shutil.copyfile(ca.dir / CRL_FILE, out / CRL_FILE)
    print(f"broker certificate for {', '.join(sans)} (serial {identity.record.serial})")
    for path in [*files, out / CRL_FILE]:
        print(f"  {path}")
    print("copy them to /etc/mosquitto/revisit/ on the broker (owner root:mosquitto, server.key mode 0640), with")
    print("deploy/mosquitto/acl; use deploy/mosquitto/mosquitto.conf as /etc/mosquitto/mosquitto.conf")
    return 0


def run_central_cert(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_ca_dir(args))
    if "/" in args.name:
        raise DeployError(f"--name {args.name!r}: a central name has no '/' (device identities do)")
    out = args.out or ca.dir / "central" / args.name
    _fresh_out(out, ["central.key", "central.pem"])
    identity = ca.issue("central", args.name, days=args.days, reissue=args.reissue)
    files = write_identity(identity, ca, out, "central")
    print(f"central identity {args.name} (serial {identity.record.serial})")
    for path in files:
        print(f"  {path}")
    print("the broker's ACL (/etc/mosquitto/revisit/acl) needs this block, then `systemctl reload mosquitto`:")
    print(f"  user {args.name}\n  topic read revisit/v1/#\n  topic write revisit/v1/+/+/acks")
    print("central.toml:")
    print(
        f'  [broker]\n  client_id = "{args.name}"\n  [broker.tls]\n  ca = "/etc/revisit/tls/ca.pem"\n'
        f'  cert = "/etc/revisit/tls/central.pem"\n  key = "/etc/revisit/tls/central.key"'
    )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    if not args.name and not args.serial:
        raise DeployError("give NAME (SITE/DEVICE, a device id or a central name) or --serial HEX")
    ca = CertificateAuthority.open(_ca_dir(args))
    revoked = ca.revoke(args.name, args.serial)
    for r in revoked:
        print(f"revoked {r.cn} (serial {r.serial})")
    if not revoked:
        print(f"nothing to do: {args.name or args.serial} was already revoked")
    print(
        f"copy {ca.dir / CRL_FILE} to /etc/mosquitto/revisit/{CRL_FILE} on the broker, then "
        "`systemctl reload mosquitto` (refuses new connections) or `restart` (also drops a connected box)"
    )
    return 0


def run_crl(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_ca_dir(args))
    path = ca.write_crl(days=args.days)
    print(f"{path} re-signed, valid {args.days} days: copy it to the broker and reload mosquitto")
    return 0


def run_list(args: argparse.Namespace) -> int:
    ca = CertificateAuthority.open(_ca_dir(args))
    rows = ca.issued()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    for r in rows:
        state = f"revoked {r.revoked_at[:10]}" if r.revoked_at else ("active" if r.active else "expired")
        print(f"{r.kind:8} {r.cn:40} {r.serial:42} until {r.not_after[:10]}  {state}")
    return 0

"""A small private certificate authority for mutual TLS between edge boxes, central and the MQTT broker.

One directory holds the CA (keep it offline, on the operator's machine, backed up):

    ca.key      the CA's private key (EC P-256, mode 0600; encrypted when $REVISIT_CA_PASSPHRASE is set)
    ca.pem      the CA certificate: every box, central and the broker trust it
    crl.pem     the revocation list the broker checks (`crlfile`); re-signed on every revocation
    index.json  every certificate issued: serial, common name, kind, expiry, revocation

Identities. The broker takes the certificate's common name (CN) as the MQTT username
(`use_identity_as_username`) and as the client id (`use_username_as_clientid`):
  - a device's CN is `<site>/<device>`: the ACL pattern `revisit/v1/%u/faces` then expands to exactly that
    device's topics, so a box can publish neither as another device nor as another site. Site and device ids
    never contain '/', so the CN of a device always holds exactly one '/';
  - central's CN is a plain name (default `revisit-central`, never a '/'): it appears in the ACL as a `user`;
  - the broker's server certificate names its host names and addresses in subjectAltName.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from revisit.shared.errors import RevisitError
from revisit.shared.schema import is_ident

CA_KEY, CA_CERT, CRL_FILE, INDEX_FILE = "ca.key", "ca.pem", "crl.pem", "index.json"
PASSPHRASE_ENV = "REVISIT_CA_PASSPHRASE"
CA_DAYS = 20 * 365
LEAF_DAYS = 5 * 365  # an unattended box must not lose its identity soon; revoke instead of waiting
# The broker refuses every client once the CRL's nextUpdate has passed, so the CRL is long-lived and
# re-signed on every revocation (`revisit deploy crl` re-signs it without revoking anything).
CRL_DAYS = 5 * 365
Kind = Literal["device", "server", "central"]


class PKIError(RevisitError):
    """The CA directory is missing, incomplete or would be overwritten, or a name is invalid."""


@dataclass
class Issued:
    serial: str  # hex
    cn: str
    kind: Kind
    not_after: str  # ISO 8601, UTC
    issued_at: str
    revoked_at: str | None = None
    sans: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.revoked_at is None and dt.datetime.fromisoformat(self.not_after) > _now()


@dataclass
class Identity:
    """A freshly issued key and certificate (PEM), with its index entry."""

    key_pem: bytes
    cert_pem: bytes
    record: Issued


def device_cn(site: str, device: str) -> str:
    for what, value in (("site", site), ("device", device)):
        if not is_ident(value):
            raise PKIError(f"{what} id {value!r}: use 1-64 of letters, digits, '_', '.', '-'")
    return f"{site}/{device}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def write_private(path: Path, data: bytes) -> None:
    """Write a new secret with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PKIError(f"{path} exists: refusing to overwrite a private key") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode is masked by the umask


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


class CertificateAuthority:
    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.dir = Path(directory)
        self.key = key
        self.cert = cert

    # -- creating and opening ----------------------------------------------------------------------------------

    @classmethod
    def init(cls, directory: str | Path, name: str = "Revisit private CA", days: int = CA_DAYS) -> CertificateAuthority:
        directory = Path(directory)
        existing = [p.name for p in (directory / CA_KEY, directory / CA_CERT, directory / INDEX_FILE) if p.exists()]
        if existing:
            raise PKIError(f"{directory} already holds a CA ({', '.join(existing)}): refusing to overwrite it")
        if directory.exists() and any(directory.iterdir()):
            raise PKIError(f"{directory} is not empty: give a new or empty directory for the CA")
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key = _new_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Revisit"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(directory / CA_KEY, key_pem(key, _passphrase()))
        write_atomic(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(directory, key, cert)
        ca._save_index({"crl_number": 0, "certs": []})
        ca.write_crl()
        return ca

    @classmethod
    def open(cls, directory: str | Path) -> CertificateAuthority:
        directory = Path(directory)
        missing = [n for n in (CA_KEY, CA_CERT, INDEX_FILE) if not (directory / n).is_file()]
        if missing:
            raise PKIError(
                f"{directory} is not a Revisit CA (missing {', '.join(missing)}): "
                f"create one with `revisit deploy ca init --dir {directory}`"
            )
        try:
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), _passphrase())
        except (TypeError, ValueError) as exc:
            raise PKIError(f"cannot load {directory / CA_KEY}: {exc} (encrypted? set ${PASSPHRASE_ENV})") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"{directory / CA_KEY}: not an EC key")
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        return cls(directory, key, cert)

    # -- the index ---------------------------------------------------------------------------------------------

    def _load_index(self) -> dict:
        return json.loads((self.dir / INDEX_FILE).read_text())

    def _save_index(self, index: dict) -> None:
        write_atomic(self.dir / INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode(), 0o600)

    def issued(self) -> list[Issued]:
        return [Issued(**row) for row in self._load_index()["certs"]]

    def _record(self, record: Issued) -> None:
        index = self._load_index()
        index["certs"].append(asdict(record))
        self._save_index(index)

    # -- issuing -----------------------------------------------------------------------------------------------

    def issue(
        self, kind: Kind, cn: str, sans: list[str] | None = None, days: int = LEAF_DAYS, reissue: bool = False
    ) -> Identity:
        """A new key and a certificate for `cn`. Refuses a second active certificate for a client CN unless
        `reissue` (renewal before expiry: both stay valid until the old one is revoked)."""
        if not cn or len(cn) > 64 or any(c in cn for c in "+#\0") or cn != cn.strip():
            raise PKIError(f"common name {cn!r}: 1-64 characters, no '+', '#' or surrounding spaces")
        if kind != "server" and not reissue:
            active = [r for r in self.issued() if r.cn == cn and r.active]
            if active:
                raise PKIError(
                    f"{cn} already has an active certificate (serial {active[0].serial}): revoke it first "
                    f"(`revisit deploy revoke {cn} --dir {self.dir}`) or pass --reissue to issue another"
                )
        key = _new_key()
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        unit = {"device": "device", "server": "broker", "central": "central"}[kind]
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Revisit"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        sans = list(sans or [])
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), False)
        cert = builder.sign(self.key, hashes.SHA256())
        record = Issued(
            serial=f"{cert.serial_number:x}",
            cn=cn,
            kind=kind,
            not_after=not_after.isoformat(),
            issued_at=now.isoformat(),
            sans=sans,
        )
        self._record(record)
        return Identity(key_pem(key), cert.public_bytes(serialization.Encoding.PEM), record)

    # -- revoking ----------------------------------------------------------------------------------------------

    def revoke(self, name: str | None = None, serial: str | None = None) -> list[Issued]:
        """Revoke every active certificate of `name` (a CN, or a device id unique among devices), or one serial;
        re-sign the CRL. Returns what was revoked."""
        index = self._load_index()
        rows = [Issued(**row) for row in index["certs"]]
        if serial is not None:
            try:
                wanted = int(serial, 16)
            except ValueError:
                raise PKIError(f"serial {serial!r}: not hexadecimal") from None
            chosen = [r for r in rows if int(r.serial, 16) == wanted]
        else:
            chosen = [r for r in rows if r.cn == name]
            if not chosen and name and "/" not in name:  # a bare device id
                devices = {r.cn for r in rows if r.kind == "device" and r.cn.split("/", 1)[1] == name}
                if len(devices) > 1:
                    raise PKIError(
                        f"device id {name} is used at several sites ({', '.join(sorted(devices))}): give SITE/DEVICE"
                    )
                chosen = [r for r in rows if r.cn in devices]
        if not chosen:
            raise PKIError(f"no certificate issued for {serial or name} in {self.dir / INDEX_FILE}")
        now = _now().isoformat()
        revoked = []
        for row in index["certs"]:
            if row["revoked_at"] is None and any(row["serial"] == r.serial for r in chosen):
                row["revoked_at"] = now
                revoked.append(Issued(**row))
        self._save_index(index)
        self.write_crl()
        return revoked

    def write_crl(self, days: int = CRL_DAYS) -> Path:
        index = self._load_index()
        index["crl_number"] = int(index.get("crl_number", 0)) + 1
        self._save_index(index)
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        for row in index["certs"]:
            if row["revoked_at"]:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(row["serial"], 16))
                    .revocation_date(dt.datetime.fromisoformat(row["revoked_at"]))
                    .build()
                )
        crl = builder.sign(self.key, hashes.SHA256())
        path = self.dir / CRL_FILE
        write_atomic(path, crl.public_bytes(serialization.Encoding.PEM))
        return path


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def write_identity(identity: Identity, ca: CertificateAuthority, out: Path, stem: str) -> list[Path]:
    """`<stem>.pem`, `<stem>.key` (0600) and `ca.pem` in `out`; refuses to overwrite a key."""
    out.mkdir(parents=True, exist_ok=True)
    key, cert, ca_pem = out / f"{stem}.key", out / f"{stem}.pem", out / CA_CERT
    write_private(key, identity.key_pem)
    write_atomic(cert, identity.cert_pem)
    write_atomic(ca_pem, ca.cert.public_bytes(serialization.Encoding.PEM))
    return [ca_pem, cert, key]


def common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""

"""`revisit deploy ...`: the private CA and device enrolment, the offline install bundle, TensorRT engines.

    revisit deploy ca init --dir CA                 a private CA (CA/ca.key, ca.pem, crl.pem, index.json)
    revisit deploy enrol SITE DEVICE --dir CA       a box's key and client certificate + an edge.toml snippet
    revisit deploy server-cert HOST --dir CA        the broker's server certificate
    revisit deploy central-cert --dir CA            central's client identity (one per central worker)
    revisit deploy revoke NAME --dir CA             revoke and re-sign the CRL the broker reads
    revisit deploy crl --dir CA                     re-sign the CRL without revoking anything
    revisit deploy list --dir CA                    every certificate issued
    revisit deploy bundle --out FILE.tar.gz         wheelhouse + models + installer, for offline installs
    revisit deploy build-engines --config FILE      prebuild TensorRT engines (Jetson / NVIDIA GPU)

See deploy/README.md for the installer's step-by-step guide and revisit/pki.py for the identity design.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from revisit import __version__
from revisit.pki import (
    CA_CERT,
    CRL_FILE,
    LEAF_DAYS,
    CertificateAuthority,
    PKIError,
    device_cn,
    write_atomic,
    write_identity,
)
from revisit.shared.errors import RevisitError

CA_DIR_ENV = "REVISIT_CA_DIR"
REPO = Path(__file__).resolve().parents[1]
# What the installer and the bundle need from a source checkout (relative to it).
BUNDLE_FILES = {
    "install-edge.sh": "deploy/install-edge.sh",
    "README.md": "deploy/README.md",
    "edge.example.toml": "deploy/edge.example.toml",
    "systemd/revisit-edge.service": "systemd/revisit-edge.service",
}
TLS_DIR = "/etc/revisit/tls"  # where install-edge.sh puts a box's identity


class DeployError(RevisitError):
    """A deployment step cannot be done as asked."""


def register(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option

    group = sub.add_parser("deploy", help="private CA, device enrolment, offline install bundle, TensorRT engines")
    deploy = group.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)

    def ca_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            type=Path,
            default=os.environ.get(CA_DIR_ENV),
            metavar="DIR",
            help=f"the CA directory (default ${CA_DIR_ENV}); keep it offline and backed up",
        )

    ca = deploy.add_parser("ca", help="the private certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    p = ca_sub.add_parser("init", help="create a private CA (refuses to overwrite one)")
    ca_dir(p)
    p.add_argument("--name", default="Revisit private CA", help="the CA certificate's common name")
    p.add_argument("--days", type=int, default=20 * 365, help="CA validity (default 20 years)")
    p.set_defaults(func=run_ca_init)

    p = deploy.add_parser("enrol", help="issue a box's client certificate; write what the installer copies to it")
    p.add_argument("site")
    p.add_argument("device")
    ca_dir(p)
    p.add_argument("--out", type=Path, metavar="DIR", help="default: <dir>/enrolled/<site>/<device>")
    p.add_argument("--broker", metavar="HOST:PORT", help="written into the edge.toml snippet")
    p.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity (default {LEAF_DAYS} days)")
    p.add_argument("--reissue", action="store_true", help="issue although an active certificate exists (renewal)")
    p.set_defaults(func=run_enrol)

    p = deploy.add_parser("server-cert", help="the broker's TLS server certificate")
    p.add_argument("hostname", help="the name the boxes and central connect to")
    ca_dir(p)
    p.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="another host name or IP address the broker is reached by (repeatable)",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="default: <dir>/server/<hostname>")
    p.add_argument("--days", type=int, default=LEAF_DAYS)
    p.set_defaults(func=run_server_cert)

    p = deploy.add_parser("central-cert", help="a central worker's client identity (read access to all sites)")
    ca_dir(p)
    p.add_argument(
        "--name",
        default="revisit-central",
        help="the identity (CN, MQTT username and client id); one per worker (default revisit-central)",
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="default: <dir>/central/<name>")
    p.add_argument("--days", type=int, default=LEAF_DAYS)
    p.add_argument("--reissue", action="store_true", help="issue although an active certificate exists (renewal)")
    p.set_defaults(func=run_central_cert)

    p = deploy.add_parser("revoke", help="revoke certificates and re-sign the CRL the broker reads")
    p.add_argument("name", nargs="?", help="SITE/DEVICE, a device id used at one site only, or a central name")
    ca_dir(p)
    p.add_argument("--serial", metavar="HEX", help="revoke one certificate by serial instead")
    p.set_defaults(func=run_revoke)

    p = deploy.add_parser("crl", help="re-sign the CRL (nothing revoked); the broker refuses all after it expires")
    ca_dir(p)
    p.add_argument("--days", type=int, default=5 * 365, help="validity of the new CRL (default 5 years)")
    p.set_defaults(func=run_crl)

    p = deploy.add_parser("list", help="every certificate this CA issued")
    ca_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_list)

    p = deploy.add_parser("bundle", help="an offline install bundle: wheelhouse, verified models, installer")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.tar.gz")
    add_models_option(p)
    p.add_argument("--source", type=Path, default=REPO, metavar="DIR", help="the source checkout (default: this one)")
    p.add_argument(
        "--no-deps",
        action="store_true",
        help="only the project's wheel, no dependencies (tests; the box must already have them)",
    )
    p.add_argument("--platform", metavar="TAG", help="target wheel platform, e.g. manylinux2014_aarch64 (Jetson)")
    p.add_argument("--python-version", metavar="X.Y", help="target Python (default: this one)")
    p.add_argument(
        "--no-build-isolation",
        action="store_true",
        help="build the project's wheel with this environment's setuptools (no download)",
    )
    p.set_defaults(func=run_bundle)

    p = deploy.add_parser("build-engines", help="build the TensorRT engines an edge configuration will load")
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="edge TOML configuration")
    add_models_option(p)
    p.set_defaults(func=run_build_engines)


# -- CA commands -----------------------------------------------------------------------------------------------


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


# -- the offline bundle ----------------------------------------------------------------------------------------


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+ " + " ".join(cmd), file=sys.stderr)
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise DeployError(f"pip failed ({result.returncode}):\n{result.stdout[-3000:]}")


def _copy_source(source: Path, dest: Path) -> None:
    """The project's sources without caches, builds, venvs, tests or data: its wheel is built from this copy."""
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "__pycache__",
        "*.egg-info",
        "build",
        "dist",
        "tests",
        ".pytest_cache",
        ".ruff_cache",
        "*.onnx",
        "*.engine",
        "models-data",
        "revisit-data",
        "var",
    )
    shutil.copytree(source, dest, ignore=ignore)


def build_bundle(
    out: Path,
    models: Path | None,
    source: Path = REPO,
    deps: bool = True,
    platform: str | None = None,
    python_version: str | None = None,
    build_isolation: bool = True,
) -> dict:
    """Write `out` (a .tar.gz holding revisit-bundle/): wheelhouse/, models/, install-edge.sh, the unit file,
    README.md and MANIFEST.json (sha256 of every file). Returns the manifest."""
    from revisit.models.manifest import Manifest
    from revisit.models.store import models_dir, resolve, status

    source = Path(source).resolve()
    missing = [rel for rel in [*BUNDLE_FILES.values(), "pyproject.toml"] if not (source / rel).is_file()]
    if missing:
        raise DeployError(f"{source} is not a Revisit source checkout (missing {', '.join(missing)}): use --source")
    directory = models_dir(models)
    specs = [s for s in Manifest.load() if status(s, directory) == "verified"]
    absent = [s.name for s in Manifest.load() if s.default and s not in specs]
    if absent:
        raise DeployError(
            f"default model(s) {', '.join(absent)} not verified in {directory}: "
            f"`revisit models fetch --models {directory}` first, or give --models DIR"
        )
    with tempfile.TemporaryDirectory(prefix="revisit-bundle-") as tmp:
        root = Path(tmp) / "revisit-bundle"
        wheelhouse = root / "wheelhouse"
        wheelhouse.mkdir(parents=True)
        src = Path(tmp) / "src"
        _copy_source(source, src)
        _pip(
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(wheelhouse),
            *([] if build_isolation else ["--no-build-isolation"]),
            str(src),
        )
        wheels = sorted(wheelhouse.glob("revisit-*.whl"))
        if len(wheels) != 1:
            raise DeployError(f"expected one revisit wheel, found {[w.name for w in wheels]}")
        if deps:
            target: list[str] = []
            if platform:
                target += ["--platform", platform, "--implementation", "cp"]
            if python_version:
                target += ["--python-version", python_version]
            # Binary wheels only: the box has no compilers and no network.
            _pip("download", "--only-binary=:all:", "--dest", str(wheelhouse), *target, str(wheels[0]))
        (root / "models").mkdir()
        for spec in specs:
            shutil.copyfile(resolve(spec, directory).path, root / "models" / Path(spec.file).name)
        for name, rel in BUNDLE_FILES.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, root / name)
        manifest = {
            "revisit": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": python_version or f"{sys.version_info.major}.{sys.version_info.minor}",
            "platform": platform or "this machine's",
            "dependencies": deps,
            "models": [s.name for s in specs],
            "files": {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()},
        }
        (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(f".{out.name}.tmp")
        with tarfile.open(tmp_out, "w:gz") as tar:
            tar.add(root, arcname="revisit-bundle")
        os.replace(tmp_out, out)
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_bundle(args: argparse.Namespace) -> int:
    manifest = build_bundle(
        args.out,
        args.models,
        args.source,
        deps=not args.no_deps,
        platform=args.platform,
        python_version=args.python_version,
        build_isolation=not args.no_build_isolation,
    )
    wheels = [f for f in manifest["files"] if f.startswith("wheelhouse/")]
    size = Path(args.out).stat().st_size / 1e6
    print(f"{args.out}: {size:.1f} MB, {len(wheels)} wheel(s), models {', '.join(manifest['models'])}")
    print(f"on the box: tar xzf {Path(args.out).name} && sudo revisit-bundle/install-edge.sh --help")
    return 0


# -- TensorRT engines ------------------------------------------------------------------------------------------


def run_build_engines(args: argparse.Namespace) -> int:
    from revisit.edge.config import load
    from revisit.models import store
    from revisit.models.manifest import Manifest

    config = load(args.config)
    engine = config.engine
    if engine.backend.type != "tensorrt":
        print(f"{args.config}: backend {engine.backend.type!r} loads the ONNX files directly; no engines to build")
        return 0
    from revisit.shared.backends.tensorrt import build_engine

    manifest = Manifest.load(custom=engine.custom_models)
    directory = args.models or engine.models_dir
    for name, role in ((engine.detector.model, "detector"), (engine.recognizer, "recognizer")):
        model = store.resolve(manifest.get(name, role), directory)
        print(f"{name}: building (minutes on a Jetson) ...", flush=True)
        print(f"{name}: {build_engine(model, engine.backend)}")
    return 0

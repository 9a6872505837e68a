"""`revisit deploy ...`: the argument parsers; the work is in ca.py, bundle.py and engines.py."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from revisit.deploy.bundle import REPO, TARGETS, run_bundle
from revisit.deploy.ca import (
    CA_DIR_ENV,
    run_ca_init,
    run_central_cert,
    run_crl,
    run_enrol,
    run_list,
    run_revoke,
    run_server_cert,
)
from revisit.deploy.engines import run_build_engines
from revisit.pki import LEAF_DAYS


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

    p = deploy.add_parser(
        "bundle",
        help="an offline install bundle for one kind of box: edge wheelhouse, verified models, installer",
        description="Targets: "
        + "; ".join(f"{t.name} ({t.description})" for t in TARGETS.values())
        + ". Without --target: this machine's platform and Python.",
    )
    p.add_argument("--out", type=Path, metavar="FILE.tar.gz")
    p.add_argument("--target", choices=list(TARGETS), help="the kind of box (see --list-targets)")
    p.add_argument("--list-targets", action="store_true", help="print the targets and exit")
    add_models_option(p)
    p.add_argument("--source", type=Path, default=REPO, metavar="DIR", help="the source checkout (default: this one)")
    p.add_argument(
        "--no-deps",
        action="store_true",
        help="only the project's wheel, no dependencies (tests; the box must already have them)",
    )
    p.add_argument(
        "--platform",
        action="append",
        metavar="TAG",
        help="wheel platform tag (repeatable), replacing the target's, e.g. manylinux_2_28_aarch64",
    )
    p.add_argument("--python-version", metavar="X.Y", help="the box's Python (default: the target's, else this one)")
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

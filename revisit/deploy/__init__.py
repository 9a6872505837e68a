"""`revisit deploy ...`: the private CA and device enrolment, the offline install bundle, TensorRT engines.

    revisit deploy ca init --dir CA                 a private CA (CA/ca.key, ca.pem, crl.pem, index.json)
    revisit deploy enrol SITE DEVICE --dir CA       a box's key and client certificate + an edge.toml snippet
    revisit deploy server-cert HOST --dir CA        the broker's server certificate
    revisit deploy central-cert --dir CA            central's client identity (one per central worker)
    revisit deploy revoke NAME --dir CA             revoke and re-sign the CRL the broker reads
    revisit deploy crl --dir CA                     re-sign the CRL without revoking anything
    revisit deploy list --dir CA                    every certificate issued
    revisit deploy bundle --target T --out FILE     wheelhouse + models + installer for one kind of box, offline
    revisit deploy build-engines --config FILE      prebuild TensorRT engines (Jetson / NVIDIA GPU)

See deploy/README.md for the installer's step-by-step guide and revisit/pki.py for the identity design. The
commands are in cli.py, their work by concern: ca.py (identities), bundle.py (offline bundles per target),
engines.py (TensorRT).
"""

from revisit.deploy.bundle import TARGETS, Target, build_bundle
from revisit.deploy.cli import register
from revisit.deploy.errors import DeployError

__all__ = ["TARGETS", "DeployError", "Target", "build_bundle", "register"]

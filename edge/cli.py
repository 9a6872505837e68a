"""`revisit edge run --config FILE` (the daemon) and `revisit edge check-config --config FILE`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from revisit.edge.config import EdgeConfig, load, redact


def register(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option

    group = sub.add_parser("edge", help="the edge daemon: cameras in, observations out over MQTT")
    edge_sub = group.add_subparsers(dest="edge_command", metavar="ACTION", required=True)

    p = edge_sub.add_parser("run", help="run the daemon until SIGTERM (systemd: Type=notify)")
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="edge TOML configuration")
    add_models_option(p)
    p.set_defaults(func=run)

    p = edge_sub.add_parser("check-config", help="validate a configuration and print it with secrets redacted")
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="edge TOML configuration")
    p.set_defaults(func=check_config)


def redacted(config: EdgeConfig) -> dict[str, Any]:
    """The configuration as JSON-able data with passwords masked (SecretStr) and camera URLs redacted."""
    data = config.model_dump(mode="json")
    for cam in data["cameras"]:
        cam["source"] = redact(cam["source"])
    return data


def check_config(args: argparse.Namespace) -> int:
    config = load(args.config)
    print(json.dumps(redacted(config), indent=2))
    missing = []
    if config.broker.tls is not None:
        tls = config.broker.tls
        missing = [
            f"broker.tls.{name}: {path} not found"
            for name, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key))
            if path is not None and not path.exists()
        ]
    for line in missing:
        print(f"warning: {line}", file=sys.stderr)
    print(f"{args.config}: valid ({len(config.cameras)} camera(s))", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from revisit.edge.daemon import EdgeDaemon

    config = load(args.config)
    return EdgeDaemon(config, args.models).run()

"""`revisit central run | recluster | retention --config FILE`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from dataclasses import asdict
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("central", help="the central service: MQTT ingest, recurrence clustering, storage")
    central = p.add_subparsers(dest="central_command", metavar="ACTION", required=True)

    def add(name: str, help: str, func) -> None:
        q = central.add_parser(name, help=help)
        q.add_argument("--config", type=Path, help="TOML file (default: built-in defaults, data in ./revisit-data)")
        q.set_defaults(func=func)

    add("run", "run the service until SIGINT/SIGTERM", run)
    add("recluster", "rebuild visitors from every stored embedding, keeping manual edits (service stopped)", recluster)
    add("retention", "delete crops and sightings past their TTLs now (service stopped)", retention)


def load_config(args: argparse.Namespace):
    from revisit.central.config import CentralConfig, load

    return load(args.config) if args.config else CentralConfig(data_dir=Path("revisit-data"))


def run(args: argparse.Namespace) -> int:
    from revisit.central.service import CentralService

    service = CentralService(load_config(args))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    host, port = service.broker_address
    print(f"revisit central: MQTT {host}:{port}, data {service.config.data_dir}", flush=True)
    try:
        stop.wait()
    finally:
        service.stop()
    return 0


def recluster(args: argparse.Namespace) -> int:
    from revisit.central.service import CentralService

    service = CentralService(load_config(args)).open()
    try:
        report = service.clusterer.recluster(actor="cli")
    finally:
        service.stop()
    print(json.dumps(asdict(report)))
    return 0


def retention(args: argparse.Namespace) -> int:
    from revisit.central.service import CentralService

    service = CentralService(load_config(args)).open()
    try:
        report = service.run_retention()
    finally:
        service.stop()
    print(json.dumps(asdict(report)))
    return 0

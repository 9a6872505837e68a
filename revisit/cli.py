"""`revisit`: the one console command. Each part of the product adds its subcommands here.

A part exposes `register(subparsers)` to add top-level commands and/or `register_eval(subparsers)` to
add `revisit eval ...` commands; the handler is stored as `func` and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from revisit import __version__
from revisit.shared.errors import RevisitError

# Modules that contribute commands, in help order.
PARTS = (
    "revisit.models.cli",
    "revisit.shared.cli",
    "revisit.shared.evaluate",
    "revisit.demo",
    "revisit.edge.cli",
    "revisit.edge.doctor",
    "revisit.edge.evaluate",
    "revisit.central.cli",
    "revisit.central.evaluate",
    "revisit.central.recurrence_eval",
    "revisit.central.kiosk_eval",
    "revisit.deploy",
)


def add_models_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="DIR", help="model directory (default: $REVISIT_MODELS)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revisit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"revisit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    eval_parser = sub.add_parser("eval", help="evaluate accuracy and speed on labelled data")
    eval_sub = eval_parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    for name in PARTS:
        module = importlib.import_module(name)
        if hasattr(module, "register"):
            module.register(sub)
        if hasattr(module, "register_eval"):
            module.register_eval(eval_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        for noisy in ("amqtt", "transitions", "httpx"):  # per-packet / per-state chatter
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except RevisitError as exc:
        print(f"revisit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`revisit`: the one console command. Each part of the product adds its subcommands here.

A part exposes `register(subparsers)` to add top-level commands and/or `register_eval(subparsers)` to
add `revisit eval ...` commands; the handler is stored as `func` and returns an exit code.

The parser is built lazily: only the modules of the command on the command line are imported, the others
are listed by name and help. So an edge box (the base install, without the `central` extra) runs every
edge command, and a central command there fails with one line saying what to install.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from revisit import __version__
from revisit.shared import logfmt
from revisit.shared.errors import RevisitError

# What `pip install 'revisit[central]'` adds, by import name: a central command checks them before it starts.
CENTRAL_IMPORTS = ("sqlmodel", "qdrant_client", "usearch", "fastapi", "uvicorn", "amqtt", "jinja2", "argon2", "httpx")
# Missing modules (ModuleNotFoundError.name) that mean the central extra is absent.
_CENTRAL_ROOTS = {
    *CENTRAL_IMPORTS,
    "sqlalchemy",
    "starlette",
    "psycopg",
    "multipart",
    "python_multipart",
    "itsdangerous",
}
CENTRAL_HINT = "pip install 'revisit[central]'"


@dataclass(frozen=True)
class Part:
    """Commands one module adds: top-level (`register`) or under `revisit eval` (`register_eval`)."""

    module: str
    commands: dict[str, str]  # name -> one-line help, listed without importing the module
    central: bool = False  # needs the central extra
    extends: str | None = None  # adds subcommands to another part's command (imported after it)


# In help order.
PARTS = (
    Part("revisit.models.cli", {"models": "list, verify and fetch model files"}),
    Part("revisit.shared.cli", {"faces": "detect, assess and embed faces in images"}),
    Part("revisit.demo", {"demo": "run central + one edge daemon on a video, embedded defaults"}, central=True),
    Part("revisit.edge.cli", {"edge": "the edge daemon: cameras in, observations out over MQTT"}),
    Part("revisit.edge.doctor", {}, extends="edge"),
    Part(
        "revisit.central.cli",
        {"central": "the central service: MQTT ingest, recurrence clustering, storage"},
        central=True,
    ),
    Part("revisit.deploy", {"deploy": "private CA, device enrolment, offline install bundle, TensorRT engines"}),
)
EVAL_PARTS = (
    Part(
        "revisit.shared.evaluate",
        {
            "verify": "1:1 verification on labelled photos: TAR@FAR, AUC, speed",
            "detect": "detection rate on labelled photos and group photos",
        },
    ),
    Part(
        "revisit.edge.evaluate",
        {"video": "the edge pipeline on a video file: work done, tracks, embeddings, identities"},
    ),
    Part(
        "revisit.central.evaluate",
        {"cluster": "recurrence clustering on labelled photos: BCubed precision/recall/F1"},
        central=True,
    ),
    Part(
        "revisit.central.recurrence_eval",
        {"recurrence": "weeks of visits at sites in several time zones: loyal-list accuracy"},
        central=True,
    ),
    Part(
        "revisit.central.kiosk.eval",
        {"search": "event kiosk: selfie search over one event of labelled photos"},
        central=True,
    ),
)


class CentralMissing(RevisitError):
    """A central command in an install without the `central` extra."""


def add_models_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="DIR", help="model directory (default: $REVISIT_MODELS)")


def missing_central() -> list[str]:
    """The central extra's packages this environment cannot import (without importing them: that is slow)."""
    missing = []
    for name in CENTRAL_IMPORTS:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def _require_central(command: str) -> None:
    missing = missing_central()
    if missing:
        raise CentralMissing(
            f"`revisit {command}` needs the central extra, which is not installed here "
            f"(missing {', '.join(missing)}): {CENTRAL_HINT}"
        )


def _selected(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The command and the `eval` subcommand named in argv (None where absent), skipping global options."""
    words = [a for a in argv if not a.startswith("-")]
    if "--" in argv:
        words = [a for a in argv[: list(argv).index("--")] if not a.startswith("-")]
    command = words[0] if words else None
    return command, (words[1] if command == "eval" and len(words) > 1 else None)


def _add(sub: argparse._SubParsersAction, part: Part, selected: str | None, label: str, eval_: bool) -> None:
    if selected in part.commands or (part.extends and part.extends == selected):
        if part.central:
            _require_central(label)
        module = importlib.import_module(part.module)
        (module.register_eval if eval_ else module.register)(sub)
    else:
        for name, help in part.commands.items():
            sub.add_parser(name, help=help, add_help=False)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default: sys.argv[1:]): the named command's modules are imported and add their
    options; every other command is a placeholder with its help line. Raises CentralMissing for a central
    command without the central extra."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command, eval_command = _selected(argv)
    parser = argparse.ArgumentParser(prog="revisit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"revisit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    eval_parser = sub.add_parser("eval", help="evaluate accuracy and speed on labelled data")
    eval_sub = eval_parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
    for part in EVAL_PARTS:
        _add(eval_sub, part, eval_command if command == "eval" else None, f"eval {eval_command}", eval_=True)
    for part in PARTS:
        _add(sub, part, command, str(command), eval_=False)
    return parser


def _central_import_error(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").split(".")[0] in _CENTRAL_ROOTS


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser(argv)
    except CentralMissing as exc:
        print(f"revisit: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # a placeholder: cannot happen for a command named in argv
        parser.error(f"{args.command}: not available")
    logfmt.install(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        for noisy in ("amqtt", "transitions", "httpx"):  # per-packet / per-state chatter
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except RevisitError as exc:
        print(f"revisit: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if not _central_import_error(exc):
            raise
        print(f"revisit: error: {exc}: this needs the central extra: {CENTRAL_HINT}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

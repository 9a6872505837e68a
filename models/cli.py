"""`revisit models list` and `revisit models fetch`: which models are known and present, and getting them."""

from __future__ import annotations

import argparse
import json
import sys

from revisit.models.fetch import DEFAULT_TIMEOUT, FetchResult, fetch_models
from revisit.models.manifest import Manifest
from revisit.models.store import model_path, models_dir, status


def register(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option

    group = sub.add_parser("models", help="list, verify and fetch model files")
    models_sub = group.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = models_sub.add_parser("list", help="every known model and whether its file is present and verified")
    add_models_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(func=run_list)

    p = models_sub.add_parser("fetch", help="download missing models and verify them by sha256")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all missing or mismatching)")
    add_models_option(p)
    p.add_argument(
        "--mirror", metavar="URL", help="download <URL>/<file> instead of the upstream source (http://, file://, a dir)"
    )
    p.add_argument("--force", action="store_true", help="download again even if the file is verified")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"network timeout in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    p.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    directory = models_dir(args.models)
    rows = []
    for spec in Manifest.load():
        rows.append(
            {
                "name": spec.name,
                "role": spec.role,
                "family": spec.family,
                "default": spec.default,
                "file": spec.file,
                "path": str(model_path(spec, directory)),
                "status": status(spec, directory),
                "model_id": spec.model_id if spec.role == "recognizer" else None,
                "embedding_dim": spec.embedding_dim,
                "sha256": spec.sha256,
                "size": spec.size,
                "licence": spec.licence,
                "source": spec.source.model_dump() if spec.source else None,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"models in {directory}  (* = default)")
        header = ["name", "role", "family", "file", "status", "model_id", "licence"]
        table = [
            [
                r["name"] + (" *" if r["default"] else ""),
                r["role"],
                r["family"],
                r["file"],
                r["status"],
                r["model_id"] or "-",
                r["licence"],
            ]
            for r in rows
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *table, strict=False)]
        for line in [header, *table]:
            print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    bad = [r["name"] for r in rows if r["status"] != "verified"]
    if bad:
        print(
            f"{len(bad)} model(s) missing or mismatching in {directory} ({', '.join(bad)}): "
            f"run `revisit models fetch --models {directory}`, or point --models/$REVISIT_MODELS elsewhere",
            file=sys.stderr,
        )
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    directory = models_dir(args.models)

    def report(result: FetchResult) -> None:
        if result.action == "skipped":
            print(f"{result.name}: already verified at {result.path}")
        else:
            print(f"{result.name}: fetched and verified -> {result.path}")

    fetch_models(
        Manifest.load(),
        args.names,
        directory,
        mirror=args.mirror,
        force=args.force,
        timeout=args.timeout,
        report=report,
    )
    return 0

"""`revisit central run | recluster | retention | migrate-vectors | backfill | passwd | users --config FILE`.

revisit central users add NAME --role site_manager --sites store-1,store-2   (password asked twice)
revisit central users list | passwd NAME | remove NAME
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
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

    add("run", "run the service (ingest, pages, API, kiosk) until SIGINT/SIGTERM", run)
    central.choices["run"].add_argument("--models", metavar="DIR", help="the kiosk's models (default: $REVISIT_MODELS)")
    add("recluster", "rebuild visitors from every stored embedding, keeping manual edits (service stopped)", recluster)
    add("retention", "delete crops and sightings past their TTLs now (service stopped)", retention)
    add(
        "backfill",
        "ingest msgpack observation files (one message each, or a stream) as backfill (service stopped)",
        backfill,
    )
    central.choices["backfill"].add_argument("files", nargs="*", type=Path, metavar="FILE")
    central.choices["backfill"].add_argument(
        "--dead-letters",
        action="store_true",
        help="also replay the dead letters (messages that failed to store for an internal error); each one stored "
        "is deleted",
    )
    add(
        "migrate-vectors",
        "rebuild the vector index from the database, e.g. from old Qdrant local-mode storage (service stopped)",
        migrate_vectors,
    )
    q = central.add_parser("passwd", help="read a password twice and print its argon2 hash for admin.password_hash")
    q.set_defaults(func=lambda _args: _passwd())

    u = central.add_parser("users", help="accounts of the pages and API: add, list, passwd, remove")
    users = u.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    for name, help in (
        ("add", "add a user (password asked twice, or from $REVISIT_NEW_PASSWORD)"),
        ("list", "list users, roles and sites"),
        ("passwd", "set a user's password (their sessions end)"),
        ("remove", "remove a user (their sessions end)"),
    ):
        q = users.add_parser(name, help=help)
        q.add_argument("--config", type=Path, help="TOML file (default: built-in defaults, data in ./revisit-data)")
        if name != "list":
            q.add_argument("username")
        if name == "add":
            q.add_argument("--role", required=True, choices=["admin", "head_office", "site_manager", "event_staff"])
            q.add_argument("--sites", default="", help="comma-separated site ids (site managers)")
        q.set_defaults(func=users_command)


def _passwd() -> int:
    from revisit.central.auth import passwd_command

    return passwd_command()


def load_config(args: argparse.Namespace):
    from revisit.central.config import CentralConfig, load

    return load(args.config) if args.config else CentralConfig(data_dir=Path("revisit-data"))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from revisit.central.service import CentralService
    from revisit.central.web import create_app

    config = load_config(args)
    if args.models:
        engine = config.engine.model_copy(update={"models_dir": Path(args.models)})
        config = config.model_copy(update={"engine": engine})
    service = CentralService(config)
    # uvicorn handles SIGINT/SIGTERM itself and then re-raises them; ours only has to outlive it so that
    # service.stop() runs in `finally` (the default SIGTERM handler would end the process first).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    service.start()
    try:
        app = create_app(service, live_urls=config.web.live_urls)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.web.bind,
                port=config.web.port,
                proxy_headers=True,
                forwarded_allow_ips=config.web.forwarded_allow_ips,
                log_config=None,
                server_header=False,
            )
        )
        mqtt_host, mqtt_port = service.broker_address
        password = app.state.generated_password
        login = config.admin.username + (f" / {password}" if password else "")
        web_port = config.web.port
        print(f"revisit central: MQTT {mqtt_host}:{mqtt_port}, data {config.data_dir}", flush=True)
        if web_port:
            print(f"pages: http://{config.web.bind}:{web_port}/  login: {login}", flush=True)
        server.run()
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


def migrate_vectors(args: argparse.Namespace) -> int:
    import time

    from revisit.central.service import CentralService

    config = load_config(args)
    service = CentralService(config).open()
    try:
        start = time.perf_counter()
        written = service.migrate_vectors()
        recognizers = service.vectors.recognizers()
    finally:
        service.stop()
    print(
        json.dumps(
            {
                "engine": config.vector_engine,
                "sightings": written,
                "recognizers": recognizers,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return 0


def retention(args: argparse.Namespace) -> int:
    from revisit.central.kiosk.events import Events
    from revisit.central.service import CentralService

    service = CentralService(load_config(args)).open()
    try:
        report = asdict(service.run_retention())
        events = Events.for_service(service)
        try:
            report["events_expired"] = events.expire_events()
        finally:
            events.close()
    finally:
        service.stop()
    print(json.dumps(report, default=str))
    return 0


BACKFILL_BATCH = 256


def backfill(args: argparse.Namespace) -> int:
    """Every message through the ingest's validation and assignment (`Ingestor.handle_batch(backfill=True)`):
    sightings flagged as backfill, their times trusted (no clock-skew stamping). `--dead-letters`: then replay
    the dead letters (`Ingestor.replay_dead_letters`). Prints a JSON report; exit status 1 if anything was rejected
    or failed, or a dead letter is left."""
    import msgpack
    from sqlmodel import func, select

    from revisit.central.service import CentralService
    from revisit.central.store import DeadLetter
    from revisit.shared.schema import MAX_MESSAGE_BYTES, faces_topic

    if not args.files and not args.dead_letters:
        log.error("backfill: name FILE(s) and/or --dead-letters")
        return 2
    service = CentralService(load_config(args)).open()
    ingestor = service.make_ingestor()
    report: dict = {"files": 0, "messages": 0, "unreadable_files": []}
    pending: list[tuple[str, bytes]] = []

    def flush() -> None:
        ingestor.handle_batch(pending, backfill=True)
        pending.clear()

    try:
        for path in args.files:
            try:
                with path.open("rb") as f:
                    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=2 * MAX_MESSAGE_BYTES)
                    for obj in unpacker:
                        report["messages"] += 1
                        try:
                            topic = faces_topic(str(obj.get("site")), str(obj.get("device")))
                        except (AttributeError, ValueError):
                            topic = "backfill/unaddressed"  # counted as bad_topic
                        pending.append((topic, msgpack.packb(obj, use_bin_type=True)))
                        if len(pending) >= BACKFILL_BATCH:
                            flush()
                report["files"] += 1
            except (OSError, ValueError, msgpack.UnpackException) as exc:
                log.error("backfill: %s: %s", path, exc)
                report["unreadable_files"].append(f"{path}: {type(exc).__name__}: {exc}"[:300])
        if pending:
            flush()
        if args.dead_letters:
            replayed = ingestor.replay_dead_letters()
            with service.session() as s:
                left = s.exec(select(func.count()).select_from(DeadLetter)).one()
            report["dead_letters"] = {"replayed": sum(replayed.values()), "outcomes": replayed, "left": int(left)}
    finally:
        service.stop()
    counts = ingestor.counters.snapshot()
    report |= {k: counts.get(k, 0) for k in ("stored", "duplicate", "error")}
    report["rejected"] = ingestor.counters.rejected()
    print(json.dumps(report))
    left = report.get("dead_letters", {}).get("left", 0)
    return 1 if report["rejected"] or report["error"] or report["unreadable_files"] or left else 0


def users_command(args: argparse.Namespace) -> int:
    """`revisit central users add|list|passwd|remove`: on the configured database (the service may run)."""
    import os

    from revisit.central.auth import read_new_password
    from revisit.central.store import Store
    from revisit.central.users import AccountError, Accounts

    config = _accounts_config(args)
    store = Store(config.database)
    store.create_all()
    accounts = Accounts(store)
    action = args.users_command

    def new_password() -> str | None:
        env = os.environ.get("REVISIT_NEW_PASSWORD")
        return env if env else read_new_password(what=f"Password for {args.username}: ")

    try:
        if action == "list":
            for user in accounts.users():
                sites = ",".join(user.sites or []) or "-"
                print(f"{user.username}\t{user.role}\t{sites}\t{accounts.sessions(user.username)} session(s)")
            return 0
        if action == "remove":
            accounts.remove_user(args.username, actor="cli")
            print(f"removed {args.username}; their sessions have ended")
            return 0
        password = new_password()
        if password is None:
            return 2
        if action == "add":
            sites = [s for s in args.sites.replace(",", " ").split() if s]
            accounts.add_user(args.username, password, args.role, sites, actor="cli")
            print(f"added {args.username} ({args.role})")
        else:
            accounts.set_password(args.username, password, actor="cli")
            print(f"password of {args.username} set; their sessions have ended")
        return 0
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.dispose()


def _accounts_config(args: argparse.Namespace):
    """The configuration as `users` reads it: only the database matters, so a production file works without the
    service's secrets in the environment (they live in the unit's environment file)."""
    from pydantic import model_validator

    from revisit.central.config import CentralConfig
    from revisit.shared.config import load_toml

    class AccountsOnly(CentralConfig):
        @model_validator(mode="after")
        def _production(self) -> AccountsOnly:  # the service's own start still checks them
            return self

    if not args.config:
        return CentralConfig(data_dir=Path("revisit-data"))
    return load_toml(args.config, AccountsOnly)

"""`revisit edge doctor --config FILE`: is this box ready? A pass/fail table with a fix for each failure.

Checks: every enabled camera opens and decodes one frame; the broker's TLS handshake (both ways: the broker's
certificate against broker.tls.ca, and whether the broker accepts this box's certificate) and its CONNACK;
the configured models are present and verify by sha256 (and TensorRT engines are built, with that backend);
the state directory has room for the spool; the clock is synchronised. Exit status 1 when a check fails.

The broker test connects as this box. With the production broker configuration (use_username_as_clientid)
the client id is the certificate's name, so the test connection briefly takes over the running daemon's;
the daemon reconnects on its own within seconds.

Registered as `revisit edge doctor`, inside the `edge` group that revisit.edge.cli creates (this module is
listed after it in revisit.cli.PARTS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from revisit.edge.config import CameraConfig, EdgeConfig, camera_decoder, load

Status = Literal["pass", "fail", "warn", "unknown", "skip"]
CHECKS = ("cameras", "broker", "models", "disk", "clock")
CERT_WARN_DAYS = 30
SPOOL_OVERHEAD = 1.25  # SQLite pages, WAL and free lists on top of the spool's byte limit


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def register(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option

    edge = sub.choices.get("edge")
    if edge is None:
        raise RuntimeError("revisit.edge.doctor must be listed after revisit.edge.cli in revisit.cli.PARTS")
    # argparse has no public accessor for a parser's subcommands: find the action revisit.edge.cli added.
    actions = [a for a in edge._actions if isinstance(a, argparse._SubParsersAction)]
    p = actions[0].add_parser("doctor", help="check cameras, broker TLS, models, disk and clock; fixes for failures")
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="edge TOML configuration")
    add_models_option(p)
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per network check (default 10)")
    p.add_argument(
        "--only",
        action="append",
        choices=CHECKS,
        metavar="CHECK",
        help=f"run only these checks (repeatable; {', '.join(CHECKS)})",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON array")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load(args.config)
    rows = diagnose(config, args.models, timeout=args.timeout, only=args.only)
    rows.insert(
        0,
        Check(
            "config",
            "pass",
            f"{args.config}: site {config.site}, device {config.device}, {len(config.cameras)} camera(s)",
        ),
    )
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(render(rows))
    return 1 if any(r.status == "fail" for r in rows) else 0


def diagnose(
    config: EdgeConfig, models: str | Path | None = None, timeout: float = 10.0, only: list[str] | None = None
) -> list[Check]:
    wanted = set(only or CHECKS)
    jobs: list[tuple[str, Callable[[], list[Check]]]] = []
    if "cameras" in wanted:
        jobs += [
            (f"camera {cam.id}", lambda cam=cam: [check_camera(cam, timeout, camera_decoder(config, cam))])
            for cam in config.cameras
        ]
    if "broker" in wanted:
        jobs.append(("broker", lambda: check_broker(config, timeout)))
    if "models" in wanted:
        jobs.append(("models", lambda: check_models(config, models)))
    if "disk" in wanted:
        jobs.append(("disk", lambda: [check_disk(config)]))
    if "clock" in wanted:
        jobs.append(("clock", lambda: [check_clock(config)]))
    # Cameras and the broker wait on the network: run every check at once, report in order.
    results: list[list[Check] | None] = [None for _ in jobs]

    def work(i: int, name: str, job: Callable[[], list[Check]]) -> None:
        try:
            results[i] = job()
        except Exception as exc:  # a check that crashes is a failed check, not a crashed doctor
            results[i] = [Check(name, "fail", f"internal error: {exc!r}", "report this as a bug")]

    threads = [threading.Thread(target=work, args=(i, *job), daemon=True) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout * 3 + 10
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    rows: list[Check] = []
    for (name, _), result in zip(jobs, results, strict=True):
        if result is None:  # still blocked (a hung driver or DNS): say so instead of leaving the row out
            result = [Check(name, "fail", "the check did not finish", "run it again; look for a hung device")]
        rows += result
    return rows


def render(rows: list[Check]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'CHECK'.ljust(width)}  RESULT   DETAIL"]
    lines += [f"{r.name.ljust(width)}  {r.status.upper().ljust(7)}  {r.detail}" for r in rows]
    fixes = [r for r in rows if r.fix and r.status in ("fail", "warn", "unknown")]
    if fixes:
        lines += ["", "How to fix:"]
        lines += [f"  {r.name}: {r.fix}" for r in fixes]
    failed = sum(r.status == "fail" for r in rows)
    lines += ["", f"{failed} check(s) failed" if failed else "all checks passed"]
    return "\n".join(lines)


# -- cameras ---------------------------------------------------------------------------------------------------


def check_camera(cam: CameraConfig, timeout: float, decoder: str = "ffmpeg") -> Check:
    name = f"camera {cam.id}"
    if not cam.enabled:
        return Check(name, "skip", f"{cam.safe_source}: disabled in the configuration")
    from revisit.edge.capture import OpenFailed, open_source, resolve_decoder, source_kind

    kind = source_kind(cam.source)
    outcome: dict[str, object] = {}

    def probe() -> None:
        started = time.monotonic()
        try:
            src = open_source(cam.source, timeout, resolve_decoder(decoder, cam.source))
        except OpenFailed as exc:
            outcome["opened"], outcome["why"] = False, str(exc)
            return
        try:
            outcome["opened"] = True
            outcome["decoder"] = getattr(src, "decoder", None) or src.name
            outcome["frame"] = src.retrieve() if src.grab() else None
        finally:
            src.release()
        outcome["s"] = time.monotonic() - started

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    source = cam.safe_source
    if thread.is_alive():
        return Check(name, "fail", f"{source}: no answer within {timeout:g} s", _camera_fix(kind, cam.source))
    if not outcome.get("opened"):
        why = f" ({outcome['why']})" if outcome.get("why") else ""
        return Check(name, "fail", f"{source}: cannot open{why}", _camera_fix(kind, cam.source))
    frame = outcome.get("frame")
    if frame is None:
        return Check(
            name,
            "fail",
            f"{source}: opened but no frame decoded",
            "the stream's codec may be unsupported (use H.264), or the camera sends no video; "
            "try its other stream path (e.g. the sub-stream)",
        )
    h, w = frame.shape[:2]  # type: ignore[attr-defined]
    return Check(name, "pass", f"{source}: {w}x{h} frame decoded in {outcome['s']:.1f} s by {outcome['decoder']}")


def _camera_fix(kind: str, source: str) -> str:
    import cv2

    if kind == "file":
        return f"no readable video at {source}: check the path and that the service user may read it"
    if kind == "gstreamer" and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        return "this OpenCV has no GStreamer backend: use JetPack's OpenCV, or an rtsp:// URL instead"
    return (
        "check the camera is powered and on this network (ping it), its RTSP port (554 unless the URL "
        "names one) is open, and the URL path, user and password are right (try the URL in VLC or "
        "`ffprobe -rtsp_transport tcp URL`)"
    )


# -- broker ----------------------------------------------------------------------------------------------------


def check_broker(config: EdgeConfig, timeout: float) -> list[Check]:
    b = config.broker
    where = f"{b.host}:{b.port}"
    rows: list[Check] = []
    if b.tls is None:
        rows.append(
            Check(
                "broker tls",
                "warn",
                f"{where}: plain MQTT, no TLS",
                "only on a trusted network: enrol the box (revisit deploy enrol) and set [broker.tls]",
            )
        )
    else:
        identity, usable = check_identity(config)
        rows.append(identity)
        if not usable:  # files missing or unreadable: nothing to connect with
            return rows
        rows.append(check_handshake(config, timeout))
        if rows[-1].status == "fail":
            return rows
    rows.append(check_connack(config, timeout))
    return rows


def check_identity(config: EdgeConfig) -> tuple[Check, bool]:
    """The TLS files exist and parse, the key matches, the certificate names this box and is in date; and
    whether the files are usable for a connection attempt (a wrong name or CA still is: the broker says more)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from revisit.pki import common_name

    tls = config.broker.tls
    assert tls is not None
    name = "broker identity"
    try:
        ca = x509.load_pem_x509_certificate(Path(tls.ca).read_bytes())
    except (OSError, ValueError) as exc:
        return Check(
            name,
            "fail",
            f"broker.tls.ca {tls.ca}: {_why(exc)}",
            "copy ca.pem from `revisit deploy enrol` (install-edge.sh --certs DIR does it)",
        ), False
    if tls.cert is None or tls.key is None:
        return Check(
            name,
            "warn",
            f"CA {tls.ca} readable; no client certificate (password or anonymous login)",
            "the production broker requires a client certificate: revisit deploy enrol SITE DEVICE",
        ), True
    try:
        cert = x509.load_pem_x509_certificate(Path(tls.cert).read_bytes())
        key = serialization.load_pem_private_key(Path(tls.key).read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        return Check(
            name,
            "fail",
            f"{tls.cert} / {tls.key}: {_why(exc)}",
            "copy device.pem and device.key from `revisit deploy enrol` (install-edge.sh --certs DIR); "
            "the key must be readable by the service user",
        ), False
    cn = common_name(cert)
    want = f"{config.site}/{config.device}"
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, pub) != cert.public_key().public_bytes(
        serialization.Encoding.PEM, pub
    ):
        return Check(
            name,
            "fail",
            f"{tls.key} is not the key of {tls.cert}",
            "copy device.pem and device.key from the same `revisit deploy enrol` output",
        ), False
    now = dt.datetime.now(dt.timezone.utc)
    if now < cert.not_valid_before_utc:
        return Check(
            name,
            "fail",
            f"{cn}: not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; "
            f"this box's clock says {now:%Y-%m-%d %H:%M}",
            "set the clock: see the clock check",
        ), True
    if now > cert.not_valid_after_utc:
        return Check(
            name,
            "fail",
            f"{cn}: expired {cert.not_valid_after_utc:%Y-%m-%d}",
            f"enrol again: revisit deploy enrol {config.site} {config.device} --out NEW_DIR, then install it",
        ), True
    if cn != want:
        return Check(
            name,
            "fail",
            f"certificate is for {cn!r}, the configuration says {want!r}",
            "the broker only lets a box write under its certificate's name: fix site/device in the "
            "configuration, or enrol this box under the right name",
        ), True
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # InvalidSignature (no message), or a key type that cannot have signed it
        return Check(
            name,
            "fail",
            f"{tls.cert} was not issued by {tls.ca} ({type(exc).__name__})",
            "ca.pem and device.pem come from different CAs: copy both from one `revisit deploy enrol`",
        ), True
    days = (cert.not_valid_after_utc - now).days
    if days < CERT_WARN_DAYS:
        renew = f"revisit deploy enrol {config.site} {config.device} --reissue --out NEW_DIR, install, revoke the old"
        return Check(name, "warn", f"{cn}: expires in {days} day(s)", renew), True
    until = f"{cert.not_valid_after_utc:%Y-%m-%d}"
    return Check(name, "pass", f"{cn}: valid until {until}, key matches, issued by CA"), True


def _context(config: EdgeConfig) -> ssl.SSLContext:
    tls = config.broker.tls
    assert tls is not None
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    if tls.cert and tls.key:
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_handshake(config: EdgeConfig, timeout: float) -> Check:
    """TLS both ways. With TLS 1.3 the broker judges the client certificate after the client's handshake ends,
    so a refusal arrives as an alert on the first read: wait briefly for one (an accepting broker says nothing
    until it gets CONNECT)."""
    b = config.broker
    where = f"{b.host}:{b.port}"
    name = "broker tls"
    try:
        sock = socket.create_connection((b.host, b.port), timeout=timeout)
    except OSError as exc:
        return _network_failure(name, where, exc, timeout)
    try:
        with _context(config).wrap_socket(sock, server_hostname=b.host) as tls_sock:
            version = tls_sock.version()
            tls_sock.settimeout(min(1.0, timeout))
            try:
                closed = tls_sock.recv(1) == b""
            except TimeoutError:
                closed = False
        if closed:
            return Check(
                name, "fail", f"{where}: the broker closed the connection after the handshake", _CLIENT_CERT_FIX
            )
        return Check(name, "pass", f"{where}: {version}, broker certificate trusted, this box's certificate accepted")
    except ssl.SSLCertVerificationError as exc:
        if "hostname" in str(exc.verify_message or exc).lower() or "ip address mismatch" in str(exc).lower():
            return Check(
                name,
                "fail",
                f"{where}: the broker's certificate does not name {b.host}",
                f"connect by a name in its certificate, or reissue it: revisit deploy server-cert "
                f"<HOST> --san {b.host}",
            )
        return Check(
            name,
            "fail",
            f"{where}: broker certificate not trusted ({exc.verify_message})",
            f"broker.tls.ca ({config.broker.tls.ca if config.broker.tls else '-'}) is not the CA that "
            "signed the broker's certificate: copy the right ca.pem (from `revisit deploy enrol`)",
        )
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        words = next((text for key, text in _ALERTS.items() if key in reason), reason)
        return Check(name, "fail", f"{where}: TLS refused: {words}", _CLIENT_CERT_FIX)
    except OSError as exc:
        # A reset during or right after the handshake: the broker dropped us (usually our certificate).
        return Check(name, "fail", f"{where}: connection dropped during TLS ({_why(exc)})", _CLIENT_CERT_FIX)
    finally:
        sock.close()


# TLS alerts a broker sends about our certificate, in words.
_ALERTS = {
    "CERTIFICATE_REVOKED": "the broker says this box's certificate is revoked (it is in the broker's CRL)",
    "UNKNOWN_CA": "the broker does not know the CA that issued this box's certificate",
    "CERTIFICATE_EXPIRED": "the broker says this box's certificate has expired (or the clocks disagree)",
    "CERTIFICATE_REQUIRED": "the broker requires a client certificate and got none",
    "BAD_CERTIFICATE": "the broker rejected this box's certificate",
}
_CLIENT_CERT_FIX = (
    "the broker does not accept this box's certificate: it was revoked, comes from another CA, or expired "
    "(the broker's log says which). Enrol the box again (revisit deploy enrol SITE DEVICE --out NEW_DIR) and copy "
    "the files (install-edge.sh --certs DIR)"
)


def _network_failure(name: str, where: str, exc: OSError, timeout: float) -> Check:
    if isinstance(exc, socket.gaierror):
        return Check(
            name,
            "fail",
            f"{where}: cannot resolve the host name ({_why(exc)})",
            "check broker.host and this box's DNS (/etc/resolv.conf), or use an IP address",
        )
    if isinstance(exc, ConnectionRefusedError):
        return Check(
            name,
            "fail",
            f"{where}: connection refused",
            "nothing listens there: is Mosquitto running on the broker, and broker.port right (8883)?",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return Check(
            name,
            "fail",
            f"{where}: no answer within {timeout:g} s",
            "a firewall or routing problem between the site and the broker: allow TCP to that port",
        )
    return Check(name, "fail", f"{where}: {_why(exc)}", "check the network route to the broker")


def check_connack(config: EdgeConfig, timeout: float) -> Check:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    b = config.broker
    where = f"{b.host}:{b.port}"
    name = "broker login"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"revisit-doctor-{config.site}-{config.device}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if b.username is not None:
        client.username_pw_set(b.username, b.password.get_secret_value() if b.password else None)
    if b.tls is not None:
        client.tls_set_context(_context(config))
        if b.tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    client.connect_timeout = timeout
    answer: dict[str, object] = {}
    done = threading.Event()

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        answer["rc"] = reason_code
        done.set()

    def on_disconnect(c, userdata, flags, reason_code, properties) -> None:
        answer.setdefault("dropped", reason_code)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    started = time.monotonic()
    try:
        client.connect(b.host, b.port, keepalive=30)
    except OSError as exc:
        return _network_failure(name, where, exc, timeout)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    rc = answer.get("rc")
    if rc is None:
        why = f"dropped ({answer['dropped']})" if "dropped" in answer else f"no CONNACK within {timeout:g} s"
        return Check(name, "fail", f"{where}: {why}", _CLIENT_CERT_FIX if b.tls else "check the broker's log")
    if getattr(rc, "is_failure", False):
        return Check(
            name,
            "fail",
            f"{where}: CONNACK refused ({rc})",
            "the broker refused this login: with certificates check its use_identity_as_username and ACL "
            "(deploy/mosquitto/); with a password check broker.username/password",
        )
    ms = (time.monotonic() - started) * 1000
    return Check(name, "pass", f"{where}: CONNACK accepted in {ms:.0f} ms")


# -- models, engines -------------------------------------------------------------------------------------------


def check_models(config: EdgeConfig, models: str | Path | None) -> list[Check]:
    from revisit.models import store
    from revisit.models.manifest import Manifest
    from revisit.shared.errors import RevisitError

    engine = config.engine
    directory = store.models_dir(models or engine.models_dir)
    fix = (
        f"copy the models from the install bundle (install-edge.sh) or `revisit models fetch --models "
        f"{directory}`; the service reads $REVISIT_MODELS (/opt/revisit/models)"
    )
    try:
        manifest = Manifest.load(custom=engine.custom_models)
        resolved = [
            store.resolve(manifest.get(engine.detector.model, "detector"), directory),
            store.resolve(manifest.get(engine.recognizer, "recognizer"), directory),
        ]
    except RevisitError as exc:
        return [Check("models", "fail", str(exc), fix)]
    rows = [Check("models", "pass", f"{', '.join(m.spec.name for m in resolved)}: sha256 verified in {directory}")]
    if engine.backend.type == "tensorrt":
        rows.append(check_engines(config, resolved))
    return rows


def check_engines(config: EdgeConfig, resolved: list) -> Check:
    """A cached engine per model (name and hash match; the GPU and TensorRT version parts need the GPU itself)."""
    from revisit.shared.backends.tensorrt import engine_file_prefix

    backend = config.engine.backend
    cache = backend.engine_cache_dir()  # type: ignore[union-attr]
    fix = f"build them: revisit deploy build-engines --config <this file> (minutes on a Jetson); cache {cache}"
    missing = []
    for model in resolved:
        if not list(cache.glob(f"{engine_file_prefix(model.spec.name, model.spec.sha256)}*.engine")):
            missing.append(model.spec.name)
    if missing:
        return Check("engines", "fail", f"no TensorRT engine in {cache} for {', '.join(missing)}", fix)
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return Check(
            "engines",
            "fail",
            f"engines present, but TensorRT cannot be imported ({exc})",
            "install JetPack's TensorRT Python bindings, or use backend onnxruntime",
        )
    return Check("engines", "pass", f"TensorRT engines for {', '.join(m.spec.name for m in resolved)} in {cache}")


# -- disk, clock -----------------------------------------------------------------------------------------------


def check_disk(config: EdgeConfig) -> Check:
    state = Path(config.state_dir)
    probe = state
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    used = sum(p.stat().st_size for p in state.glob("spool.sqlite*")) if state.is_dir() else 0
    need = config.spool.max_mb * 1024 * 1024 * SPOOL_OVERHEAD
    room = free + used
    detail = f"{state}: {free / 2**30:.1f} GiB free, spool {used / 2**20:.0f} MiB of {config.spool.max_mb:g} MB"
    if room < need:
        return Check(
            "disk",
            "fail",
            detail + f"; a full spool needs {need / 2**20:.0f} MiB",
            f"free disk space on {probe}, or lower spool.max_mb (observations beyond it are dropped)",
        )
    if not state.exists():
        return Check(
            "disk",
            "warn",
            detail + " (directory not created yet)",
            "systemd creates it at start (StateDirectory=revisit-edge); or create it owned by `revisit`",
        )
    if not os.access(state, os.W_OK):
        return Check(
            "disk",
            "warn",
            detail + f"; not writable by uid {os.geteuid()}",
            "fine if the service user owns it (systemd's StateDirectory does that); else chown revisit",
        )
    return Check("disk", "pass", detail)


def check_clock(config: EdgeConfig) -> Check:
    """NTP status from timedatectl or chrony; else only what the certificate says. 'unknown' when neither."""
    fix = (
        "enable time sync: `timedatectl set-ntp true` (systemd-timesyncd) or chrony, and allow UDP 123 to an "
        "NTP server; wrong clocks break TLS (certificate not yet valid) and visit times"
    )
    answer = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if answer in ("yes", "no"):
        if answer == "yes":
            return Check("clock", "pass", "timedatectl: NTP synchronised")
        return Check("clock", "fail", "timedatectl: NTP not synchronised", fix)
    tracking = _run(["chronyc", "-n", "tracking"])
    if tracking:
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in tracking.splitlines()) if v
        )
        leap = fields.get("Leap status", "")
        offset = fields.get("System time", "?")
        if leap == "Normal":
            return Check("clock", "pass", f"chrony: synchronised, offset {offset}")
        return Check("clock", "fail", f"chrony: {leap or 'not synchronised'}", fix)
    tls = config.broker.tls
    if tls is not None and tls.cert is not None and Path(tls.cert).is_file():
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(tls.cert).read_bytes())
        if dt.datetime.now(dt.timezone.utc) < cert.not_valid_before_utc:
            return Check("clock", "fail", "the clock is earlier than this box's certificate was issued", fix)
    return Check(
        "clock",
        "unknown",
        "no timedatectl or chronyc answer here: synchronisation not known",
        "check the time by hand against a reliable source; " + fix,
    )


def _run(cmd: list[str]) -> str:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


if __name__ == "__main__":  # python -m revisit.edge.doctor --config FILE
    from revisit.cli import main

    sys.exit(main(["edge", "doctor", *sys.argv[1:]]))

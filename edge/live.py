"""The live view on the site network: a status page, MJPEG per camera, one-frame snapshots, /metrics, /healthz.

    /                      status page (cameras, connected, fps, counters; sources shown redacted)
    /camera/<id>.mjpg      multipart MJPEG of the annotated frames (green boxes, track ids) at live.mjpeg_fps
    /camera/<id>.jpg       one annotated snapshot
    /metrics               Prometheus text format
    /healthz               200 while the processing loop is ticking, else 503

stdlib `ThreadingHTTPServer` on its own thread: a handful of viewers at most, and an MJPEG stream is a long
blocking response per client, which a thread per connection serves plainly; an async framework would add a
dependency to the edge box for no gain. JPEGs are encoded once per analysed frame and shared by all viewers.
There is no authentication: bind it to the site network (live.bind) or disable it.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from revisit.edge.config import LiveConfig
from revisit.shared.logfmt import event
from revisit.shared.schema import IDENT_CHARS

log = logging.getLogger(__name__)

BOUNDARY = "revisit-frame"
MAX_STREAMS = 16  # concurrent MJPEG viewers; more get 503
_CAMERA_PATH = re.compile(rf"^/camera/(?P<id>{IDENT_CHARS})\.(?P<ext>mjpg|jpg)$")


class LiveSource(Protocol):
    """What the live server shows; the daemon implements it."""

    def camera_ids(self) -> list[str]: ...

    def snapshot_jpeg(self, camera_id: str) -> bytes:
        """The newest annotated frame of a known camera as JPEG (a placeholder before the first frame)."""
        ...

    def status(self) -> dict[str, Any]:
        """{"site", "device", "uptime_s", "publisher": {...}, "cameras": [{"id", "source", "connected", "fps",
        "last_error", counters...}]}; sources already redacted."""
        ...

    def metrics(self) -> tuple[bytes, str]:
        """(body, content type) in Prometheus text format."""
        ...

    def health(self) -> tuple[bool, str]: ...


class LiveServer:
    def __init__(self, config: LiveConfig, source: LiveSource):
        self.config = config
        self.source = source
        self.stopping = threading.Event()
        self._streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one picked when live.port is 0)."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.bind if self.config.bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> LiveServer:
        server = ThreadingHTTPServer((self.config.bind, self.config.port), _Handler)
        server.daemon_threads = True
        server.live = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="live-http", daemon=True
        )
        self._thread.start()
        log.info(event("live_started", bind=self.config.bind, port=self.port))
        return self

    def stop(self) -> None:
        self.stopping.set()  # ends the MJPEG loops
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    server_version = "revisit-edge"
    timeout = 10  # a viewer that stops reading frees its thread after this

    @property
    def live(self) -> LiveServer:
        return self.server.live  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug(event("http", client=self.client_address[0], request=format % args))

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?", 1)[0]
        try:
            if path == "/":
                self._send(HTTPStatus.OK, _status_page(self.live.source.status()).encode(), "text/html; charset=utf-8")
            elif path == "/metrics":
                body, ctype = self.live.source.metrics()
                self._send(HTTPStatus.OK, body, ctype)
            elif path == "/healthz":
                ok, why = self.live.source.health()
                self._send(
                    HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                    (why + "\n").encode(),
                    "text/plain; charset=utf-8",
                )
            elif (m := _CAMERA_PATH.match(path)) and m["id"] in self.live.source.camera_ids():
                if m["ext"] == "jpg":
                    self._send(HTTPStatus.OK, self.live.source.snapshot_jpeg(m["id"]), "image/jpeg")
                else:
                    self._mjpeg(m["id"])
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _mjpeg(self, camera_id: str) -> None:
        if not self.live._streams.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many viewers\n", "text/plain; charset=utf-8")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            period = 1.0 / self.live.config.mjpeg_fps
            while not self.live.stopping.is_set():
                jpeg = self.live.source.snapshot_jpeg(camera_id)
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                self.wfile.flush()
                self.live.stopping.wait(period)
        finally:
            self.live._streams.release()


def _status_page(status: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for cam in status.get("cameras", []):
        cid = e(str(cam["id"]))
        rows.append(
            "<tr>"
            f"<td><a href='/camera/{cid}.mjpg'>{cid}</a></td><td><code>{e(str(cam.get('source', '')))}</code></td>"
            f"<td>{'yes' if cam.get('connected') else '<b>no</b>'}</td><td>{cam.get('fps', 0):.1f}</td>"
            f"<td>{cam.get('frames_read', 0)}</td><td>{cam.get('frames_analyzed', 0)}</td>"
            f"<td>{cam.get('motion_skipped', 0)}</td><td>{cam.get('dropped', 0)}</td>"
            f"<td>{cam.get('tracks_started', 0)}</td><td>{cam.get('observations', 0)}</td>"
            f"<td>{cam.get('reconnects', 0)}</td><td>{e(str(cam.get('last_error') or ''))}</td>"
            "</tr>"
        )
    pub = status.get("publisher", {})
    pub_line = ", ".join(f"{e(str(k))} {e(str(v))}" for k, v in pub.items())
    views = "".join(
        f"<figure><img src='/camera/{e(str(c['id']))}.mjpg' width='480' alt='{e(str(c['id']))}'>"
        f"<figcaption>{e(str(c['id']))}</figcaption></figure>"
        for c in status.get("cameras", [])
    )
    title = f"Revisit edge {e(str(status.get('site', '')))}/{e(str(status.get('device', '')))}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="10"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:nth-child(2),td:last-child{{text-align:left}}
figure{{display:inline-block;margin:4px}}</style></head>
<body><h1>{title}</h1>
<p>up {status.get("uptime_s", 0):.0f} s · MQTT: {pub_line} · <a href="/metrics">metrics</a></p>
<table><tr><th>camera</th><th>source</th><th>connected</th><th>fps analysed</th><th>frames read</th>
<th>analysed</th><th>motion skipped</th><th>dropped</th><th>tracks</th><th>observations</th><th>reconnects</th>
<th>last error</th></tr>
{"".join(rows)}
</table>
{views}
</body></html>
"""

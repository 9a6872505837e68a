"""systemd service notification (the sd_notify protocol): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by $NOTIFY_SOCKET ('@' starts an
abstract socket name). That is a dozen lines with the stdlib `socket` module, so no dependency: python-systemd
needs libsystemd headers to build and the small PyPI wrappers add nothing. Without $NOTIFY_SOCKET (not under
systemd, or tests) every call is a no-op that returns False.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from revisit.shared.logfmt import event

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None, default_watchdog_s: float | None = None):
        """`default_watchdog_s`: the period to ping at when systemd gives none ($WATCHDOG_USEC unset)."""
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self.watchdog_s = _watchdog_period(env) or default_watchdog_s
        self._last_ping = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_interval_s(self) -> float | None:
        """Half the watchdog period (systemd's advice), or None when the watchdog is off."""
        return self.watchdog_s / 2 if self.watchdog_s else None

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            if not self._failed:  # say it once, not at every watchdog ping
                log.warning(event("sd_notify_failed", socket=self.address, error=exc))
                self._failed = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, now: float | None = None) -> bool:
        """Ping the watchdog if half its period has passed since the last ping (call it as often as you like)."""
        interval = self.ping_interval_s
        if self.address is None or interval is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < interval:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")


def _watchdog_period(env: Mapping[str, str]) -> float | None:
    """$WATCHDOG_USEC in seconds, if it is meant for this process ($WATCHDOG_PID absent or ours)."""
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None

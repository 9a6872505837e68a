"""A throwaway Mosquitto broker for tests, and a paho subscriber that collects messages.

The broker listens on a free port of 127.0.0.1 with persistence in its own directory; `stop()` and `start()`
again keep the port and the persisted sessions, like a broker that restarts. `max_queued_messages` is set
explicitly: the default (1000) silently drops QoS 1 messages queued for a slow or offline subscriber.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = Path("/usr/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    def __init__(self, directory: Path, port: int | None = None, extra: str = ""):
        """`extra`: more configuration lines for the listener (TLS files, password_file, ...)."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.dir / "mosquitto.conf"
        (self.dir / "data").mkdir(exist_ok=True)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{extra}"
            f"allow_anonymous {'false' if 'password_file' in extra else 'true'}\n"
            # As root, Mosquitto drops to user `mosquitto`, which cannot write our persistence directory.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "persistence true\n"
            f"persistence_location {self.dir / 'data'}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"

    def start(self) -> Mosquitto:
        assert self.proc is None, "already running"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)], stdout=out, stderr=out)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Subscriber:
    """A paho client subscribed (QoS 1, persistent session) to `topic`, keeping every message it receives."""

    def __init__(self, port: int, topic: str, client_id: str = "revisit-test-sub"):
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self.topic = topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"subscriber could not subscribe to {topic} on port {port}")

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until predicate(messages) is true."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def payloads(self, topic_suffix: str = "") -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages if m.topic.endswith(topic_suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

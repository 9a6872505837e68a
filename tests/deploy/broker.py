"""The production Mosquitto configuration (deploy/mosquitto/) run for tests, and paho clients with certificates.

`SecureBroker` writes deploy/mosquitto/mosquitto.conf with only its port (a free loopback one), its file paths
(a temporary directory) and the process user substituted, copies the ACL and the CA's files next to it, and
starts /usr/sbin/mosquitto. Everything else is the file we ship.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.mosquitto import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
ACL = REPO / "deploy" / "mosquitto" / "acl"


def production_config(directory: Path, port: int) -> str:
    """The shipped configuration with the test's port and paths; fails if the file's layout changed."""
    text = CONF.read_text()
    assert "/etc/mosquitto/revisit/" in text and re.search(r"^listener 8883$", text, re.M), "layout changed"
    text = text.replace("/etc/mosquitto/revisit/", f"{directory}/").replace("/var/lib/mosquitto/", f"{directory}/data/")
    text = re.sub(r"^listener 8883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    # As root Mosquitto would switch to user `mosquitto`, which cannot read the test's files.
    return text + f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"


class SecureBroker(Mosquitto):
    """Mosquitto with the shipped production configuration (TLS, ACL, CRL); start/stop as the test broker."""

    def __init__(self, directory: Path, ca_dir: Path, server_dir: Path):
        self.dir = Path(directory)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.ca_dir = Path(ca_dir)
        self.port = free_port()
        for name in ("ca.pem", "server.pem", "server.key"):
            shutil.copyfile(server_dir / name, self.dir / name)
        self.refresh_crl()
        shutil.copyfile(ACL, self.dir / "acl")
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(production_config(self.dir, self.port))
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None

    def refresh_crl(self) -> None:
        """Copy the CA's current CRL where the broker reads it (what an operator does after a revocation)."""
        shutil.copyfile(self.ca_dir / "crl.pem", self.dir / "crl.pem")

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto`: re-reads the ACL and the TLS files (CRL included)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)


class Client:
    """A paho MQTT 3.1.1 client authenticated by a certificate; keeps what it receives."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, client_id: str = "test"):
        self.messages: list[mqtt.MQTTMessage] = []
        self.connack: object = None
        self.disconnects: list[object] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.port = port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.connack = reason_code
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.disconnects.append(reason_code)
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def connect(self, timeout: float = 5.0) -> bool:
        """True when the broker accepted the connection (CONNACK success)."""
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=10)
        except (OSError, ssl.SSLError):
            return False
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self.connack is not None or self.disconnects, timeout)
        time.sleep(0.2)  # TLS 1.3: a refused client certificate shows up as a drop right after CONNACK's wait
        ok = self.connack is not None and not getattr(self.connack, "is_failure", True) and not self.disconnects
        if not ok:
            self.close()
        return ok

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.messages]

    def wait_for(self, predicate, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

"""The embedded MQTT broker (amqtt, MQTT 3.1.1) for a single box or a demo, run in its own thread.

amqtt only exposes the bound port through a private attribute (`Broker._servers`); that access stays here.
amqtt keeps no queued messages for anonymous sessions, so clients are let in by `OpenAuthPlugin`, which
accepts everyone without marking them anonymous: persistent sessions (clean_session=False) then keep QoS 1
messages while the central subscriber is away. With a password file, amqtt's FileAuthPlugin checks clients.
Shared subscriptions (`$share/...`) are not supported by amqtt: use Mosquitto for several central workers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from revisit.shared.errors import RevisitError

log = logging.getLogger(__name__)


class BrokerError(RevisitError):
    """The embedded broker could not start."""


class OpenAuthPlugin(BaseAuthPlugin):
    """Lets every client in as a normal (not anonymous) session, so persistent sessions queue messages."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


class EmbeddedBroker:
    """amqtt in a background thread with its own event loop; `port` is the bound port once started."""

    def __init__(self, bind: str = "127.0.0.1", port: int = 1883, password_file: Path | None = None):
        self.bind = bind
        self.requested_port = port
        self.password_file = password_file
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None

    def _config(self) -> dict:
        auth = (
            {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(self.password_file)}}
            if self.password_file
            else {f"{__name__}.OpenAuthPlugin": {}}
        )
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.bind}:{self.requested_port}"}},
            "plugins": auth,
        }

    def start(self, timeout: float = 10.0) -> int:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(self._config(), loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            detail = failure[0] if failure else "timed out"
            raise BrokerError(f"embedded MQTT broker could not listen on {self.bind}:{self.requested_port}: {detail}")
        assert self._broker is not None
        server = self._broker._servers["default"]  # amqtt has no public accessor for the bound socket
        self.port = int(server.instance.sockets[0].getsockname()[1])
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", self.bind, self.port)
        return self.port

    def stop(self, timeout: float = 10.0) -> None:
        loop, broker, thread = self._loop, self._broker, self._thread
        if loop is None or broker is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout)
        except Exception as exc:  # shutting down anyway
            log.warning("embedded broker shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._broker = self._loop = self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The embedded MQTT broker (amqtt, MQTT 3.1.1) for a single box or a demo, run in its own thread.

amqtt only exposes the bound port through a private attribute (`Broker._servers`); that access stays here.
amqtt keeps no queued messages for anonymous sessions, so clients are let in by `OpenAuthPlugin`, which
accepts everyone without marking them anonymous: persistent sessions (clean_session=False) then keep QoS 1
messages while the central subscriber is away. With a password file, amqtt's FileAuthPlugin checks clients.
Shared subscriptions (`$share/...`) are not supported by amqtt: use Mosquitto for several central workers.

With a password file, `DeviceAclPlugin` applies the same ACL as deploy/mosquitto/acl: a box's username is
`<site>/<device>`; it may publish only revisit/v1/<site>/<device>/faces and /status and read only its own
/acks; central's user reads everything under revisit/v1/ and publishes every box's /acks. Without a password
file there is no identity to bind topics to (the open mode of a demo or a single box on localhost).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from revisit.shared.errors import RevisitError
from revisit.shared.schema import TOPIC_ROOT, parse_topic

log = logging.getLogger(__name__)


class BrokerError(RevisitError):
    """The embedded broker could not start."""


class OpenAuthPlugin(BaseAuthPlugin):
    """Lets every client in as a normal (not anonymous) session, so persistent sessions queue messages."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


def acl_allows(username: str | None, central: str, topic: str, action: str) -> bool:
    """The Revisit ACL: `action` is "publish", "subscribe" (a topic filter) or "receive"."""
    if not username or not topic:
        return False
    if username == central:
        if action == "publish":
            try:
                return parse_topic(topic)[2] == "acks"
            except Exception:
                return False
        return topic.startswith(f"{TOPIC_ROOT}/") or topic.startswith("$share/")
    own = f"{TOPIC_ROOT}/{username}"
    try:
        parse_topic(f"{own}/acks")  # the username must be <site>/<device>
    except Exception:
        return False
    if action == "publish":
        return topic in (f"{own}/faces", f"{own}/status")
    return topic == f"{own}/acks"


class DeviceAclPlugin(BaseTopicPlugin):
    """amqtt topic filter applying `acl_allows` (only installed with a password file: identities are real)."""

    @dataclass
    class Config:
        central: str = "revisit-central"

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        names = {Action.PUBLISH: "publish", Action.SUBSCRIBE: "subscribe", Action.RECEIVE: "receive"}
        user = session.username if session else None
        allowed = action in names and acl_allows(user, self.context.config.central, topic or "", names[action])
        if not allowed and action != Action.RECEIVE:
            log.warning("embedded broker ACL: %s may not %s %s", user, names.get(action, action), (topic or "")[:200])
        return allowed


class EmbeddedBroker:
    """amqtt in a background thread with its own event loop; `port` is the bound port once started."""

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = 1883,
        password_file: Path | None = None,
        central: str = "revisit-central",
    ):
        self.bind = bind
        self.central = central
        self.requested_port = port
        self.password_file = password_file
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None

    def _config(self) -> dict:
        auth = (
            {
                "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(self.password_file)},
                f"{__name__}.DeviceAclPlugin": {"central": self.central},
            }
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

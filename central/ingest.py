"""MQTT ingest: validate every message, store observations through the clusterer, keep devices' status.

Subscriptions (QoS 1, MQTT 3.1.1, persistent session: clean_session=False and a stable client id):
  revisit/v1/+/+/faces    (or $share/<group>/revisit/v1/+/+/faces: several workers split the load)
  revisit/v1/+/+/status   (never shared: every worker keeps device rows current; it is idempotent)

Every message is checked (topic, schema and sizes, finite unit-norm embedding, a known recognizer with the
right dimension, the crop decodes as an image within limits); a rejected one is counted by reason, logged
(rate-limited) and acknowledged, so it is never redelivered. Nothing in a payload can raise out of
`Ingestor.handle`. Acknowledgement is manual and comes only after the sighting is committed: a crash before
the commit leaves the message unacknowledged, and the broker redelivers it to the persistent session; the
observation UUID makes a redelivery of an already-stored message a no-op. A store failure (database or
Qdrant down, disk full) is retried in place with backoff (this also holds the flow back) and, if it
persists, the message is left unacknowledged for redelivery after the next reconnect.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy.exc import DBAPIError, DisconnectionError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from revisit.central.cluster import Clusterer
from revisit.central.store import Store, ensure_device, ensure_site, from_epoch, utcnow
from revisit.models.manifest import Manifest
from revisit.shared.errors import ImageError
from revisit.shared.image import decode_image
from revisit.shared.schema import (
    MAX_CROP_BYTES,
    TOPIC_ROOT,
    DeviceStatus,
    Observation,
    SchemaError,
    decode,
    parse_topic,
)

log = logging.getLogger(__name__)
FACES_FILTER = f"{TOPIC_ROOT}/+/+/faces"
STATUS_FILTER = f"{TOPIC_ROOT}/+/+/status"
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Failures that pass: the database or Qdrant away, a pool exhausted, a dropped connection.
TRANSIENT = (DBAPIError, SQLAlchemyTimeoutError, DisconnectionError, PendingRollbackError, OSError)
# While the store is down, a message is retried this often (capped); it is never acknowledged before it is stored.
STORE_RETRY_MAX_S = 30.0


def known_recognizers(extra: dict[str, int] | None = None) -> dict[str, int]:
    """Recognizer id -> embedding dim: the manifest's recognizers plus configured custom ones."""
    known = {spec.model_id: int(spec.embedding_dim or 0) for spec in Manifest.load() if spec.role == "recognizer"}
    return known | dict(extra or {})


class Counters:
    """Thread-safe counts: outcomes (`stored`, `duplicate`, `status`, `error`) and `rejected.<reason>`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def inc(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def rejected(self) -> dict[str, int]:
        return {k.split(".", 1)[1]: v for k, v in self.snapshot().items() if k.startswith("rejected.")}

    def get(self, key: str) -> int:
        with self._lock:
            return self._counts[key]


@dataclass(frozen=True)
class Outcome:
    kind: str  # stored, duplicate, status, rejected, error
    reason: str = ""  # the rejection reason
    ack: bool = True  # False only when the store failed: leave it for redelivery


class Ingestor:
    """Turns one (topic, payload) into a stored sighting or device status, or a counted rejection."""

    def __init__(
        self,
        clusterer: Clusterer,
        store: Store,
        recognizers: dict[str, int],
        *,
        max_crop_pixels: int = 1024 * 1024,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ):
        self.clusterer = clusterer
        self.store = store
        self.recognizers = dict(recognizers)
        self.max_crop_pixels = max_crop_pixels
        self.retry_delays = retry_delays
        self.counters = Counters()
        self._last_log: dict[str, float] = {}

    def handle(self, topic: str, payload: bytes, *, backfill: bool = False) -> Outcome:
        """Never raises: every failure is an Outcome. `backfill`: history (imports, evaluations), same path."""
        try:
            outcome = self._handle(topic, bytes(payload))
        except Exception:  # a bug, not bad input: count it, keep the message out of a redelivery loop
            log.exception("unexpected error on %s", topic[:200])
            outcome = Outcome("error", "internal", ack=True)
        self.counters.inc(f"rejected.{outcome.reason}" if outcome.kind == "rejected" else outcome.kind)
        return outcome

    def _handle(self, topic: str, payload: bytes) -> Outcome:
        try:
            site, device, kind = parse_topic(topic)
        except SchemaError as exc:
            return self._reject(exc.reason, exc.detail, topic)
        if kind == "faces":
            return self._faces(site, device, payload, topic)
        if kind == "status":
            return self._status(site, device, payload, topic)
        return self._reject("unknown_kind", f"topic kind {kind[:40]!r}", topic)

    def _faces(self, site: str, device: str, payload: bytes, topic: str) -> Outcome:
        try:
            obs: Observation = decode(payload, Observation)
        except SchemaError as exc:
            return self._reject(exc.reason, exc.detail, topic)
        if (obs.site, obs.device) != (site, device):
            return self._reject("topic_mismatch", f"message of {obs.site}/{obs.device} on {topic}", topic)
        dim = self.recognizers.get(obs.recognizer_id)
        if dim is None:
            return self._reject("unknown_recognizer", f"recognizer {obs.recognizer_id[:128]!r}", topic)
        if dim != obs.embedding_dim:
            detail = f"{obs.embedding_dim}-d from {obs.recognizer_id} (expects {dim})"
            return self._reject("bad_dimension", detail, topic)
        try:
            decode_image(obs.crop_jpeg, max_pixels=self.max_crop_pixels, max_bytes=MAX_CROP_BYTES)
        except ImageError as exc:
            return self._reject("bad_crop", str(exc), topic)
        result = self._with_retry(lambda: self.clusterer.ingest(obs), topic)
        if result is None:
            return Outcome("error", "store", ack=False)
        return Outcome("duplicate" if result.duplicate else "stored")

    def _status(self, site: str, device: str, payload: bytes, topic: str) -> Outcome:
        if not payload:
            return Outcome("status")  # a cleared retained message
        try:
            status: DeviceStatus = decode(payload, DeviceStatus)
        except SchemaError as exc:
            return self._reject(exc.reason, exc.detail, topic)
        if (status.site, status.device) != (site, device):
            return self._reject("topic_mismatch", f"status of {status.site}/{status.device} on {topic}", topic)

        def save() -> None:
            with self.clusterer.lock, self.store.begin() as s:
                row = ensure_device(s, ensure_site(s, site), device)
                row.state, row.version = status.state, status.version
                row.stats = dict(status.stats)
                row.status_at, row.last_seen = from_epoch(status.ts), utcnow()

        ok = self._with_retry(lambda: save() or True, topic)
        return Outcome("status") if ok else Outcome("error", "store", ack=False)

    def _with_retry(self, work: Any, topic: str) -> Any:
        """Run a store operation, retrying transient failures; None if they persist."""
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        for attempt in range(len(self.retry_delays) + 1):
            try:
                return work()
            except (*TRANSIENT, ResponseHandlingException, UnexpectedResponse) as exc:
                if attempt == len(self.retry_delays):
                    log.error("store failed on %s after %d attempts, left for redelivery: %s", topic, attempt + 1, exc)
                    return None
                log.warning("store failed on %s (%s), retrying", topic, type(exc).__name__)
                time.sleep(self.retry_delays[attempt])
        return None

    def _reject(self, reason: str, detail: str, topic: str) -> Outcome:
        now = time.monotonic()
        if now - self._last_log.get(reason, -1e9) >= 10.0:  # one line per reason per 10 s
            self._last_log[reason] = now
            total = self.counters.get(f"rejected.{reason}") + 1
            log.warning("rejected message on %s: %s: %s (%d so far)", topic[:200], reason, detail[:300], total)
        return Outcome("rejected", reason)


class MqttIngest:
    """The paho client: persistent QoS 1 subscriptions, manual acknowledgement after `Ingestor.handle`."""

    def __init__(
        self,
        ingestor: Ingestor,
        host: str,
        port: int,
        *,
        client_id: str = "revisit-central",
        username: str | None = None,
        password: str | None = None,
        tls: Any = None,
        keepalive: int = 30,
        shared_group: str | None = None,
        max_inflight: int = 20,
    ):
        self.ingestor = ingestor
        self.host, self.port, self.keepalive = host, port, keepalive
        self.shared_group = shared_group
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._stopping = False
        self._stop_event = threading.Event()  # wakes a store retry at shutdown
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.max_inflight_messages_set(max_inflight)
        client.reconnect_delay_set(1, 30)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set(
                ca_certs=str(tls.ca),
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(tls.insecure_skip_verify)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self.client = client

    @property
    def topics(self) -> list[str]:
        faces = f"$share/{self.shared_group}/{FACES_FILTER}" if self.shared_group else FACES_FILTER
        return [faces, STATUS_FILTER]

    def start(self, wait: float = 0) -> bool:
        """Connect in the background (retrying forever); with `wait`, block until subscribed or timeout."""
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        return self.subscribed.wait(wait) if wait else False

    def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect to %s:%d refused: %s", self.host, self.port, reason)
            return
        log.info("MQTT connected to %s:%d; subscribing to %s", self.host, self.port, ", ".join(self.topics))
        self.connected.set()
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(getattr(c, "is_failure", False) for c in codes):
            log.error("MQTT subscription refused: %s", codes)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers should refuse these; never let one stop the network thread
            topic = "<topic is not UTF-8>"
        outcome = self.ingestor.handle(topic, msg.payload)
        delay = 1.0
        # The store is down: keep the message (and, by blocking, the ones behind it) until it is stored. Giving up
        # would leave it unacknowledged with nothing to trigger a redelivery, and a stalled in-flight window.
        while not outcome.ack and not self._stopping:
            log.warning("store unavailable; retrying the message on %s in %.0f s", topic[:200], delay)
            self._stop_event.wait(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_S)
            outcome = self.ingestor.handle(topic, msg.payload)
        if outcome.ack:
            client.ack(msg.mid, msg.qos)

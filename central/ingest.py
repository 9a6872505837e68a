"""MQTT ingest as a pipeline: validate every message, store observations in micro-batches through the clusterer,
acknowledge what is stored (MQTT and application level), keep devices' status.

Subscriptions (QoS 1, MQTT 3.1.1, persistent session: clean_session=False and a client id unique per worker):
  revisit/v1/+/+/faces    (or $share/<group>/revisit/v1/+/+/faces: several workers split the load)
  revisit/v1/+/+/status   (never shared: every worker keeps device rows current; it is idempotent)
Publications (QoS 1): revisit/v1/{site}/{device}/acks, a `DeliveryAck` with the observation ids committed (or
rejected for good) since the last one; the edge keeps each observation in its spool until it is named there.

Threads: paho's network thread only puts (topic, payload, mid) into a bounded queue, so keepalives go out whatever
the store does. One worker drains micro-batches (up to `batch_size` messages or `batch_ms`), validates them,
assigns them in order in one database transaction and one vector upsert (`Assigner.ingest_batch`), then sends
each MQTT PUBACK and the application acks. A store failure (database or Qdrant down, disk full) is retried by
one `RetryPolicy` with backoff until it passes; nothing is acknowledged meanwhile, /healthz turns 503, and the
queue fills up to the broker's in-flight window. When the queue is full, a new message is neither queued nor
acknowledged (flow control): the broker keeps it for the persistent session, and once the queue has room again
the worker reconnects so the broker redelivers it (the edges resend unconfirmed ones too). Nothing is dropped.

Every message is checked (topic, strict schema and sizes, finite unit-norm embedding, a known recognizer with the
right dimension, the crop decodes as an image within limits); a rejected one is counted by reason, logged
(rate-limited), acknowledged and named in the edge's ack as rejected, so it is never resent. Observation times far
from the receive time (a wrong device clock) are counted as `clock_skew` and stamped with the receive time (the
sighting is flagged, the device's time kept); `handle(..., backfill=True)` skips that check for deliberate imports.
Nothing in a payload can raise out of `Ingestor.handle`. The observation UUID makes a resend of a stored one a
no-op that is acknowledged again.

A message whose storing fails with a non-transient error (a bug, not bad input; found one by one when a batch
fails) is a dead letter: saved as received in the `dead_letter` table, counted (`dead_letters`), logged, and only
then acknowledged to the edge as rejected, so it stops resending it; `revisit central backfill --dead-letters`
replays them once the fault is fixed (`Ingestor.replay_dead_letters`). If even that save fails, the message is
left unacknowledged to the edge, which resends it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import socket
import ssl
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy.exc import DBAPIError, DisconnectionError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlmodel import select

from revisit.central.clustering import Assigner, SightingNote
from revisit.central.store import DeadLetter, Store, ensure_device, ensure_site, from_epoch, utcnow
from revisit.models.manifest import Manifest
from revisit.shared.backoff import backoff
from revisit.shared.errors import ImageError
from revisit.shared.image import decode_image
from revisit.shared.schema import (
    MAX_ACK_IDS,
    MAX_CROP_BYTES,
    TOPIC_ROOT,
    DeliveryAck,
    DeviceStatus,
    Observation,
    SchemaError,
    acks_topic,
    decode,
    encode,
    parse_topic,
    peek_observation_id,
)

log = logging.getLogger(__name__)
FACES_FILTER = f"{TOPIC_ROOT}/+/+/faces"
STATUS_FILTER = f"{TOPIC_ROOT}/+/+/status"
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Failures that pass: the database or Qdrant away, a pool exhausted, a dropped connection.
TRANSIENT = (DBAPIError, SQLAlchemyTimeoutError, DisconnectionError, PendingRollbackError, OSError)
# While the store is down, a batch is retried this often (capped); it is never acknowledged before it is stored.
STORE_RETRY_MAX_S = 30.0
MAX_STAMPED_SPAN_S = 3600.0  # a stamped observation keeps its duration up to this


def known_recognizers(extra: dict[str, int] | None = None) -> dict[str, int]:
    """Recognizer id -> embedding dim: the manifest's recognizers plus configured custom ones."""
    known = {spec.model_id: int(spec.embedding_dim or 0) for spec in Manifest.load() if spec.role == "recognizer"}
    return known | dict(extra or {})


def _transient() -> tuple[type[BaseException], ...]:
    if "qdrant_client" not in sys.modules:  # only the Qdrant engine raises these: never import it (~1 s) for them
        return TRANSIENT
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    return (*TRANSIENT, ResponseHandlingException, UnexpectedResponse)


class StoreUnavailable(Exception):
    """A store operation kept failing with transient errors until the retry policy gave up (or was stopped)."""


class RetryPolicy:
    """The one retry policy of the store: transient failures are retried with these delays, then every
    `max_delay` (doubling up to it) while `forever`; anything else is raised at once. Reports its state to
    `on_failure(exc)` / `on_success()` (health)."""

    def __init__(
        self,
        delays: Sequence[float] = RETRY_DELAYS,
        max_delay: float = STORE_RETRY_MAX_S,
        on_failure: Callable[[BaseException], None] | None = None,
        on_success: Callable[[], None] | None = None,
    ):
        self.delays = tuple(delays)
        self.max_delay = max_delay
        self.on_failure = on_failure
        self.on_success = on_success

    def run(
        self, work: Callable[[], Any], what: str, *, forever: bool = False, stop: threading.Event | None = None
    ) -> Any:
        """`work()`'s result; StoreUnavailable when the failures outlast the policy (or `stop` is set)."""
        transient = _transient()
        attempt = 0
        while True:
            try:
                result = work()
            except transient as exc:
                if self.on_failure is not None:
                    self.on_failure(exc)
                if attempt < len(self.delays):
                    delay = self.delays[attempt]
                elif forever:
                    last = self.delays[-1] if self.delays else 1.0
                    delay = backoff(attempt - len(self.delays) + 1, last, self.max_delay)
                else:
                    log.error("store failed on %s after %d attempts: %s", what, attempt + 1, exc)
                    raise StoreUnavailable(str(exc)) from exc
                attempt += 1
                log.warning(
                    "store failed on %s (%s: %s); retry %d in %.1f s",
                    what,
                    type(exc).__name__,
                    str(exc)[:200],
                    attempt,
                    delay,
                )
                if stop is not None:
                    if stop.wait(delay):
                        raise StoreUnavailable("stopping") from exc
                else:
                    time.sleep(delay)
                continue
            if self.on_success is not None:
                self.on_success()
            return result


class Counters:
    """Thread-safe counts. Outcomes, one per message handled: `stored`, `duplicate`, `status`, `error`,
    `dead_letters`, `rejected.<reason>`; and `clock_skew`, `backfill`, `store_errors`, `acks_sent`.

    MQTT deliveries (`MqttIngest`), where one message may arrive many times (the broker resends every unacknowledged
    one on each reconnect): `deliveries` (every PUBLISH received), of them `redelivered` (with the DUP flag),
    `flow_refused` (refused: the queue was full) and `resend_skipped` (a resend of a message still queued here);
    `flow_refused_messages` counts distinct messages refused at least once. Every delivery is queued (then handled:
    one outcome), refused or skipped: deliveries = outcomes + flow_refused + resend_skipped."""

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
    kind: str  # stored, duplicate, status, rejected, dead_letter, error
    reason: str = ""  # the rejection reason; of a dead letter, the exception type
    ack: bool = True  # False only when the store failed: leave it for redelivery
    site: str = ""  # of a faces message whose topic parsed: where the application ack goes
    device: str = ""
    observation_id: str = ""  # of an observation (stored, duplicate, or rejected with a readable id)


@dataclass
class _Prepared:
    """One message after validation: an outcome already, or an observation / status still to be stored."""

    topic: str
    outcome: Outcome | None = None
    payload: bytes = b""
    obs: Observation | None = None
    note: SightingNote | None = None
    status: DeviceStatus | None = None


class Ingestor:
    """Turns (topic, payload) messages into stored sightings or device statuses, or counted rejections."""

    def __init__(
        self,
        clusterer: Assigner,
        store: Store,
        recognizers: dict[str, int],
        *,
        max_crop_pixels: int = 1024 * 1024,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        max_past_s: float | None = None,
        max_future_s: float | None = None,
    ):
        """`max_past_s` / `max_future_s`: observations further from the receive time are stamped (None: trusted)."""
        self.clusterer = clusterer
        self.store = store
        self.recognizers = dict(recognizers)
        self.max_crop_pixels = max_crop_pixels
        self.max_past_s, self.max_future_s = max_past_s, max_future_s
        self.counters = Counters()
        self.retry = RetryPolicy(retry_delays, on_failure=self._store_failed, on_success=self._store_ok)
        self._last_log: dict[str, float] = {}
        self._health_lock = threading.Lock()
        self.store_failing_since: float | None = None  # wall time of the first failure of the current outage
        self.last_store_error = ""

    # --- health ---

    def _store_failed(self, exc: BaseException) -> None:
        self.counters.inc("store_errors")
        with self._health_lock:
            if self.store_failing_since is None:
                self.store_failing_since = time.time()
            self.last_store_error = f"{type(exc).__name__}: {str(exc)[:200]}"

    def _store_ok(self) -> None:
        with self._health_lock:
            if self.store_failing_since is not None:
                log.info("store is back after %.1f s", time.time() - self.store_failing_since)
            self.store_failing_since = None

    # --- one message, synchronously (tests, backfill) ---

    def handle(self, topic: str, payload: bytes, *, backfill: bool = False) -> Outcome:
        """Validate and store one message (retrying transient store failures a few times). Never raises:
        every failure is an Outcome. `backfill`: a deliberate import of old observations, stored with the same
        validation and assignment, flagged as backfill and exempt from the clock-skew check."""
        return self.handle_batch([(topic, payload)], backfill=backfill)[0]

    def handle_batch(
        self,
        messages: Sequence[tuple[str, bytes]],
        *,
        backfill: bool = False,
        forever: bool = False,
        stop: threading.Event | None = None,
        received: float | None = None,
    ) -> list[Outcome]:
        """Messages in order: observations in one transaction (`Assigner.ingest_batch`), statuses each in its
        own. `forever`: retry a store outage until it passes (or `stop` is set). `received`: the receive time
        (default now; a replayed dead letter's own). Never raises."""
        received = time.time() if received is None else received
        prepared: list[_Prepared] = []
        for topic, payload in messages:
            payload = bytes(payload)
            try:
                p = self._prepare(topic, payload, received, backfill)
            except Exception as exc:  # a bug, not bad input: keep the message as a dead letter (logged there)
                p = _Prepared(topic, payload=payload)
                p.outcome = self._dead_letter(p, exc, received, backfill, forever, stop)
            p.payload = payload
            prepared.append(p)
        faces = [p for p in prepared if p.obs is not None]
        if faces:
            self._store_faces(faces, received, backfill, forever, stop)
        for p in prepared:
            if p.status is not None:
                p.outcome = self._save_status(p.status, p.topic, forever, stop)
        outcomes: list[Outcome] = []
        per_device: Counter[tuple[str, str]] = Counter()
        for p in prepared:
            outcome = p.outcome or Outcome("error", "internal")
            key = {"rejected": f"rejected.{outcome.reason}", "dead_letter": "dead_letters"}.get(outcome.kind)
            self.counters.inc(key or outcome.kind)
            outcomes.append(outcome)
            if outcome.kind in ("rejected", "dead_letter"):
                with contextlib.suppress(SchemaError):  # a bad topic names no device
                    per_device[parse_topic(p.topic)[:2]] += 1
        if per_device:
            self._count_rejected(per_device, forever, stop)
        return outcomes

    def _count_rejected(
        self, per_device: Counter[tuple[str, str]], forever: bool, stop: threading.Event | None
    ) -> None:
        """`Device.rejected` of the device whose topic a rejected message came on. Best effort: the rejection is
        already counted and logged, and a store failure here never holds up the acks."""

        def save() -> None:
            with self.clusterer.lock, self.store.begin() as s:
                for (site, device), n in per_device.items():
                    ensure_device(s, ensure_site(s, site), device).rejected += n

        try:
            self.retry.run(save, "rejected counts", forever=forever, stop=stop)
        except StoreUnavailable:
            log.warning("rejected counts of %d device(s) not saved: the store is unavailable", len(per_device))
        except Exception:
            log.exception("rejected counts of %d device(s) not saved", len(per_device))

    def _prepare(self, topic: str, payload: bytes, received: float, backfill: bool) -> _Prepared:
        try:
            site, device, kind = parse_topic(topic)
        except SchemaError as exc:
            return _Prepared(topic, self._reject(exc.reason, exc.detail, topic))
        if kind == "faces":
            return self._prepare_faces(site, device, payload, topic, received, backfill)
        if kind == "status":
            return self._prepare_status(site, device, payload, topic)
        return _Prepared(topic, self._reject("unknown_kind", f"topic kind {kind[:40]!r}", topic))

    def _prepare_faces(
        self, site: str, device: str, payload: bytes, topic: str, received: float, backfill: bool
    ) -> _Prepared:
        def reject(reason: str, detail: str) -> _Prepared:
            oid = peek_observation_id(payload) or ""
            return _Prepared(topic, self._reject(reason, detail, topic, site=site, device=device, observation_id=oid))

        try:
            obs: Observation = decode(payload, Observation)
        except SchemaError as exc:
            return reject(exc.reason, exc.detail)
        if (obs.site, obs.device) != (site, device):
            return _Prepared(
                topic, self._reject("topic_mismatch", f"message of {obs.site}/{obs.device} on {topic}", topic)
            )
        dim = self.recognizers.get(obs.recognizer_id)
        if dim is None:
            return reject("unknown_recognizer", f"recognizer {obs.recognizer_id[:128]!r}")
        if dim != obs.embedding_dim:
            return reject("bad_dimension", f"{obs.embedding_dim}-d from {obs.recognizer_id} (expects {dim})")
        try:
            decode_image(obs.crop_jpeg, max_pixels=self.max_crop_pixels, max_bytes=MAX_CROP_BYTES)
        except ImageError as exc:
            return reject("bad_crop", str(exc))
        if backfill:
            self.counters.inc("backfill")
            return _Prepared(topic, obs=obs, note=SightingNote("backfill", obs.best_ts, from_epoch(received)))
        skewed = (self.max_future_s is not None and obs.last_ts > received + self.max_future_s) or (
            self.max_past_s is not None and obs.first_ts < received - self.max_past_s
        )
        if not skewed:
            return _Prepared(topic, obs=obs)
        self.counters.inc("clock_skew")
        self._log_rate_limited(
            "clock_skew",
            "observation %s on %s is %.0f s from the receive time: stamped with it",
            obs.observation_id,
            topic[:200],
            obs.best_ts - received,
        )
        span = min(obs.last_ts - obs.first_ts, MAX_STAMPED_SPAN_S)
        best = received - min(obs.last_ts - obs.best_ts, span)
        stamped = obs.model_copy(update={"first_ts": received - span, "best_ts": best, "last_ts": received})
        return _Prepared(topic, obs=stamped, note=SightingNote("clock_skew", obs.best_ts, from_epoch(received)))

    def _prepare_status(self, site: str, device: str, payload: bytes, topic: str) -> _Prepared:
        if not payload:
            return _Prepared(topic, Outcome("status"))  # a cleared retained message
        try:
            status: DeviceStatus = decode(payload, DeviceStatus)
        except SchemaError as exc:
            return _Prepared(topic, self._reject(exc.reason, exc.detail, topic))
        if (status.site, status.device) != (site, device):
            detail = f"status of {status.site}/{status.device} on {topic}"
            return _Prepared(topic, self._reject("topic_mismatch", detail, topic))
        return _Prepared(topic, status=status)

    def _store_faces(
        self, faces: list[_Prepared], received: float, backfill: bool, forever: bool, stop: threading.Event | None
    ) -> None:
        observations = [p.obs for p in faces if p.obs is not None]
        notes = [p.note for p in faces]
        what = f"{len(faces)} observation(s)"
        try:
            results = self.retry.run(
                lambda: self.clusterer.ingest_batch(observations, notes), what, forever=forever, stop=stop
            )
        except StoreUnavailable:
            for p in faces:
                p.outcome = Outcome("error", "store", ack=False)
            return
        except Exception as exc:  # not transient: find the one message that fails, store the others
            if len(faces) == 1:
                faces[0].outcome = self._dead_letter(faces[0], exc, received, backfill, forever, stop)
                return
            log.warning(
                "batch of %d failed (%s: %s); storing its observations one by one",
                len(faces),
                type(exc).__name__,
                str(exc)[:200],
            )
            for p in faces:
                self._store_faces([p], received, backfill, forever, stop)
            return
        for p, result in zip(faces, results, strict=True):
            assert p.obs is not None
            kind = "duplicate" if result.duplicate else "stored"
            p.outcome = Outcome(kind, site=p.obs.site, device=p.obs.device, observation_id=p.obs.observation_id)

    def _dead_letter(
        self,
        p: _Prepared,
        exc: BaseException,
        received: float,
        backfill: bool,
        forever: bool,
        stop: threading.Event | None,
    ) -> Outcome:
        """Save a message that failed for a non-transient reason as a dead letter; its outcome: `dead_letter`
        (acknowledged to the edge as rejected) once saved, else `error` (not acknowledged to the edge)."""
        site = device = ""
        with contextlib.suppress(SchemaError):
            site, device, _ = parse_topic(p.topic)
        oid = p.obs.observation_id if p.obs is not None else (peek_observation_id(p.payload) or "")
        error = f"{type(exc).__name__}: {exc}"[:2000]
        digest = hashlib.sha256(p.topic.encode("utf-8", "replace") + b"\0" + p.payload).hexdigest()

        def save() -> None:
            with self.store.begin() as s:
                row = s.exec(select(DeadLetter).where(DeadLetter.digest == digest)).first()
                if row is None:
                    s.add(
                        DeadLetter(
                            digest=digest,
                            topic=p.topic[:512],
                            site=site,
                            payload=p.payload,
                            observation_id=oid[:64],
                            error=error,
                            backfill=backfill,
                            received_at=from_epoch(received),
                        )
                    )
                else:  # the same message again (a resend, a failed replay)
                    row.error, row.failed_at, row.attempts = error, utcnow(), row.attempts + 1

        try:
            self.retry.run(save, f"dead letter of {p.topic[:200]}", forever=forever, stop=stop)
        except Exception:
            log.exception(
                "message on %s (observation %r) failed (%s) and could not be kept as a dead letter: not acknowledged",
                p.topic[:200],
                oid,
                error[:300],
            )
            return Outcome("error", "internal")
        log.error(
            "message on %s (observation %r) failed and was kept as a dead letter (replay: revisit central "
            "backfill --dead-letters): %s",
            p.topic[:200],
            oid,
            error[:500],
            exc_info=exc,
        )
        return Outcome("dead_letter", type(exc).__name__, site=site, device=device, observation_id=oid)

    def replay_dead_letters(self, limit: int | None = None) -> dict[str, int]:
        """Each dead letter through `handle` again (its own receive time and backfill flag); one stored (or found
        stored already) is deleted, any other stays. Counts by outcome kind."""
        with self.store.session() as s:
            ids = list(s.exec(select(DeadLetter.id).order_by(DeadLetter.received_at).limit(limit)))
        report: Counter[str] = Counter()
        for dl_id in ids:
            with self.store.session() as s:
                row = s.get(DeadLetter, dl_id)
            if row is None:
                continue
            outcome = self.handle_batch(
                [(row.topic, row.payload)], backfill=row.backfill, received=row.received_at.timestamp()
            )[0]
            report[outcome.kind] += 1
            if outcome.kind in ("stored", "duplicate"):
                with self.store.begin() as s:
                    stored = s.get(DeadLetter, dl_id)
                    if stored is not None:
                        s.delete(stored)
            else:
                log.warning(
                    "dead letter %s (%s) not stored on replay: %s %s",
                    dl_id,
                    row.observation_id,
                    outcome.kind,
                    outcome.reason,
                )
        return dict(report)

    def _save_status(self, status: DeviceStatus, topic: str, forever: bool, stop: threading.Event | None) -> Outcome:
        def save() -> None:
            with self.clusterer.lock, self.store.begin() as s:
                row = ensure_device(s, ensure_site(s, status.site), status.device)
                row.state, row.version = status.state, status.version
                row.stats = dict(status.stats)
                row.status_at, row.last_seen = from_epoch(status.ts), utcnow()

        try:
            self.retry.run(save, topic, forever=forever, stop=stop)
        except StoreUnavailable:
            return Outcome("error", "store", ack=False)
        except Exception:
            log.exception("status on %s could not be saved", topic[:200])
            return Outcome("error", "internal")
        return Outcome("status")

    def _log_rate_limited(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= 10.0:  # one line per key per 10 s
            self._last_log[key] = now
            log.warning(msg + " (%d so far)", *args, self.counters.get(key) + (key != "clock_skew"))

    def _reject(self, reason: str, detail: str, topic: str, **ids: str) -> Outcome:
        self._log_rate_limited(
            f"rejected.{reason}", "rejected message on %s: %s: %s", topic[:200], reason, detail[:300]
        )
        return Outcome("rejected", reason, **ids)


@dataclass
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float  # wall time


class MqttIngest:
    """The paho client and the ingest worker: on_message queues, the worker stores batches and acknowledges."""

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
        queue_size: int = 1000,
        batch_size: int = 64,
        batch_ms: float = 50.0,
        app_acks: bool = True,
    ):
        self.ingestor = ingestor
        self.host, self.port, self.keepalive = host, port, keepalive
        self.shared_group = shared_group
        self.batch_size, self.batch_s = batch_size, batch_ms / 1000.0
        self.app_acks = app_acks
        self.client_id = client_id
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.disconnects = 0
        self._stopping = False
        self._stop_event = threading.Event()  # wakes a store retry at shutdown
        self._queue: queue.Queue[_Message] = queue.Queue(maxsize=queue_size)
        self._pending_mids: set[int] = set()  # packet ids queued or being stored (a broker resend is not new)
        self._refused_mids: set[int] = set()  # packet ids refused and not queued since (counted once)
        self._mids_lock = threading.Lock()
        self._refused = threading.Event()  # a message was refused (queue full): reconnect for it once there is room
        self._busy_since: float | None = None  # receive time of the oldest message of the batch being stored
        self._in_batch = 0  # messages of the batch being stored
        self._worker: threading.Thread | None = None
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.max_inflight_messages_set(max_inflight)  # our publications (acks); the broker bounds the inbound
        client.max_queued_messages_set(0)
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
        self._worker = threading.Thread(target=self._work, name="ingest-worker", daemon=True)
        self._worker.start()
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        return self.subscribed.wait(wait) if wait else False

    def stop(self) -> None:
        """The batch being stored finishes (or its retry stops); queued messages stay unacknowledged."""
        self._stopping = True
        self._stop_event.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()

    # --- health ---

    @property
    def backlog(self) -> int:
        """Messages received and not yet stored (queued, plus the batch in the worker)."""
        return self._queue.qsize() + self._in_batch

    def oldest_unstored_s(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        oldest = self._busy_since
        with self._queue.mutex:
            head = self._queue.queue[0].received if self._queue.queue else None
        times = [t for t in (oldest, head) if t is not None]
        return max(0.0, now - min(times)) if times else 0.0

    # --- paho callbacks (network thread): queue and return ---

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect to %s:%d refused: %s", self.host, self.port, reason)
            return
        log.info(
            "MQTT connected to %s:%d as %s (session present: %s); subscribing to %s",
            self.host,
            self.port,
            self.client_id,
            flags.session_present,
            ", ".join(self.topics),
        )
        self.connected.set()
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if any(getattr(c, "is_failure", False) for c in codes):
            log.error("MQTT subscription refused: %s", codes)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if was:
            self.disconnects += 1
        if not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers should refuse these; never let one stop the network thread
            topic = "<topic is not UTF-8>"
        counters = self.ingestor.counters
        counters.inc("deliveries")
        if msg.dup:
            counters.inc("redelivered")
        with self._mids_lock:
            if msg.dup and msg.mid in self._pending_mids:
                counters.inc("resend_skipped")
                return  # the broker's resend (after a reconnect) of a message still queued here: acked once stored
            try:
                self._queue.put_nowait(_Message(topic, msg.payload, msg.mid, msg.qos, time.time()))
                self._pending_mids.add(msg.mid)
                self._refused_mids.discard(msg.mid)
                return
            except queue.Full:
                # Its packet id stays the same until we acknowledge it: a refused message is counted once here.
                first_refusal = msg.mid not in self._refused_mids
                self._refused_mids.add(msg.mid)
        # Flow control: neither queued nor acknowledged. The broker keeps it for our persistent session.
        counters.inc("flow_refused")
        if first_refusal:
            counters.inc("flow_refused_messages")
        if not self._refused.is_set():
            log.warning("ingest queue full (%d): refusing new messages until it drains", self._queue.maxsize)
        self._refused.set()

    # --- the worker ---

    def _take(self) -> list[_Message]:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_s
        while len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _work(self) -> None:
        while not self._stopping:
            try:
                if self._refused.is_set() and self._queue.qsize() <= self._queue.maxsize // 2:
                    self._redeliver_refused()
                batch = self._take()
                if batch:
                    self._process(batch)
            except Exception:  # the worker must outlive any one failure
                log.exception("ingest worker error")
                self._stop_event.wait(1.0)

    def _process(self, batch: list[_Message]) -> None:
        self._busy_since = min(m.received for m in batch)
        self._in_batch = len(batch)
        try:
            outcomes = self.ingestor.handle_batch(
                [(m.topic, m.payload) for m in batch], forever=True, stop=self._stop_event
            )
        finally:
            self._busy_since = None
            self._in_batch = 0
        with self._mids_lock:  # before the PUBACK: the broker may reuse a packet id as soon as it has it
            self._pending_mids.difference_update(m.mid for m, o in zip(batch, outcomes, strict=True) if o.ack)
        for m, outcome in zip(batch, outcomes, strict=True):
            if outcome.ack:
                self.client.ack(m.mid, m.qos)
        if self.app_acks:
            self._send_acks(outcomes)

    def _send_acks(self, outcomes: list[Outcome]) -> None:
        stored: dict[tuple[str, str], list[str]] = defaultdict(list)
        rejected: dict[tuple[str, str], list[str]] = defaultdict(list)
        for o in outcomes:
            if not (o.site and o.observation_id and o.ack):
                continue
            (stored if o.kind in ("stored", "duplicate") else rejected)[(o.site, o.device)].append(o.observation_id)
        for key in stored.keys() | rejected.keys():
            s_ids, r_ids = stored.get(key, []), rejected.get(key, [])
            for i in range(0, max(len(s_ids), len(r_ids)), MAX_ACK_IDS):
                ack = DeliveryAck(
                    site=key[0],
                    device=key[1],
                    ts=time.time(),
                    stored=tuple(s_ids[i : i + MAX_ACK_IDS]),
                    rejected=tuple(r_ids[i : i + MAX_ACK_IDS]),
                )
                # QoS 1; paho keeps it across a reconnect. A lost ack only means a resend, acknowledged again.
                self.client.publish(acks_topic(*key), encode(ack), qos=1)
                self.ingestor.counters.inc("acks_sent")

    def _redeliver_refused(self) -> None:
        """Refused messages sit unacknowledged at the broker: reconnecting makes it send them again."""
        self._refused.clear()
        sock = self.client.socket()
        log.warning("ingest queue has room again: reconnecting to receive the refused messages")
        # Let paho's network thread write the PUBACKs already queued: one lost with the connection makes the broker
        # send that message again (stored once all the same, but counted twice).
        self._stop_event.wait(1.0)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # paho sees the connection drop and reconnects (session kept)

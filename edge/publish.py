"""Publishing that loses nothing: observations go to the disk spool first, then to MQTT (QoS 1, persistent
session), and leave the spool only once delivered.

Delivery (broker.delivery): "stored" (default) — an observation stays in the spool until central confirms it
committed it: central publishes `DeliveryAck`s (batched observation ids) to revisit/v1/<site>/<device>/acks, which
this client subscribes to; a PUBACK only moves it to "unconfirmed", and an unconfirmed one is sent again after
broker.confirm_timeout_s (doubling up to confirm_backoff_max_s). A broker that acknowledges and forgets (amqtt in
memory, Mosquitto without persistence or past its queue limit) or a central killed mid-batch therefore loses
nothing. "broker" — the spool row goes on the broker's PUBACK (for a central without acknowledgements); in
"stored" mode against such a central the spool grows, and a warning (and the metrics' unconfirmed depth and age)
says so every broker.unconfirmed_warn_s.

Threads: paho's network thread (`loop_start`: reads, writes, reconnects with exponential backoff) and one sender
thread that owns the in-flight window (mid → spool seq), the unconfirmed set (seq → resend deadline), reads the
spool in seq order after a cursor, deletes delivered rows and sends the heartbeat. Callbacks only hand events to
the sender: paho calls `on_publish` while holding its own message lock, so touching our state (or SQLite) there
would risk a lock-order deadlock.

Within one process, paho resends its un-acknowledged messages after a reconnect (DUP flag), so the cursor carries
on; a new process starts its cursor at 0 and so replays the whole spool in order. Either way an observation can
arrive twice, never zero times: the central service is idempotent on `observation_id` (and confirms a duplicate).
"""

from __future__ import annotations

import collections
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from revisit import __version__
from revisit.edge.config import BrokerConfig, EdgeConfig
from revisit.edge.spool import Spool
from revisit.shared.backoff import backoff
from revisit.shared.logfmt import event
from revisit.shared.schema import (
    DeliveryAck,
    DeviceStatus,
    Observation,
    SchemaError,
    acks_topic,
    decode,
    encode,
    faces_topic,
    status_topic,
)

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.sqlite"
MAX_STATS = 256  # DeviceStatus.stats holds at most this many entries


@dataclass
class PublisherStats:
    published: int = 0  # observation sends handed to paho (a replay after a restart counts again)
    acked: int = 0  # PUBACKs for observations
    confirmed: int = 0  # observations central confirmed stored (delivery = "stored")
    rejected_by_central: int = 0  # observations central refused for good (invalid): deleted, counted, logged
    resent: int = 0  # unconfirmed observations sent again after their timeout
    bad_acks: int = 0  # acknowledgements that did not follow the schema (or named another device)
    unconfirmed: int = 0  # PUBACKed, waiting for central's confirmation
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    unspooled: int = 0  # observations the spool could not store, sent from memory only
    connected: bool = False
    inflight: int = 0
    # Origin (the frame that completed the observation, else publish()) to PUBACK ("broker") or to central's
    # confirmation ("stored"), milliseconds.
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2048))


class Publisher:
    def __init__(
        self,
        broker: BrokerConfig,
        site: str,
        device: str,
        spool: Spool,
        stats_fn: Callable[[], dict[str, float]] | None = None,
    ):
        self.broker = broker
        self.site, self.device = site, device
        self.spool = spool
        self.stats_fn = stats_fn
        self.stats = PublisherStats()
        self.faces_topic = faces_topic(site, device)
        self.status_topic = status_topic(site, device)
        self.acks_topic = acks_topic(site, device)
        self.stored_mode = broker.delivery == "stored"
        self.client_id = broker.client_id or f"revisit-edge-{site}-{device}"

        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._confirms: queue.SimpleQueue[bytes] = queue.SimpleQueue()  # DeliveryAck payloads
        self._unconfirmed: dict[int, float] = {}  # spool seq → monotonic resend deadline; sender thread only
        self._attempts: dict[int, int] = {}  # spool seq → times sent; sender thread only
        self._next_warn = 0.0
        self._next_resend_scan = 0.0
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._stop_sender = threading.Event()
        self._status_due = threading.Event()
        self._inflight: dict[int, int] = {}  # paho mid → spool seq; sender thread only
        self._cursor = 0  # highest seq handed to paho; sender thread only
        self._origin: collections.OrderedDict[int, float] = collections.OrderedDict()  # seq → origin ts
        self._origin_lock = threading.Lock()
        self._sender: threading.Thread | None = None
        self.client = self._make_client()

    @classmethod
    def from_config(cls, config: EdgeConfig, stats_fn: Callable[[], dict[str, float]] | None = None) -> Publisher:
        spool = Spool(Path(config.state_dir) / SPOOL_FILE, int(config.spool.max_mb * 1024 * 1024))
        return cls(config.broker, config.site, config.device, spool, stats_fn)

    # -- set-up ------------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        b = self.broker
        v5 = b.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # v3.1.1: a persistent session, so the broker keeps our un-acked state across reconnects.
            clean_session=None if v5 else False,
        )
        if b.username is not None:
            client.username_pw_set(b.username, b.password.get_secret_value() if b.password else None)
        if b.tls is not None:
            insecure = b.tls.insecure_skip_verify
            client.tls_set(
                ca_certs=str(b.tls.ca),
                certfile=str(b.tls.cert) if b.tls.cert else None,
                keyfile=str(b.tls.key) if b.tls.key else None,
                cert_reqs=ssl.CERT_NONE if insecure else ssl.CERT_REQUIRED,
            )
            if insecure:
                client.tls_insecure_set(True)
                log.warning(event("tls_insecure", detail="broker certificate NOT verified (insecure_skip_verify)"))
        # Our window is the bound; paho's must not queue behind it (+2 for status messages).
        client.max_inflight_messages_set(b.max_inflight + 2)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=b.reconnect_max_s)
        client.will_set(self.status_topic, self._status_payload("offline", with_stats=False), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        b = self.broker
        log.info(
            event(
                "mqtt_start",
                host=b.host,
                port=b.port,
                client_id=self.client_id,
                protocol=b.protocol,
                tls=b.tls is not None,
                username=b.username,
                delivery=b.delivery,
                spool_depth=self.spool.stats.depth,
            )
        )
        kwargs: dict = {}
        if b.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 7 * 24 * 3600  # keep the session a week across disconnects
            kwargs = {"clean_start": False, "properties": props}
        self.client.connect_async(b.host, b.port, keepalive=b.keepalive_s, **kwargs)
        self.client.loop_start()
        self._sender = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._sender.start()

    # -- API ---------------------------------------------------------------------------------------------------

    def publish(self, obs: Observation, origin_ts: float | None = None) -> int | None:
        """Spool `obs` (committed) and let the sender send it; the spool seq, or None if it could not be spooled."""
        payload = encode(obs)
        seq = self.spool.put(obs.observation_id, payload)
        if seq is None:
            # Never drop it silently: send from memory (paho queues it while disconnected), but it will not
            # survive a restart.
            self.stats.unspooled += 1
            self.client.publish(self.faces_topic, payload, qos=1)
            return None
        with self._origin_lock:
            self._origin[seq] = time.time() if origin_ts is None else origin_ts
            while len(self._origin) > 100_000:
                self._origin.popitem(last=False)
        self._wake.set()
        return seq

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def counters(self) -> dict[str, float]:
        s, sp = self.stats, self.spool.stats
        return {
            "published": s.published,
            "acked": s.acked,
            "connects": s.connects,
            "disconnects": s.disconnects,
            "connect_failures": s.connect_failures,
            "unspooled": s.unspooled,
            "connected": float(s.connected),
            "inflight": s.inflight,
            "spool_depth": sp.depth,
            "spool_bytes": sp.bytes,
            "spool_dropped": sp.dropped,
            "spool_disk_full": sp.disk_full,
            "spool_errors": sp.errors + sp.rejected,
            "delivery_stored": float(self.stored_mode),
            "confirmed": s.confirmed,
            "rejected_by_central": s.rejected_by_central,
            "resent": s.resent,
            "bad_acks": s.bad_acks,
            "unconfirmed": s.unconfirmed,
            # In "stored" mode everything in the spool is unconfirmed: its depth and its oldest row's age.
            "spool_oldest_s": round(self.spool.oldest_age_s(), 3) if sp.depth else 0.0,
        }

    def wait_confirmed(self, timeout: float) -> bool:
        """Wait until the spool is empty: every observation delivered (confirmed stored, in "stored" mode)."""
        deadline = time.monotonic() + timeout
        while self.spool.stats.depth > 0 or self.stats.inflight > 0:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def stop(self, drain_s: float = 5.0) -> None:
        """Wait up to `drain_s` for acks while connected, publish `offline` (retained), disconnect, close."""
        if self._sender is None:
            self.spool.close()
            return
        if self.connected:
            self.wait_confirmed(drain_s)
        drained = self.spool.stats.depth == 0
        # The sender goes first, so no heartbeat can overwrite the retained `offline` below.
        self._stop_sender.set()
        self._wake.set()
        self._sender.join(timeout=5)
        if self.connected:
            info = self.client.publish(self.status_topic, self._status_payload("offline"), qos=1, retain=True)
            deadline = time.monotonic() + 2.0
            while not info.is_published() and self.connected and time.monotonic() < deadline:
                time.sleep(0.01)
        self._drain_acks()
        self._drain_confirms()
        self.client.disconnect()  # a clean DISCONNECT: the broker discards the last will
        self.client.loop_stop()
        log.info(
            event(
                "mqtt_stopped",
                drained=drained,
                spool_depth=self.spool.stats.depth,
                published=self.stats.published,
                acked=self.stats.acked,
            )
        )
        self.spool.close()
        self._sender = None

    # -- paho callbacks (network thread): hand over, never block -----------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.stats.connect_failures += 1
            log.error(
                event("mqtt_connect_refused", host=self.broker.host, port=self.broker.port, reason=str(reason_code))
            )
            return
        self.stats.connects += 1
        self.stats.connected = True
        if self.stored_mode:  # central's confirmations (queued by the broker for our session while away)
            client.subscribe(self.acks_topic, qos=1)
        self._connected.set()
        self._status_due.set()
        self._wake.set()
        log.info(
            event(
                "mqtt_connected",
                host=self.broker.host,
                port=self.broker.port,
                session_present=flags.session_present,
                spool_depth=self.spool.stats.depth,
            )
        )

    def _on_connect_fail(self, client, userdata) -> None:
        self.stats.connect_failures += 1
        log.warning(
            event(
                "mqtt_connect_failed",
                host=self.broker.host,
                port=self.broker.port,
                spool_depth=self.spool.stats.depth,
                retry="backoff",
            )
        )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.stats.connected = False
        if was:
            self.stats.disconnects += 1
            level = logging.INFO if self._stop_sender.is_set() else logging.WARNING  # ours, or lost
            log.log(
                level,
                event(
                    "mqtt_disconnected",
                    reason=str(reason_code),
                    inflight=self.stats.inflight,
                    spool_depth=self.spool.stats.depth,
                ),
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put(mid)
        self._wake.set()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.acks_topic:
            self._confirms.put(bytes(msg.payload))
            self._wake.set()

    # -- sender thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_heartbeat = 0.0
        while not self._stop_sender.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            try:
                self._drain_acks()
                self._drain_confirms()
                if self.stored_mode:
                    self._warn_unconfirmed()
                if not self._connected.is_set():
                    continue
                if self.stored_mode:
                    self._resend_due()
                self._fill_window()
                now = time.monotonic()
                if self._status_due.is_set() or now >= next_heartbeat:
                    self._status_due.clear()
                    self.client.publish(self.status_topic, self._status_payload("online"), qos=1, retain=True)
                    next_heartbeat = now + self.broker.heartbeat_s
            except Exception:  # the sender must outlive any one failure; the next wake retries
                log.exception(event("mqtt_sender_error"))
                time.sleep(0.5)

    def _drain_acks(self) -> None:
        seqs: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                seqs.append(seq)
        self.stats.inflight = len(self._inflight)
        if not seqs:
            return
        self.stats.acked += len(seqs)
        if self.stored_mode:  # PUBACKed: kept until central confirms, sent again if it does not in time
            now_m = time.monotonic()
            for seq in seqs:
                n = self._attempts.get(seq, 1)
                timeout = backoff(n - 1, self.broker.confirm_timeout_s, self.broker.confirm_backoff_max_s)
                self._unconfirmed[seq] = now_m + timeout
            self.stats.unconfirmed = len(self._unconfirmed)
            return
        self.spool.ack(seqs)
        self._record_latency(seqs)

    def _record_latency(self, seqs: list[int]) -> None:
        now = time.time()
        with self._origin_lock:
            for seq in seqs:
                origin = self._origin.pop(seq, None)
                if origin is not None:
                    self.stats.latency_ms.append((now - origin) * 1000.0)

    def _drain_confirms(self) -> None:
        """Delete what central confirmed (or rejected for good) from the spool."""
        stored: list[str] = []
        rejected: list[str] = []
        while True:
            try:
                payload = self._confirms.get_nowait()
            except queue.Empty:
                break
            try:
                ack: DeliveryAck = decode(payload, DeliveryAck)
            except SchemaError as exc:
                self.stats.bad_acks += 1
                log.warning(event("bad_ack", reason=exc.reason, detail=exc.detail[:200]))
                continue
            if (ack.site, ack.device) != (self.site, self.device):
                self.stats.bad_acks += 1
                log.warning(event("bad_ack", reason="another_device", site=ack.site, device=ack.device))
                continue
            stored += ack.stored
            rejected += ack.rejected
        if not stored and not rejected:
            return
        done = self.spool.confirm(stored) if stored else []
        gone = self.spool.confirm(rejected) if rejected else []
        if gone:
            self.stats.rejected_by_central += len(gone)
            detail = "invalid for central: deleted from the spool; see central's rejected metrics"
            log.warning(
                event(
                    "rejected_by_central", observations=len(gone), total=self.stats.rejected_by_central, detail=detail
                )
            )
        for seq in done + gone:
            self._unconfirmed.pop(seq, None)
            self._attempts.pop(seq, None)
        self.stats.confirmed += len(done)
        self.stats.unconfirmed = len(self._unconfirmed)
        self._record_latency(done)

    def _resend_due(self) -> None:
        """Send again the PUBACKed observations central has not confirmed in time (oldest first, within the window)."""
        now = time.monotonic()
        room = self.broker.max_inflight - len(self._inflight)
        if room <= 0 or not self._unconfirmed or now < self._next_resend_scan:
            return
        due = sorted(seq for seq, deadline in self._unconfirmed.items() if deadline <= now)
        if len(due) <= room:  # all due ones go now: the next scan can wait (it costs a pass over the set)
            self._next_resend_scan = now + 0.5
        due = due[:room]
        if not due:
            return
        rows = dict(self.spool.get(due))
        for seq in due:
            payload = rows.get(seq)
            if payload is None:  # confirmed meanwhile (or dropped by the spool bound)
                self._unconfirmed.pop(seq, None)
                self._attempts.pop(seq, None)
                continue
            info = self.client.publish(self.faces_topic, payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning(event("mqtt_publish_error", seq=seq, error=mqtt.error_string(info.rc)))
                break
            del self._unconfirmed[seq]
            self._attempts[seq] = self._attempts.get(seq, 1) + 1
            self._inflight[info.mid] = seq
            self.stats.resent += 1
        self.stats.unconfirmed = len(self._unconfirmed)
        self.stats.inflight = len(self._inflight)

    def _warn_unconfirmed(self) -> None:
        now = time.monotonic()
        if now < self._next_warn or not self._unconfirmed:
            return
        self._next_warn = now + self.broker.unconfirmed_warn_s
        age = self.spool.oldest_age_s()
        if age >= self.broker.unconfirmed_warn_s:
            detail = (
                "central has not confirmed them: is it down, or older than delivery acknowledgements "
                '(then set broker.delivery = "broker")?'
            )
            log.warning(
                event(
                    "unconfirmed_observations",
                    count=len(self._unconfirmed),
                    spool_depth=self.spool.stats.depth,
                    oldest_s=round(age),
                    resent=self.stats.resent,
                    detail=detail,
                )
            )

    def _fill_window(self) -> None:
        while self._connected.is_set():
            room = self.broker.max_inflight - len(self._inflight)
            if room <= 0:
                return
            rows = self.spool.pending(after=self._cursor, limit=room)
            if not rows:
                return
            for seq, payload in rows:
                info = self.client.publish(self.faces_topic, payload, qos=1)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    # NO_CONN: paho keeps it and sends it after the reconnect; anything else: retry later.
                    log.warning(event("mqtt_publish_error", seq=seq, error=mqtt.error_string(info.rc)))
                    return
                self._inflight[info.mid] = seq
                self._cursor = seq
                self.stats.published += 1
            self.stats.inflight = len(self._inflight)

    def _status_payload(self, state: str, with_stats: bool = True) -> bytes:
        stats: dict[str, float] = {}
        if with_stats:
            stats = {k: float(v) for k, v in self.counters().items()}
            if self.stats_fn is not None:
                try:
                    extra = self.stats_fn()
                except Exception:
                    log.exception(event("status_stats_error"))
                    extra = {}
                for k, v in extra.items():
                    if len(stats) >= MAX_STATS:
                        break
                    if len(k) <= 64 and v == v and abs(v) != float("inf"):
                        stats[k] = float(v)
        status = DeviceStatus(
            site=self.site, device=self.device, state=state, ts=time.time(), version=__version__, stats=stats
        )
        return encode(status)

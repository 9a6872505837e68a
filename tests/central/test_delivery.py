"""End-to-end delivery with the real parts: the edge publisher ("stored" delivery) and the central service as a
subprocess on the embedded amqtt broker or Mosquitto, `kill -9` mid-burst, a store outage (file-size limit),
a full ingest queue, two central instances on one broker. Each asserts nothing lost and nothing stored twice."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlmodel import func, select

from revisit.central.config import CentralConfig
from revisit.central.service import CentralService
from revisit.central.store import Device, Sighting, Store
from revisit.edge.config import BrokerConfig
from revisit.edge.publish import Publisher
from revisit.edge.spool import Spool
from tests.central.conftest import DIM, REC, make_obs, near, people, wait_for
from tests.mosquitto import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").is_file(), reason="mosquitto not installed")


def observations(n: int, seed: int = 0, ts: float | None = None) -> list:
    """n observations of n // 10 + 1 people, timed in the last hour (no clock-skew stamping)."""
    faces = people(n // 10 + 1, seed=seed)
    start = (ts or time.time()) - 3600
    return [make_obs(near(faces[i % len(faces)], seed=seed * 10_000 + i), ts=start + 5 * i, track=i) for i in range(n)]


def edge(port: int, state: Path, **broker) -> Publisher:
    config = BrokerConfig(
        host="127.0.0.1",
        port=port,
        reconnect_max_s=1,
        heartbeat_s=1,
        confirm_timeout_s=2,
        confirm_backoff_max_s=4,
        **broker,
    )
    pub = Publisher(config, "s1", "d1", Spool(state / "spool.sqlite", 200_000_000))
    pub.start()
    return pub


class Central:
    """`revisit central run` in a subprocess; its output through a pipe (so a file-size limit never hits it)."""

    def __init__(self, tmp: Path, broker_port: int | None, embedded_port: int | None = None, **ingest):
        self.data = tmp / "central"
        self.web_port = free_port()
        self.config = tmp / "central.toml"
        broker = (
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\nkeepalive_s = 5\n'
            if broker_port
            else f"[embedded_broker]\nport = {embedded_port}\n"
        )
        extra = "".join(f"{k} = {v}\n" for k, v in ingest.items())
        self.config.write_text(
            f'data_dir = "{self.data}"\n{broker}[web]\nport = {self.web_port}\n'
            f'[ingest]\n{extra}[ingest.recognizers]\n"{REC}" = {DIM}\n'
        )
        self.log = tmp / "central.log"
        self.proc: subprocess.Popen | None = None
        self.store = Store(f"sqlite:///{self.data / 'revisit.db'}")

    def start(self) -> Central:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "revisit.cli", "central", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        proc, log = self.proc, self.log

        def copy() -> None:
            with log.open("ab") as out:
                for line in iter(proc.stdout.readline, b""):  # type: ignore[union-attr]
                    out.write(line)
                    out.flush()

        threading.Thread(target=copy, daemon=True).start()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.store.dispose()

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def count(self, model=Sighting) -> int:
        try:
            with self.store.session() as s:
                return int(s.exec(select(func.count()).select_from(model)).one())
        except Exception:  # not created yet
            return 0

    def stored_ids(self) -> list[str]:
        with self.store.session() as s:
            return [str(x) for x in s.exec(select(Sighting.observation_id))]


def _no_mosquitto_persistence(broker: Mosquitto) -> None:
    broker.config.write_text(broker.config.read_text().replace("persistence true\n", "persistence false\n"))


@pytest.mark.slow
@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto", "mosquitto-no-persistence"])
def test_kill9_central_mid_burst_loses_and_duplicates_nothing(tmp_path, broker_kind):
    """500 observations; central killed with SIGKILL mid-ingest (on the embedded broker the broker dies with it;
    without persistence Mosquitto is restarted too, forgetting its queue): after the restart every observation
    is stored exactly once, because the edge resends what central never confirmed."""
    mosq = None
    if broker_kind == "embedded":
        port = free_port()
        central = Central(tmp_path, None, embedded_port=port)
    else:
        mosq = Mosquitto(tmp_path / "mosquitto")
        if broker_kind == "mosquitto-no-persistence":
            _no_mosquitto_persistence(mosq)
        mosq.start()
        port = mosq.port
        central = Central(tmp_path, port)
    central.start()
    pub = None
    try:
        pub = edge(port, tmp_path / "edge")
        wait_for(
            lambda: central.count(Device) == 1, timeout=60, interval=0.2, what=f"central subscribed; {central.log}"
        )
        sent = observations(500, seed=3)
        for obs in sent:
            pub.publish(obs)
        wait_for(lambda: central.count() >= 30, timeout=60, interval=0.01, what="ingest to begin")
        central.kill()
        at_kill = central.count()
        assert at_kill < 500, "too fast to kill mid-ingest"
        if broker_kind == "mosquitto-no-persistence":
            mosq.stop()
            mosq.start()
        central.start()
        wait_for(
            lambda: pub.spool.stats.depth == 0,
            timeout=180,
            interval=0.2,
            what=f"every observation confirmed (at kill {at_kill} stored); {central.log}",
        )
        ids = central.stored_ids()
        assert len(ids) == len(set(ids)) == 500  # the column is unique too
        assert set(ids) == {o.observation_id for o in sent}
        assert pub.stats.confirmed >= 500 - at_kill
        if broker_kind != "mosquitto":
            assert pub.stats.resent > 0  # the broker forgot what it had acknowledged: the edge sent it again
    finally:
        if pub is not None:
            pub.stop(drain_s=0)
        central.stop()
        if mosq is not None:
            mosq.stop()


def _fsize_limit(pid: int, limit: int | None) -> None:
    """The soft limit only: it can be raised again without privileges."""
    soft = resource.RLIM_INFINITY if limit is None else limit
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]))


@pytest.mark.slow
@pytest.mark.parametrize("broker_kind", ["embedded", "mosquitto"])
def test_store_outage_keeps_the_session_and_loses_nothing(tmp_path, broker_kind):
    """The database cannot grow (a file-size limit on central: 'database or disk is full'): /healthz is 503 and
    shows the backlog, the MQTT session stays up (no disconnect, keepalive 5 s), nothing is confirmed; when the
    limit goes, all 300 observations are stored once and confirmed."""
    mosq = None
    if broker_kind == "embedded":
        port = free_port()
        central = Central(tmp_path, None, embedded_port=port)
    else:
        mosq = Mosquitto(tmp_path / "mosquitto").start()
        port = mosq.port
        central = Central(tmp_path, port)
    central.start()
    pub = None
    try:
        pub = edge(port, tmp_path / "edge")
        wait_for(
            lambda: central.count(Device) == 1, timeout=60, interval=0.2, what=f"central subscribed; {central.log}"
        )
        before = observations(20, seed=1)
        for obs in before:
            pub.publish(obs)
        wait_for(lambda: pub.spool.stats.depth == 0, timeout=60, what="the first ones confirmed")
        assert central.health()[0] == 200
        assert central.proc is not None
        _fsize_limit(central.proc.pid, 4096)  # every database (WAL) write past 4 KiB fails with EFBIG
        during = observations(300, seed=2)
        for obs in during:
            pub.publish(obs)
        status, health = wait_for(
            lambda: (lambda h: h if h[0] == 503 else None)(central.health()),
            timeout=60,
            interval=0.3,
            what="/healthz 503 while storing fails",
        )
        assert health["ingest"]["store_ok"] is False and health["ingest"]["store_errors"] > 0
        assert health["ingest"]["backlog"] > 0 and health["ingest"]["oldest_unstored_s"] > 0
        time.sleep(12)  # > 1.5 x keepalive: a blocked network thread would have been dropped by the broker
        status, health = central.health()
        assert status == 503 and health["mqtt_connected"] and health["ingest"]["mqtt_disconnects"] == 0
        assert pub.stats.confirmed == len(before)  # nothing confirmed that was not stored
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{central.web_port}/metrics", timeout=5).read().decode()
        assert "revisit_central_store_ok 0.0" in metrics and "revisit_central_ingest_backlog" in metrics
        _fsize_limit(central.proc.pid, None)
        wait_for(lambda: pub.spool.stats.depth == 0, timeout=180, interval=0.2, what=f"all confirmed; {central.log}")
        ids = central.stored_ids()
        assert len(ids) == len(set(ids)) == 320
        assert set(ids) == {o.observation_id for o in before + during}
        wait_for(lambda: central.health()[0] == 200, timeout=30, what="healthy again")
        assert "MQTT disconnected" not in central.log.read_text()
    finally:
        if pub is not None:
            pub.stop(drain_s=0)
        central.stop()
        if mosq is not None:
            mosq.stop()


def _service(tmp: Path, port: int, **kw) -> CentralService:
    data = {
        "data_dir": str(tmp),
        "broker": {"host": "127.0.0.1", "port": port},
        "ingest": {"recognizers": {REC: DIM}} | kw.pop("ingest", {}),
    } | kw
    return CentralService(CentralConfig.model_validate(data))


def test_full_queue_applies_back_pressure_without_loss(tmp_path, mosquitto):
    """A queue of 8 against a broker that sends without limit: messages are refused (never queued nor
    acknowledged), redelivered after the queue drains, and each is stored once. The broker resends every
    unacknowledged message on each reconnect, so one message arrives many times: each counter counts what its name
    says (deliveries, refusals, distinct refused messages, outcomes), and they add up."""
    with _service(tmp_path / "c", mosquitto.port, ingest={"queue_size": 8, "batch_size": 4}) as service:
        assert service.mqtt.subscribed.wait(10)
        mqtt = service.mqtt
        pub = edge(mosquitto.port, tmp_path / "edge", max_inflight=200)
        try:
            sent = observations(300, seed=4)
            for obs in sent:
                pub.publish(obs)
            assert pub.wait_confirmed(180), f"spool depth {pub.spool.stats.depth}"
        finally:
            pub.stop(drain_s=0)
        with service.session() as s:
            ids = [str(x) for x in s.exec(select(Sighting.observation_id))]
        assert len(ids) == len(set(ids)) == 300 and set(ids) == {o.observation_id for o in sent}
        assert service.counters.get("flow_refused") > 0  # the queue did fill: flow control happened
        assert service.counters.get("stored") == 300
    c = service.counters.snapshot()  # stopped: no more deliveries; what is still queued stays unhandled
    outcomes = sum(n for k, n in c.items() if k in ("stored", "duplicate", "status", "error", "dead_letters"))
    outcomes += sum(n for k, n in c.items() if k.startswith("rejected."))
    unhandled = mqtt._queue.qsize()
    print(f"\ncounters {dict(sorted(c.items()))}, edge resent {pub.stats.resent}, still queued {unhandled}")
    assert c["deliveries"] == outcomes + c["flow_refused"] + c.get("resend_skipped", 0) + unhandled
    assert c["redelivered"] <= c["deliveries"]
    assert 0 < c["flow_refused_messages"] <= c["flow_refused"]  # each reconnect resends every refused one


def test_two_instances_on_one_broker_never_fight(tmp_path, mosquitto, postgres_url):
    """Two workers on one database and one broker, default client ids (host + data dir): both stay connected,
    and every observation is stored once (each worker sees it; the second finds it stored)."""
    from sqlmodel import SQLModel

    url = postgres_url
    a = _service(tmp_path / "a", mosquitto.port, database_url=url)
    b = _service(tmp_path / "b", mosquitto.port, database_url=url)
    assert a.config.mqtt_client_id != b.config.mqtt_client_id
    with a, b:
        assert a.mqtt.subscribed.wait(10) and b.mqtt.subscribed.wait(10)
        pub = edge(mosquitto.port, tmp_path / "edge")
        try:
            sent = observations(100, seed=5)
            for obs in sent:
                pub.publish(obs)
            assert pub.wait_confirmed(120)
            # each worker sees every message (resends after the 2 s confirm timeout count again)
            wait_for(
                lambda: (
                    a.counters.get("stored") + a.counters.get("duplicate") >= 100
                    and b.counters.get("stored") + b.counters.get("duplicate") >= 100
                ),
                timeout=60,
                what="both workers done",
            )
        finally:
            pub.stop(drain_s=0)
        assert a.mqtt.disconnects == 0 and b.mqtt.disconnects == 0
        assert a.counters.get("stored") + b.counters.get("stored") == 100
        with a.session() as s:
            ids = [str(x) for x in s.exec(select(Sighting.observation_id))]
        assert len(ids) == 100 and set(ids) == {o.observation_id for o in sent}
    store = Store(url)
    with store.engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(table.delete())
    store.dispose()


def test_client_id_is_unique_per_host_and_data_dir(tmp_path):
    one = CentralConfig(data_dir=tmp_path / "one")
    two = CentralConfig(data_dir=tmp_path / "two")
    assert one.mqtt_client_id != two.mqtt_client_id
    assert one.mqtt_client_id == CentralConfig(data_dir=tmp_path / "one").mqtt_client_id  # stable across restarts
    assert CentralConfig(data_dir=tmp_path, instance="w2").mqtt_client_id == "revisit-central-w2"
    named = CentralConfig.model_validate({"data_dir": str(tmp_path), "broker": {"client_id": "mine"}})
    assert named.mqtt_client_id == "mine"


class PrivatePostgres:
    """A PostgreSQL server of this test alone (initdb + pg_ctl as user postgres, a free port), to stop at will."""

    def __init__(self) -> None:
        import glob
        import shutil
        import tempfile

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins or shutil.which("runuser") is None:
            pytest.skip("PostgreSQL server binaries (pg_ctl) or runuser not installed")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="revisit-pg-"))
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        import shutil

        with __import__("contextlib").suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_outage_keeps_the_session_and_loses_nothing(tmp_path, mosquitto):
    """The database server stops while observations arrive: /healthz's store_ok turns false, MQTT stays
    connected, nothing is confirmed meanwhile; after PostgreSQL is back every observation is stored once."""
    pg = PrivatePostgres()
    pg.start()
    try:
        service = _service(
            tmp_path / "c",
            mosquitto.port,
            database_url=pg.url,
            broker={"host": "127.0.0.1", "port": mosquitto.port, "keepalive_s": 5},
        )
        with service:
            assert service.mqtt.subscribed.wait(10)
            pub = edge(mosquitto.port, tmp_path / "edge")
            try:
                before = observations(30, seed=6)
                for obs in before:
                    pub.publish(obs)
                assert pub.wait_confirmed(60)
                pg.stop()
                during = observations(100, seed=7)
                for obs in during:
                    pub.publish(obs)
                wait_for(lambda: not service.health()["ingest"]["store_ok"], timeout=60, what="store_ok false")
                time.sleep(10)  # > 1.5 x keepalive
                health = service.health()
                assert not health["ingest"]["store_ok"] and health["ingest"]["backlog"] > 0
                assert service.mqtt.connected.is_set() and service.mqtt.disconnects == 0
                assert pub.stats.confirmed == len(before)
                pg.start()
                assert pub.wait_confirmed(180), f"spool depth {pub.spool.stats.depth}"
                assert service.health()["ingest"]["store_ok"] and service.mqtt.disconnects == 0
            finally:
                pub.stop(drain_s=0)
            with service.session() as s:
                ids = [str(x) for x in s.exec(select(Sighting.observation_id))]
            assert len(ids) == len(set(ids)) == 130 and set(ids) == {o.observation_id for o in before + during}
    finally:
        pg.remove()

"""The publisher against a real Mosquitto: delivery, broker outage, kill -9 replay, status and last will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from revisit.edge.config import BrokerConfig
from revisit.edge.publish import Publisher
from revisit.edge.spool import Spool
from revisit.shared.schema import DeviceStatus, decode, faces_topic, status_topic
from tests.edge.conftest_transport import fake_observation, wait_drained
from tests.mosquitto import Subscriber, free_port

REPO = Path(__file__).resolve().parents[2]
SITE, DEVICE = "s1", "d1"


def make_publisher(port: int, state: Path, **broker) -> Publisher:
    """The transport tests: no central here, so the spool is emptied by PUBACKs (tests/central test "stored")."""
    broker = {"delivery": "broker"} | broker
    config = BrokerConfig(host="127.0.0.1", port=port, reconnect_max_s=2, heartbeat_s=1, **broker)
    return Publisher(config, SITE, DEVICE, Spool(state / "spool.sqlite", 50_000_000))


def unique_ids(sub: Subscriber) -> set[str]:
    return {decode(p).observation_id for p in sub.payloads("/faces")}


def test_publish_delivers_valid_observations(mosquitto, mqtt_subscriber, tmp_path):
    sub = mqtt_subscriber(f"revisit/v1/{SITE}/{DEVICE}/#")
    pub = make_publisher(mosquitto.port, tmp_path)
    pub.start()
    sent = [fake_observation(i) for i in range(30)]
    for obs in sent:
        pub.publish(obs)
    assert sub.wait_for(lambda msgs: len([m for m in msgs if m.topic.endswith("/faces")]) >= 30, 15)
    got = [decode(p) for p in sub.payloads("/faces")]
    assert [o.observation_id for o in got] == [o.observation_id for o in sent]  # in order
    assert got[0].vector().shape == (512,)
    assert wait_drained(pub, 5) and pub.spool.stats.depth == 0
    assert pub.stats.acked == 30
    assert pub.client_id == f"revisit-edge-{SITE}-{DEVICE}"
    # The retained status says online (with stats); a clean stop replaces it with offline.
    assert sub.wait_for(lambda msgs: any(m.topic.endswith("/status") for m in msgs), 5)
    online = decode(sub.payloads("/status")[0], DeviceStatus)
    assert online.state == "online" and "spool_depth" in online.stats
    pub.stop()
    late = Subscriber(mosquitto.port, status_topic(SITE, DEVICE), "late-reader")
    try:
        assert late.wait_for(lambda msgs: len(msgs) >= 1, 5)
        assert decode(late.messages[-1].payload, DeviceStatus).state == "offline"
        assert late.messages[-1].retain
    finally:
        late.close()


def _outage(mosquitto, mqtt_subscriber, tmp_path, outage_s: float) -> None:
    sub = mqtt_subscriber(faces_topic(SITE, DEVICE))
    pub = make_publisher(mosquitto.port, tmp_path)
    pub.start()
    sent: list[str] = []
    stop = threading.Event()

    def produce() -> None:  # ~20 observations a second, through the outage
        i = 0
        while not stop.is_set():
            obs = fake_observation(i)
            pub.publish(obs)
            sent.append(obs.observation_id)
            i += 1
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(1.0)
        mosquitto.stop()
        time.sleep(outage_s)
        assert pub.spool.stats.depth > 0  # held on disk while the broker was away
        assert not pub.connected
        mosquitto.start()
        time.sleep(1.0)
    finally:
        stop.set()
        producer.join()
    assert sub.wait_for(lambda msgs: unique_ids(sub) >= set(sent), outage_s + 30), (
        f"missing {len(set(sent) - unique_ids(sub))} of {len(sent)}"
    )
    assert wait_drained(pub, 10)
    assert pub.stats.disconnects >= 1 and pub.stats.connects >= 2
    pub.stop()


@pytest.mark.slow
def test_broker_outage_loses_nothing(mosquitto, mqtt_subscriber, tmp_path):
    """Issue #3: the broker stopped for 30 s mid-stream, then restarted (REVISIT_OUTAGE_S shortens it)."""
    _outage(mosquitto, mqtt_subscriber, tmp_path, outage_s=float(os.environ.get("REVISIT_OUTAGE_S", "30")))


_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from revisit.edge.config import BrokerConfig
    from revisit.edge.publish import Publisher
    from revisit.edge.spool import Spool
    from tests.edge.conftest_transport import fake_observation

    port, state, n = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    config = BrokerConfig(port=port, reconnect_max_s=1, delivery="broker")
    pub = Publisher(config, "s1", "d1", Spool(state / "spool.sqlite", 50_000_000))
    pub.start()
    for i in range(n):
        pub.publish(fake_observation(i))
    print("spooled", flush=True)
    time.sleep(600)
""")


def _child(port: int, state: Path, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(port), str(state), str(n)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill9_with_spool_replays_after_restart(mosquitto, mqtt_subscriber, tmp_path):
    port = mosquitto.port
    mosquitto.stop()  # the broker is down while the first process spools
    child = _child(port, tmp_path, 25)
    try:
        for line in child.stdout:
            if line.strip() == "spooled":
                break
        else:
            pytest.fail(f"child ended early: {child.stderr.read()[-2000:]}")
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    with Spool(tmp_path / "spool.sqlite", 50_000_000) as spool:
        assert spool.stats.depth == 25
    mosquitto.start()
    sub = mqtt_subscriber(faces_topic(SITE, DEVICE))
    pub = make_publisher(port, tmp_path)
    pub.start()
    assert sub.wait_for(lambda msgs: len(unique_ids(sub)) >= 25, 20)
    assert [decode(p).track_id for p in sub.payloads()] == list(range(25))  # replayed in order
    assert wait_drained(pub, 5)
    pub.stop()


def test_last_will_says_offline_when_killed(mosquitto, mqtt_subscriber, tmp_path):
    sub = mqtt_subscriber(status_topic(SITE, DEVICE))
    child = _child(mosquitto.port, tmp_path, 1)
    try:
        assert sub.wait_for(lambda msgs: any(decode(m.payload, DeviceStatus).state == "online" for m in msgs), 15)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert sub.wait_for(lambda msgs: decode(msgs[-1].payload, DeviceStatus).state == "offline", 10)


def test_connect_failure_keeps_spooling(tmp_path):
    pub = make_publisher(free_port(), tmp_path)  # nobody listens there
    pub.start()
    try:
        for i in range(5):
            assert pub.publish(fake_observation(i)) is not None
        time.sleep(1.5)
        assert not pub.connected and pub.stats.connect_failures >= 1
        assert pub.spool.stats.depth == 5
    finally:
        pub.stop(drain_s=0)
    with Spool(tmp_path / "spool.sqlite", 50_000_000) as spool:
        assert spool.stats.depth == 5


def test_password_is_never_logged(mosquitto, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.DEBUG):
        pub = make_publisher(mosquitto.port, tmp_path, username="edge", password="s3cret-pw")
        pub.client.enable_logger(logging.getLogger("paho"))
        pub.start()
        time.sleep(0.5)
        pub.stop()
    assert "s3cret-pw" not in caplog.text
    assert "username=edge" in caplog.text


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path) -> Path:
    """A CA, a broker certificate for 127.0.0.1 and a device certificate, made with the openssl CLI."""
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=revisit-test-ca",
        cwd=d,
    )
    for name, ext in (("broker", "subjectAltName=IP:127.0.0.1"), ("device", "extendedKeyUsage=clientAuth")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    return d


def test_mutual_tls_and_password(pki, tmp_path):
    from tests.mosquitto import MOSQUITTO, Mosquitto

    if not MOSQUITTO.is_file():
        pytest.skip("mosquitto not installed")
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "box", "pw-box"], check=True, capture_output=True)
    broker = Mosquitto(
        tmp_path / "mq",
        extra=(
            f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'broker.pem'}\nkeyfile {pki / 'broker.key'}\n"
            f"require_certificate true\npassword_file {passwords}\n"
        ),
    ).start()
    try:
        tls = {"ca": pki / "ca.pem", "cert": pki / "device.pem", "key": pki / "device.key"}
        pub = make_publisher(broker.port, tmp_path / "ok", tls=tls, username="box", password="pw-box")
        pub.start()
        pub.publish(fake_observation(1))
        assert wait_drained(pub, 10) and pub.stats.acked == 1
        pub.stop()
        # Wrong password: refused, counted, and the observation stays spooled.
        bad = make_publisher(broker.port, tmp_path / "bad", tls=tls, username="box", password="wrong")
        bad.start()
        bad.publish(fake_observation(2))
        time.sleep(1.5)
        assert not bad.connected and bad.stats.connect_failures >= 1 and bad.spool.stats.depth == 1
        bad.stop(drain_s=0)
    finally:
        broker.stop()


def test_mqtt5_session(mosquitto, mqtt_subscriber, tmp_path):
    sub = mqtt_subscriber(faces_topic(SITE, DEVICE))
    pub = make_publisher(mosquitto.port, tmp_path, protocol="5")
    pub.start()
    for i in range(3):
        pub.publish(fake_observation(i))
    assert sub.wait_for(lambda msgs: len(msgs) >= 3, 10)
    assert wait_drained(pub, 5) and pub.stats.acked == 3
    pub.stop()


def _central_ack(port: int, payload: bytes, topic: str = "revisit/v1/s1/d1/acks") -> None:
    """What central does after a commit: a DeliveryAck on the box's acks topic (a real MQTT client)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-central", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_stored_delivery_keeps_until_confirmed_and_resends(mosquitto, mqtt_subscriber, tmp_path, caplog):
    """PUBACKed is not delivered: rows stay until central's ack names them, unconfirmed ones are sent again after
    the timeout, and a bad or foreign ack changes nothing (counted)."""
    import logging

    import msgpack

    from revisit.shared.schema import DeliveryAck, encode

    sub = mqtt_subscriber(faces_topic(SITE, DEVICE))
    pub = make_publisher(
        mosquitto.port, tmp_path, delivery="stored", confirm_timeout_s=1, confirm_backoff_max_s=2, unconfirmed_warn_s=1
    )
    caplog.set_level(logging.WARNING, logger="revisit.edge.publish")
    try:
        pub.start()
        sent = [fake_observation(i) for i in range(6)]
        for obs in sent:
            pub.publish(obs)
        assert wait_drained(pub, 10)  # everything PUBACKed ...
        assert pub.spool.stats.depth == 6 and pub.stats.unconfirmed == 6  # ... and nothing deleted
        assert sub.wait_for(lambda msgs: len(msgs) >= 12, 15), "no resend of unconfirmed observations"
        assert pub.stats.resent >= 6 and pub.counters()["spool_oldest_s"] > 0
        assert any("unconfirmed_observations" in r.getMessage() for r in caplog.records)
        ids = [o.observation_id for o in sent]
        _central_ack(mosquitto.port, b"\x93garbage")
        _central_ack(mosquitto.port, encode(DeliveryAck(site="s1", device="other", ts=time.time(), stored=tuple(ids))))
        bad_v = msgpack.packb({"v": True, "site": "s1", "device": "d1", "ts": time.time(), "stored": ids})
        _central_ack(mosquitto.port, bad_v)
        deadline = time.monotonic() + 5
        while pub.stats.bad_acks < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.stats.bad_acks == 3 and pub.spool.stats.depth == 6
        ack = DeliveryAck(site=SITE, device=DEVICE, ts=time.time(), stored=tuple(ids[:5]), rejected=(ids[5],))
        _central_ack(mosquitto.port, encode(ack))
        assert pub.wait_confirmed(10) and pub.stats.confirmed == 5 and pub.stats.rejected_by_central == 1
        assert pub.stats.unconfirmed == 0
    finally:
        pub.stop(drain_s=0)


def test_broker_delivery_deletes_on_puback(mosquitto, mqtt_subscriber, tmp_path):
    """delivery = "broker" (a central without acks): the PUBACK deletes the row and nothing is resent."""
    sub = mqtt_subscriber(faces_topic(SITE, DEVICE))
    pub = make_publisher(mosquitto.port, tmp_path, delivery="broker", confirm_timeout_s=1)
    try:
        pub.start()
        for i in range(4):
            pub.publish(fake_observation(i))
        assert pub.wait_confirmed(10) and pub.spool.stats.depth == 0
        time.sleep(2.5)
        assert len(sub.messages) == 4 and pub.stats.resent == 0 and pub.counters()["delivery_stored"] == 0
    finally:
        pub.stop(drain_s=0)

"""The production broker configuration (deploy/mosquitto/) with real certificates from `revisit deploy`:
mutual TLS, the per-device ACL, revocation, no session takeover, no plain-text port."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from revisit.cli import main
from revisit.edge.config import BrokerConfig, TLSConfig
from revisit.edge.publish import Publisher
from revisit.edge.spool import Spool
from revisit.shared.schema import DeviceStatus, decode, faces_topic, status_topic
from tests.deploy.broker import Client, SecureBroker
from tests.deploy.conftest import PKI
from tests.edge.conftest_transport import fake_observation, wait_drained

QUIET_S = 1.5  # how long "nothing arrives" is watched, after a control message that did arrive


def central(pki: PKI, broker: SecureBroker, topic: str, client_id: str = "revisit-central") -> Client:
    c = pki.central
    client = Client(broker.port, c / "ca.pem", c / "central.pem", c / "central.key", client_id)
    assert client.connect(), f"central refused: {broker.log.read_text()[-1500:]}"
    client.subscribe(topic)
    return client


def device(pki: PKI, broker: SecureBroker, cn: str, client_id: str = "box") -> Client:
    return Client(broker.port, *pki.device(cn), client_id=client_id)


def test_enrolled_device_publishes_through_the_edge_publisher_and_central_receives(pki, secure_broker, tmp_path):
    # Central on a shared subscription, as several workers would be.
    sub = central(pki, secure_broker, "$share/central/revisit/v1/+/+/faces")
    ca, cert, key = pki.device("s1/d1")
    tls = TLSConfig(ca=ca, cert=cert, key=key)
    config = BrokerConfig(host="localhost", port=secure_broker.port, tls=tls, delivery="broker")  # no central here
    pub = Publisher(config, "s1", "d1", Spool(tmp_path / "spool.sqlite", 10_000_000))
    pub.start()
    try:
        sent = [fake_observation(i, site="s1", device="d1") for i in range(5)]
        for obs in sent:
            pub.publish(obs)
        assert wait_drained(pub, 10), f"not acknowledged: {secure_broker.log.read_text()[-1500:]}"
        assert sub.wait_for(lambda msgs: len(msgs) >= 5, 10)
        assert {m.topic for m in sub.messages} == {faces_topic("s1", "d1")}
        got = [decode(m.payload) for m in sub.messages]
        assert [o.observation_id for o in got] == [o.observation_id for o in sent]
        # The retained online status (and the last will) are allowed too. One connection per identity: the
        # broker makes the certificate's name the client id, so a second one would take this one over.
        sub.subscribe(status_topic("s1", "d1"))
        assert sub.wait_for(lambda msgs: any(m.topic.endswith("/status") for m in msgs), 5)
        status = [m for m in sub.messages if m.topic.endswith("/status")][-1]
        assert decode(status.payload, DeviceStatus).state == "online"
    finally:
        pub.stop()
        sub.close()


def test_central_confirms_through_the_acl_and_the_edge_empties_its_spool(pki, secure_broker, tmp_path):
    """The real central service and edge publisher ("stored" delivery) through the production broker: central
    may write the box's acks topic, the box may read it, and the spool empties only on central's confirmation."""
    from revisit.central.config import CentralConfig
    from revisit.central.service import CentralService
    from tests.central.conftest import DIM, REC, make_obs, people

    c = pki.central
    tls = {"ca": str(c / "ca.pem"), "cert": str(c / "central.pem"), "key": str(c / "central.key")}
    broker = {"host": "localhost", "port": secure_broker.port, "client_id": "revisit-central", "tls": tls}
    config = CentralConfig.model_validate(
        {"data_dir": str(tmp_path / "central"), "broker": broker, "ingest": {"recognizers": {REC: DIM}}}
    )
    ca, cert, key = pki.device("s1/d1")
    edge = BrokerConfig(host="localhost", port=secure_broker.port, tls=TLSConfig(ca=ca, cert=cert, key=key))
    with CentralService(config) as service:
        assert service.mqtt.subscribed.wait(10), secure_broker.log.read_text()[-1500:]
        pub = Publisher(edge, "s1", "d1", Spool(tmp_path / "spool.sqlite", 10_000_000))
        pub.start()
        try:
            sent = [make_obs(v, ts=time.time() - 60, site="s1", device="d1") for v in people(5)]
            for obs in sent:
                pub.publish(obs)
            assert pub.wait_confirmed(30), f"not confirmed: {secure_broker.log.read_text()[-1500:]}"
            assert pub.stats.confirmed == 5 and service.counters.get("stored") == 5
        finally:
            pub.stop()


def test_device_cannot_read_or_forge_another_devices_acks(pki, secure_broker):
    sub = central(pki, secure_broker, "revisit/v1/#")
    spy = device(pki, secure_broker, "s1/d2", client_id="spy")
    box = device(pki, secure_broker, "s1/d1")
    try:
        assert spy.connect() and box.connect()
        box.subscribe("revisit/v1/s1/d1/acks")
        spy.subscribe("revisit/v1/s1/d1/acks")  # granted by the broker, but every delivery is checked
        spy.publish("revisit/v1/s1/d1/acks", b"forged ack")  # a box may not write acks at all
        box.publish("revisit/v1/s1/d1/acks", b"forged own ack")
        sub.publish("revisit/v1/s1/d1/acks", b"central ack")
        assert box.wait_for(lambda msgs: any(m.payload == b"central ack" for m in msgs), 5)
        time.sleep(QUIET_S)
        assert [m.payload for m in box.messages] == [b"central ack"]
        assert spy.messages == []
        assert [m.payload for m in sub.messages if m.payload.startswith(b"forged")] == []
    finally:
        spy.close()
        box.close()
        sub.close()


FORGED = [
    "revisit/v1/s1/d2/faces",  # another device of the same site
    "revisit/v1/s2/d1/faces",  # the same device id at another site: the site cannot be spoofed
    "revisit/v1/s1/d2/status",
    "revisit/v1/s1/d1/other",  # not one of its two topics
    "revisit/v1/s1/d1",
    "revisit/v1/s1",
]


def test_device_cannot_write_another_devices_topics(pki, secure_broker):
    sub = central(pki, secure_broker, "revisit/v1/#")
    box = device(pki, secure_broker, "s1/d1")
    try:
        assert box.connect()
        for topic in FORGED:
            box.publish(topic, b"forged " + topic.encode())  # MQTT 3.1.1: acknowledged, then dropped
        box.publish(faces_topic("s1", "d1"), b"control")
        assert sub.wait_for(lambda msgs: any(m.payload == b"control" for m in msgs), 5), "control never arrived"
        time.sleep(QUIET_S)
        assert [m.topic for m in sub.messages if m.payload.startswith(b"forged")] == []
    finally:
        box.close()
        sub.close()


def test_device_cannot_read_other_devices(pki, secure_broker):
    spy = device(pki, secure_broker, "s1/d2", client_id="spy")
    box = device(pki, secure_broker, "s1/d1")
    try:
        assert spy.connect() and box.connect()
        spy.subscribe("revisit/v1/#")  # granted by the broker, but every delivery is checked against the ACL
        box.publish(faces_topic("s1", "d1"), b"private")
        time.sleep(QUIET_S)
        assert spy.messages == []
    finally:
        spy.close()
        box.close()


def test_client_id_cannot_take_over_another_devices_session(pki, secure_broker):
    """use_username_as_clientid: the client id is the certificate's name, whatever the client asks for."""
    victim = device(pki, secure_broker, "s1/d1", client_id="revisit-edge-s1-d1")
    attacker = device(pki, secure_broker, "s1/d2", client_id="revisit-edge-s1-d1")
    try:
        assert victim.connect() and attacker.connect()
        time.sleep(1.0)
        assert victim.disconnects == [] and victim.client.is_connected()
    finally:
        victim.close()
        attacker.close()


@pytest.mark.parametrize("cn", ["foreign", "s1/gone"], ids=["other-ca", "revoked"])
def test_unenrolled_and_revoked_certificates_are_refused(pki, secure_broker, cn):
    _, cert, key = pki.device(cn)
    ca = pki.ca_dir / "ca.pem"  # the client trusts the broker: only its own certificate is wrong
    seen = secure_broker.log.stat().st_size
    client = Client(secure_broker.port, ca, cert, key, client_id="intruder")
    assert not client.connect()
    assert "certificate verify failed" in secure_broker.log.read_text()[seen:]


def test_revocation_takes_effect_on_reload(pki, secure_broker):
    pki.enrol("s3", "soon-gone")
    first = device(pki, secure_broker, "s3/soon-gone")
    assert first.connect()
    first.close()
    assert main(["deploy", "revoke", "soon-gone", "--dir", str(pki.ca_dir)]) == 0
    secure_broker.refresh_crl()
    secure_broker.reload()
    assert not device(pki, secure_broker, "s3/soon-gone").connect()
    other = device(pki, secure_broker, "s1/d1", client_id="still-fine")
    assert other.connect()  # the others are unaffected
    other.close()


def test_there_is_no_plain_text_mqtt(secure_broker):
    with socket.create_connection(("127.0.0.1", secure_broker.port), timeout=5) as sock:
        # An MQTT 3.1.1 CONNECT for client id "x": a TLS listener answers with an alert or closes.
        sock.sendall(bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 1]) + b"x")
        sock.settimeout(5)
        try:
            answer = sock.recv(16)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"\x20")  # never a CONNACK


def test_production_config_is_what_runs(secure_broker: SecureBroker):
    text = Path(secure_broker.config).read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "persistence true",
        "use_username_as_clientid true",
    ):
        assert f"\n{line}\n" in text
    assert "crlfile " in text and "acl_file " in text and "max_queued_messages " in text

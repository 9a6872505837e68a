"""The embedded amqtt broker: a free port, and persistent sessions that keep QoS 1 messages."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from revisit.central.broker import BrokerError, EmbeddedBroker
from tests.central.conftest import publisher, wait_for


def _subscriber(port: int, got: list[bytes]) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="central-test", clean_session=False, protocol=mqtt.MQTTv311
    )
    client.on_message = lambda _c, _u, msg: got.append(msg.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_free_port_and_persistent_session():
    with EmbeddedBroker(port=0) as broker:
        assert broker.port and broker.port > 0
        got: list[bytes] = []
        sub = _subscriber(broker.port, got)
        sub.subscribe("revisit/v1/+/+/faces", qos=1)
        pub = publisher(broker.port)
        wait_for(
            lambda: pub.publish("revisit/v1/s/d/faces", b"first", qos=1).wait_for_publish(5) or got,
            timeout=10,
            interval=0.2,
            what="the subscription",
        )
        sub.disconnect()
        sub.loop_stop()
        time.sleep(0.5)  # amqtt marks the session disconnected asynchronously; until then it would send to it
        for i in range(5):  # while the subscriber is away: queued for its persistent session
            pub.publish("revisit/v1/s/d/faces", b"queued %d" % i, qos=1).wait_for_publish(5)
        got.clear()
        sub = _subscriber(broker.port, got)
        wait_for(lambda: len(got) == 5, timeout=10, what="queued messages")
        assert sorted(got) == [b"queued %d" % i for i in range(5)]
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


def test_port_in_use_is_a_clear_error():
    with EmbeddedBroker(port=0) as first, pytest.raises(BrokerError, match="could not listen"):
        EmbeddedBroker(port=first.port).start(timeout=5)


def _client(port: int, user: str, password: str, got: list[tuple[str, bytes]]) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user.replace("/", "-"), protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)
    client.on_message = lambda _c, _u, msg: got.append((msg.topic, msg.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_password_file_applies_the_device_acl(tmp_path):
    """With a password file a box (`<site>/<device>`) writes only its faces/status and reads only its acks;
    central reads everything and writes acks: the same rules as deploy/mosquitto/acl."""
    from pwdlib.hashers.argon2 import Argon2Hasher

    users = {"revisit-central": "pw-c", "s1/d1": "pw-1", "s1/d2": "pw-2"}
    hasher = Argon2Hasher()
    (tmp_path / "passwd").write_text("".join(f"{u}:{hasher.hash(p)}\n" for u, p in users.items()))
    with EmbeddedBroker(port=0, password_file=tmp_path / "passwd") as broker:
        central_got: list = []
        box_got: list = []
        spy_got: list = []
        central = _client(broker.port, "revisit-central", "pw-c", central_got)
        box = _client(broker.port, "s1/d1", "pw-1", box_got)
        spy = _client(broker.port, "s1/d2", "pw-2", spy_got)
        central.subscribe("revisit/v1/#", qos=1)
        box.subscribe("revisit/v1/s1/d1/acks", qos=1)
        spy.subscribe("revisit/v1/s1/d1/acks", qos=1)  # refused
        spy.subscribe("revisit/v1/#", qos=1)  # refused
        time.sleep(0.5)
        for topic in ("revisit/v1/s1/d2/faces", "revisit/v1/s2/d1/faces", "revisit/v1/s1/d1/acks"):
            box.publish(topic, b"forged", qos=1).wait_for_publish(5)
        box.publish("revisit/v1/s1/d1/faces", b"control", qos=1).wait_for_publish(5)
        central.publish("revisit/v1/s1/d1/acks", b"ack", qos=1).wait_for_publish(5)
        wait_for(lambda: box_got and any(p == b"control" for _, p in central_got), timeout=10, what="allowed traffic")
        time.sleep(1.0)
        assert [p for _, p in central_got if p == b"forged"] == []
        assert box_got == [("revisit/v1/s1/d1/acks", b"ack")]
        assert spy_got == []
        for client in (central, box, spy):
            client.disconnect()
            client.loop_stop()

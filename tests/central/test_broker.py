"""The embedded amqtt broker: a free port, and persistent sessions that keep QoS 1 messages."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from revisit.central.broker import BrokerError, EmbeddedBroker
from tests.central.conftest import publisher, wait_for


def _subscriber(port: int, got: list[bytes]) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="central-test", clean_session=False,
                         protocol=mqtt.MQTTv311)  # fmt: skip
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
        wait_for(lambda: pub.publish("revisit/v1/s/d/faces", b"first", qos=1).wait_for_publish(5) or got,
                 timeout=10, interval=0.2, what="the subscription")  # fmt: skip
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

from __future__ import annotations

import os
import socket
import uuid

import pytest

from revisit.edge.notify import Notifier


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path):
    """A real unix datagram socket like systemd's; yields ($NOTIFY_SOCKET value, socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"revisit-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(2)
    yield address, sock
    sock.close()


def test_messages_reach_the_socket(notify_socket):
    address, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": address})
    assert n.enabled
    assert n.ready("2 cameras")
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 cameras"
    assert n.status("running")
    assert sock.recv(4096) == b"STATUS=running"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_watchdog_pings_at_half_the_period(notify_socket):
    address, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_s == 10 and n.ping_interval_s == 5
    assert n.watchdog(now=100.0)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert not n.watchdog(now=104.0)  # too soon
    assert n.watchdog(now=105.1)
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_watchdog_for_another_pid_is_ignored(notify_socket):
    address, _ = notify_socket
    n = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_s is None and not n.watchdog()
    assert Notifier({"NOTIFY_SOCKET": address}, default_watchdog_s=30).ping_interval_s == 15


def test_noop_without_notify_socket():
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()


def test_dead_socket_does_not_raise(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock"), "WATCHDOG_USEC": "2000000"})
    assert not n.ready()
    assert not n.watchdog()

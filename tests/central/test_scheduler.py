"""The scheduler of the periodic jobs: jobs by name, a failing job does not stop the others, stop joins."""

from __future__ import annotations

import threading
import time

import pytest

from revisit.central.scheduler import Scheduler


def wait_for(check, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return check()


def test_a_failing_job_does_not_stop_the_others(caplog):
    scheduler = Scheduler()
    ran: list[str] = []

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("disk on fire")

    scheduler.add("broken", 0.02, broken, first_in_s=0)
    scheduler.add("fine", 0.02, lambda: ran.append("fine"), first_in_s=0)
    scheduler.start()
    try:
        assert wait_for(lambda: ran.count("fine") >= 3 and ran.count("broken") >= 3)
    finally:
        scheduler.stop()
    assert scheduler.job("broken").failures >= 3 and scheduler.job("fine").failures == 0
    assert "job broken failed" in caplog.text and "disk on fire" in caplog.text


def test_stop_joins_and_waits_for_the_running_job():
    scheduler = Scheduler()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)
        finished.set()

    scheduler.add("slow", 3600, slow, first_in_s=0)
    scheduler.start()
    assert started.wait(5)
    thread = scheduler._thread
    threading.Timer(0.2, release.set).start()
    scheduler.stop()
    assert finished.is_set() and not scheduler.running and thread is not None and not thread.is_alive()


def test_wake_runs_a_job_now_and_remove_forgets_it():
    scheduler = Scheduler().start()
    runs: list[float] = []
    try:
        scheduler.add("hourly", 3600, lambda: runs.append(time.monotonic()))
        time.sleep(0.1)
        assert runs == []  # the first run is one period away
        scheduler.wake("hourly")
        assert wait_for(lambda: len(runs) == 1)
        scheduler.remove("hourly")
        scheduler.wake("hourly")  # no such job any more: nothing happens
        time.sleep(0.1)
        assert len(runs) == 1 and scheduler.job("hourly") is None
    finally:
        scheduler.stop()


def test_a_woken_job_waits_for_the_running_one():
    """One thread: a job woken while another runs is pending until that one ends."""
    scheduler = Scheduler().start()
    hold, holding = threading.Event(), threading.Event()
    ran = threading.Event()
    try:
        scheduler.add("hold", 3600, lambda: (holding.set(), hold.wait(5)), first_in_s=0)
        assert holding.wait(5)
        scheduler.add("expiry", 3600, ran.set)
        scheduler.wake("expiry")
        assert scheduler.pending("expiry") and not ran.is_set()
        hold.set()
        assert ran.wait(5) and not scheduler.pending("expiry")
    finally:
        hold.set()
        scheduler.stop()


def test_periods_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Scheduler().add("never", 0, lambda: None)

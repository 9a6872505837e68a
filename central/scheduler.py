"""The service's periodic jobs, by name, on one thread: retention and the kiosk's event expiry.

A job is a callable run every `every_s` seconds, the first time after `first_in_s` (default: one period). Jobs run
one at a time, the most overdue first. A job that raises is logged with its name and runs again at its next time;
the other jobs are not affected. `wake(name)` makes a job due now (the kiosk wakes its expiry job when it meets an
ended event). `stop()` ends the thread and joins it: a job already running finishes first, no new one starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Job:
    name: str
    every_s: float
    run: Callable[[], object]
    due: float  # time.monotonic() of its next run
    runs: int = 0
    failures: int = 0


class Scheduler:
    def __init__(self, name: str = "scheduler"):
        self.name = name
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._current: Job | None = None  # the job running now

    def add(self, name: str, every_s: float, run: Callable[[], object], *, first_in_s: float | None = None) -> None:
        """Run `run` every `every_s` seconds (a job of the same name is replaced)."""
        if every_s <= 0:
            raise ValueError(f"job {name}: the period must be positive, not {every_s}")
        first = every_s if first_in_s is None else first_in_s
        with self._cond:
            self._jobs[name] = Job(name, every_s, run, time.monotonic() + first)
            self._cond.notify_all()

    def remove(self, name: str, timeout: float = 30.0) -> None:
        """Forget the job; a run of it in progress is waited for (up to `timeout`), unless this is that run."""
        with self._cond:
            job = self._jobs.pop(name, None)
            if threading.current_thread() is not self._thread:
                self._cond.wait_for(lambda: job is None or self._current is not job, timeout)

    def wake(self, name: str) -> None:
        """Make the job due now (nothing when there is no such job)."""
        with self._cond:
            job = self._jobs.get(name)
            if job is not None:
                job.due = min(job.due, time.monotonic())
                self._cond.notify_all()

    def pending(self, name: str) -> bool:
        """Whether the job is due and waiting for its turn."""
        with self._cond:
            job = self._jobs.get(name)
            return job is not None and job.due <= time.monotonic()

    def job(self, name: str) -> Job | None:
        with self._cond:
            return self._jobs.get(name)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> Scheduler:
        """Start the thread (once; a stopped scheduler can be started again)."""
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and join the thread; a job running now finishes first (up to `timeout`)."""
        with self._cond:
            thread, self._stopping = self._thread, True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: a job is still running after %.0f s; not waiting longer", self.name, timeout)
        with self._cond:
            if self._thread is thread:
                self._thread = None

    def _next(self) -> Job | None:
        """The next due job, waiting for it; None when stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                job = min(self._jobs.values(), key=lambda j: j.due, default=None)
                if job is not None and job.due <= now:
                    job.due = now + job.every_s
                    self._current = job
                    return job
                self._cond.wait(None if job is None else job.due - now)
            return None

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            try:
                job.run()
            except Exception:
                job.failures += 1
                log.exception("job %s failed; it runs again in %.0f s", job.name, job.every_s)
            with self._cond:
                job.runs += 1
                self._current = None
                self._cond.notify_all()

"""The kiosk's rate limits: token buckets in memory, per process (several worker processes allow that many times
the rate). The kiosk keeps one per client address for searches, one per event for searches, and one per client for
code look-ups and orders (`Kiosk`). Logins are limited differently: `revisit.central.auth.FailureWindow`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TokenBuckets:
    """Token buckets by key (client address, event id), in memory: `rate_per_min` refill, `burst` capacity.
    The least recently used keys are forgotten beyond `max_keys`."""

    def __init__(self, rate_per_min: float, burst: int, max_keys: int = 10_000):
        self.rate = rate_per_min / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when allowed (a token is spent), else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait

"""The kiosk's rate limits: token buckets by key."""

from __future__ import annotations

import pytest

from revisit.central.kiosk.limits import TokenBuckets


def test_token_buckets():
    limiter = TokenBuckets(rate_per_min=60, burst=3, max_keys=2)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", now=0.0) == pytest.approx(1.0)  # one token a second
    assert limiter.take("b", now=0.0) == 0.0  # keys are independent
    assert limiter.take("a", now=1.0) == 0.0  # refilled
    limiter.take("c", now=1.0)  # beyond max_keys the least recently used key ("b") is forgotten
    assert set(limiter._buckets) == {"a", "c"}

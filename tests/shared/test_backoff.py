"""The one backoff: doubling from `base` up to `cap`, optionally with full jitter."""

import random

import pytest

from revisit.shared.backoff import backoff

BACKOFF = [
    # attempt, base, cap, ceiling of the delay
    (0, 0.5, 60, 0.5),
    (1, 0.5, 60, 1.0),
    (4, 0.5, 60, 8.0),
    (7, 0.5, 60, 60.0),
    (500, 0.5, 60, 60.0),
    (3, 1.0, 5, 5.0),
    (2, 30.0, 900, 120.0),
    (10_000, 30.0, 900, 900.0),
]


@pytest.mark.parametrize(("attempt", "base", "cap", "ceiling"), BACKOFF)
def test_backoff_doubles_up_to_a_cap(attempt, base, cap, ceiling):
    assert backoff(attempt, base, cap) == ceiling


@pytest.mark.parametrize(("attempt", "base", "cap", "ceiling"), BACKOFF)
def test_backoff_with_jitter_spreads_over_the_whole_range(attempt, base, cap, ceiling):
    rng = random.Random(attempt)
    delays = [backoff(attempt, base, cap, rng) for _ in range(400)]
    assert min(delays) >= 0 and max(delays) <= ceiling
    assert max(delays) > 0.8 * ceiling and min(delays) < 0.2 * ceiling

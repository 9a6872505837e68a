"""What the stages share: visits by the visit gap, as a table."""

from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as _timezone

import pytest

from revisit.central.clustering.base import sessionise

UTC = _timezone.utc  # datetime.UTC is Python 3.11+


T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def span(start_min: float, end_min: float) -> tuple[datetime, datetime]:
    return T0 + timedelta(minutes=start_min), T0 + timedelta(minutes=end_min)


@pytest.mark.parametrize(
    ("spans", "gap_min", "expected"),
    [
        ([], 30, []),
        ([span(0, 1)], 30, [[0]]),
        ([span(0, 1), span(20, 21)], 30, [[0, 1]]),
        ([span(0, 1), span(40, 41)], 30, [[0], [1]]),
        ([span(0, 1), span(31, 32)], 30, [[0, 1]]),  # the gap is measured from the end of the last sighting
        ([span(40, 41), span(0, 1), span(20, 21)], 30, [[1, 2, 0]]),  # a bridge joins them, any arrival order
        ([span(0, 100), span(120, 121)], 30, [[0, 1]]),  # a long track ends late
        ([span(0, 1), span(24 * 60, 24 * 60 + 1)], 30, [[0], [1]]),
    ],
)
def test_sessionise(spans, gap_min, expected):
    assert sessionise(spans, timedelta(minutes=gap_min)) == expected

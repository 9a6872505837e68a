"""Exponential backoff: the one retry schedule of camera reconnects (edge/capture), resends of unconfirmed
observations (edge/publish) and store retries past their first fixed delays (central/ingest)."""

from __future__ import annotations

import random


def backoff(attempt: int, base_s: float, cap_s: float, jitter: random.Random | None = None) -> float:
    """The delay before retry `attempt` (0: the first): `min(cap, base * 2**attempt)`; with a `jitter` source,
    full jitter (uniform in [0, that]) so that many clients failing together do not retry in step."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 60))
    return jitter.uniform(0.0, ceiling) if jitter is not None else ceiling

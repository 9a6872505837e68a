"""The `[kiosk]` settings of the central service (`KioskConfig`, read by `revisit.central.config`).

Only settings: importing this module puts no table on the database metadata (`revisit.central.kiosk.models` does).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field as Setting

from revisit.central.kiosk.photos import MAX_UPLOAD_BYTES, PHOTO_MAX_SIDE
from revisit.central.kiosk.search import DEFAULT_THRESHOLD
from revisit.shared.config import Strict


class KioskConfig(Strict):
    """The `[kiosk]` settings of the central service."""

    storage_dir: Path | None = Setting(None, description="event photos; default <data_dir>/events")
    expiry_days: float = Setting(30, gt=0, le=3650, description="a new event is deleted this long after creation")
    max_upload_mb: float = Setting(MAX_UPLOAD_BYTES / 2**20, gt=0, le=200, description="per photo")
    photo_max_side: int = Setting(PHOTO_MAX_SIDE, ge=320, le=4096, description="event photos are detected at this")
    threshold: float = Setting(DEFAULT_THRESHOLD, gt=0, lt=1, description="default match, on the (cos+1)/2 scale")
    search_per_client_min: float = Setting(20, gt=0, description="searches per minute per client address")
    search_per_event_min: float = Setting(300, gt=0, description="searches per minute per event")
    lookup_per_client_min: float = Setting(20, gt=0, description="event code look-ups per minute per client")
    burst: int = Setting(8, ge=1, le=1000, description="bucket size of the per-client limits")
    link_minutes: float = Setting(60, gt=0, le=24 * 60, description="photo links in search results last this long")
    threshold_floor: float = Setting(
        DEFAULT_THRESHOLD, ge=0.5, lt=1, description="guests cannot search below this unless staff set an event's own"
    )
    max_results: int = Setting(100, ge=1, le=1000, description="photos one search returns at most")

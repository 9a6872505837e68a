"""The kiosk's parts, wired together (`Kiosk`): events, the face engine and its worker, search, rate limits,
photo links, and the expiry job on the service's scheduler. The routes (`revisit.central.kiosk.routes`) use this.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from revisit.central.kiosk.config import KioskConfig
from revisit.central.kiosk.events import AddResult, Events
from revisit.central.kiosk.limits import TokenBuckets
from revisit.central.kiosk.models import Event
from revisit.central.kiosk.orders import Orders
from revisit.central.kiosk.search import FaceSearch, SearchResult
from revisit.central.kiosk.tokens import PhotoTokens
from revisit.central.kiosk.worker import FaceWorker
from revisit.central.scheduler import Scheduler
from revisit.central.store import utcnow

EXPIRY_JOB = "kiosk-expiry"


class Kiosk:
    """What the routes use: events, the face engine and its worker, search, rate limits and photo tokens."""

    def __init__(
        self,
        events: Events,
        engine: Any,
        config: KioskConfig | None = None,
        secret: str = "",
        expiry_interval_s: float = 3600,
        timezone: str = "UTC",
        scheduler: Scheduler | None = None,
    ):
        self.config = config or KioskConfig()
        self.timezone = timezone  # events' default dates are days of this zone (head office's)
        self.events = events
        self.orders = Orders(events.store)
        self.engine = engine
        self.worker = FaceWorker(events, engine, max_side=self.config.photo_max_side)
        self.search = FaceSearch(events, engine, threshold=self.config.threshold)
        c = self.config
        self.client_search = TokenBuckets(c.search_per_client_min, c.burst)
        self.event_search = TokenBuckets(c.search_per_event_min, max(c.burst, int(c.search_per_event_min // 4)))
        self.client_lookup = TokenBuckets(c.lookup_per_client_min, c.burst)
        # no secret given (tests, tools): a random one, so links last only as long as this process
        self.tokens = PhotoTokens(secret or secrets.token_bytes(32), ttl_s=c.link_minutes * 60)
        self.expiry_interval_s = expiry_interval_s
        # the service's scheduler runs the expiry job beside retention; a kiosk on its own has its own scheduler
        self.scheduler = scheduler or Scheduler("kiosk-scheduler")
        self._own_scheduler = scheduler is None

    @classmethod
    def from_service(cls, service: Any, engine: Any = None, config: KioskConfig | None = None) -> Kiosk:
        """Built on an opened `CentralService`: its database, its vector index (`EventVectors.on`) and its scheduler.
        The face engine is made from the configuration's `engine` table unless one is given."""
        cfg = service.config
        config = config or getattr(cfg, "kiosk", None) or KioskConfig()
        if engine is None:
            from revisit.shared.config import EngineConfig
            from revisit.shared.engine import FaceEngine

            engine = FaceEngine(getattr(cfg, "engine", None) or EngineConfig())
        from revisit.central.auth import load_secret

        events = Events.for_service(service, config)
        return cls(
            events,
            engine,
            config,
            load_secret(cfg),
            cfg.retention.interval_min * 60,
            cfg.loyal.timezone,
            service.scheduler,
        )

    def start(self) -> Kiosk:
        """Start the face worker (photos left processing resume) and the expiry job (it runs now, then every
        `expiry_interval_s`)."""
        self.worker.start()
        self.scheduler.add(EXPIRY_JOB, self.expiry_interval_s, self.events.expire_events, first_in_s=0)
        self.scheduler.start()
        return self

    def close(self) -> None:
        self.scheduler.remove(EXPIRY_JOB)
        if self._own_scheduler:
            self.scheduler.stop()
        self.worker.stop()
        self.events.close()

    def expired(self, event: Event) -> bool:
        """Whether the event has ended; an ended one wakes the expiry job, which deletes it now."""
        if event.expires_at > utcnow():
            return False
        self.scheduler.wake(EXPIRY_JOB)
        return True

    def floor(self, event_id: uuid.UUID) -> float:
        """The lowest threshold a guest's search of this event may use."""
        own = self.events.min_threshold(event_id)
        return own if own is not None else self.config.threshold_floor

    def upload(self, event_id: uuid.UUID, filename: str, data: bytes) -> AddResult:
        result = self.events.add_photo(event_id, filename, data)
        if result.photo is not None:
            self.worker.submit(event_id, result.photo.id)
        return result

    def match_json(self, event_id: uuid.UUID, result: SearchResult) -> dict[str, Any]:
        matches = []
        for m in result.matches:
            token = self.tokens.sign(event_id, m.photo.id)
            matches.append(
                {
                    "photo_id": str(m.photo.id),
                    "filename": m.photo.filename,
                    "similarity": m.similarity,
                    "thumbnail_url": f"/kiosk/photo/{token}/thumb",
                    "image_url": f"/kiosk/photo/{token}/view",
                    "download_url": f"/kiosk/photo/{token}/download",
                    "token": token,
                }
            )
        out: dict[str, Any] = {
            "matches_found": len(matches),
            "matches": matches,
            "threshold": result.threshold,
            "faces_in_selfie": result.selfie.faces_seen,
        }
        if result.selfie.notice:
            out["notice"] = result.selfie.notice
        return out

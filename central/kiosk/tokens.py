"""Signed, short-lived links to the photos a search returned.

A token is `base64url(event id, photo id, expiry, HMAC-SHA256)` with a key derived from the service's secret: photo
ids alone open nothing, and a token of one event never opens another event's photo.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
import uuid


class PhotoTokens:
    """`base64url(event id, photo id, expiry, HMAC)`: a capability for one photo of one event, for a while."""

    def __init__(self, secret: str | bytes, ttl_s: float = 3600):
        key = secret.encode() if isinstance(secret, str) else secret
        self.key = hashlib.sha256(b"revisit-kiosk-photo\0" + key).digest()
        self.ttl_s = ttl_s

    def sign(self, event_id: uuid.UUID, photo_id: uuid.UUID, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        payload = event_id.bytes + photo_id.bytes + struct.pack(">I", expires)
        mac = hmac.new(self.key, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def verify(self, token: str, now: float | None = None) -> tuple[uuid.UUID, uuid.UUID] | None:
        """(event id, photo id) of a valid, unexpired token; None otherwise."""
        if not 60 <= len(token) <= 80:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 52:
            return None
        payload, mac = raw[:36], raw[36:]
        if not hmac.compare_digest(mac, hmac.new(self.key, payload, hashlib.sha256).digest()[:16]):
            return None
        (expires,) = struct.unpack(">I", payload[32:])
        if expires < (time.time() if now is None else now):
            return None
        return uuid.UUID(bytes=payload[:16]), uuid.UUID(bytes=payload[16:32])

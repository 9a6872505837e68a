"""Input bounds of the web app: request body size and JSON depth (`BodyLimits`), and bounded query types.

Every request body except the photo uploads (multipart, limited by `kiosk.check_upload_size`) is read here first:
over `max_bytes` (or the path's own larger limit: the kiosk's base64 selfie) it is refused with 413 before any
handler parses it; a JSON body nested deeper than `max_depth` with 422 (Python's parser would recurse until a
RecursionError, a 500). Refusals are logged and counted by reason in the `refused` Counter given (the app's
`state.body_refusals`, exported as `revisit_central_http_refused` on /metrics).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from typing import Annotated

import numpy as np
from fastapi import Query
from pydantic import AfterValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_OFFSET = 10_000_000
UTC_ZONE = timezone.utc  # noqa: UP017 - datetime.UTC is 3.11+
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC_ZONE)
LATEST = datetime(2200, 1, 1, tzinfo=UTC_ZONE)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings skipped; no parsing, no recursion)."""
    bare = np.frombuffer(_STRINGS.sub(b'""', body), np.uint8)
    steps = np.isin(bare, _OPEN).astype(np.int32) - np.isin(bare, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _bounded_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("give a time zone (e.g. ...Z or +00:00)")
    try:
        utc = value.astimezone(UTC_ZONE)
    except OverflowError:
        raise ValueError("out of range") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()}")
    return utc


# A query time with a zone, within 1970..2200 (422 otherwise, never an overflow later).
BoundedTime = Annotated[datetime, AfterValidator(_bounded_time)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def bounded_date(value: date) -> date:
    """A query day within 1970..2200 (a day near date.min/max would overflow once a range is computed from it)."""
    if not EARLIEST.date() <= value <= LATEST.date():
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST.date()}")
    return value


BoundedDate = Annotated[date, AfterValidator(bounded_date)]


class BodyLimits:
    """Pure ASGI: buffers bounded request bodies, refuses big (413) and deeply nested JSON (422)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = 1024 * 1024,
        max_depth: int = 32,
        exempt: Iterable[str] = (),
        larger: Mapping[str, int] | None = None,
        refused: Counter[str] | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.exempt = [re.compile(p) for p in exempt]
        self.larger = dict(larger or {})
        self.refused: Counter[str] = refused if refused is not None else Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if any(p.match(path) for p in self.exempt):
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(path, self.max_bytes)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(scope, send, 413, f"request body too large (limit {limit} bytes)", "size")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(scope, send, 413, f"request body too large (limit {limit} bytes)", "size")
                return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type not in (b"application/x-www-form-urlencoded", b"multipart/form-data"):
            depth = json_depth(bytes(body)) if body else 0
            if depth > self.max_depth:
                await self._refuse(scope, send, 422, f"JSON nested too deeply (at most {self.max_depth})", "depth")
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, detail: str, reason: str) -> None:
        self.refused[reason] += 1
        log.warning("refused %s %s: %s", scope["method"], scope["path"][:200], detail)
        payload = json.dumps({"detail": detail}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

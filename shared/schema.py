"""The edge → central message schema (msgpack over MQTT), version 1.

Topics
  revisit/v1/{site}/{device}/faces    one `Observation` per finished track (QoS 1)
  revisit/v1/{site}/{device}/status   retained `DeviceStatus`: online heartbeats, offline as last will
  revisit/v1/{site}/{device}/acks     `DeliveryAck` from central (QoS 1): observation ids committed to the store
                                      (or rejected for good); the edge deletes them from its spool

Types are strict: an int field takes only an int (never a bool, never 1.0), a float field an int or a float
(never a bool); the schema version must be the int 1.

Observation fields (all required unless marked optional):
  v               schema version, 1
  observation_id  UUID (string) chosen by the edge; the central service is idempotent on it
  site, device, camera   ids: 1-64 of [A-Za-z0-9_.-]
  track_id        the camera's tracker id (an interval-published long track reuses it)
  first_ts, last_ts, best_ts   UTC seconds since the epoch (float); first <= best <= last
  recognizer_id   id of the recognizer that made the embedding, e.g. "w600k_mbf@5e03a553209a"
  embedding       float32 little-endian bytes, `embedding_dim` values, unit L2 norm
  embedding_dim   number of values in `embedding`
  det_score       detector confidence of the best shot
  quality         {"detector","size","sharpness","pose","score"} each in [0, 1] (`QualityFields.of` the
                  engine's `face.Quality`)
  box             [x1, y1, x2, y2] of the best shot in frame pixels
  landmarks       optional: 5 x [x, y] in frame pixels. Edges no longer send it; from older ones it is
                  accepted and checked
  crop_jpeg       the best shot's padded face as JPEG bytes (at most MAX_CROP_BYTES)
  frame_size      [width, height] of the camera frame
  frames_seen     frames in which the track was matched (required: version-1 centrals reject a message
                  without it)
  co_tracks       ids of other tracks of the same camera seen in the same frames (different people)

What central keeps (a `Sighting`): the ids, times, embedding, quality score, det_score, box, crop, frame_size
and co_tracks. The quality components, landmarks and frames_seen are checked and not stored: the clusterer
weighs by the score, and a track's span is first_ts..last_ts.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Annotated, Any, Literal

import msgpack
import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from revisit.shared.errors import RevisitError
from revisit.shared.face import Quality

SCHEMA_VERSION = 1
TOPIC_ROOT = "revisit/v1"
MAX_MESSAGE_BYTES = 1_000_000
MAX_CROP_BYTES = 512 * 1024
MAX_EMBEDDING_DIM = 4096
NORM_TOLERANCE = 1e-3

MAX_ACK_IDS = 1000  # observation ids in one DeliveryAck


def _no_bool(value: Any) -> Any:
    """Python's bool is an int: `True` must not pass as 1 (or 1.0) in a message."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


# Site, device and camera ids: they become MQTT topic levels, certificate names and file-safe labels. The one
# definition: configs, topics, certificates and user scopes all use these.
IDENT_CHARS = r"[A-Za-z0-9_.\-]{1,64}"
Ident = Annotated[str, Field(pattern=f"^{IDENT_CHARS}$")]
Float = Annotated[float, BeforeValidator(_no_bool)]
Unit = Annotated[Float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Finite = Annotated[Float, Field(allow_inf_nan=False)]
# UTC seconds from 1970 to 2100: a broken clock's year 33658 is rejected here, not deep in the store. Times far
# from the receive time are the ingest's business (counted as clock_skew and stamped with the receive time).
Timestamp = Annotated[Float, Field(ge=0, le=4_102_444_800, allow_inf_nan=False)]
_IDENT = re.compile(IDENT_CHARS)


class SchemaError(RevisitError):
    """A message that does not follow the schema; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def faces_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{_ident(site)}/{_ident(device)}/faces"


def status_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{_ident(site)}/{_ident(device)}/status"


def acks_topic(site: str, device: str) -> str:
    return f"{TOPIC_ROOT}/{_ident(site)}/{_ident(device)}/acks"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """(site, device, kind) of a Revisit topic, or SchemaError."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or not all(map(is_ident, parts[2:4])):
        raise SchemaError("bad_topic", f"not a Revisit topic: {topic[:200]!r}")
    return parts[2], parts[3], parts[4]


def is_ident(value: str) -> bool:
    """A valid site, device or camera id (`Ident`)."""
    return _IDENT.fullmatch(value) is not None


def _ident(value: str) -> str:
    if not is_ident(value):
        raise ValueError(f"invalid id {value!r}: use 1-64 of letters, digits, '_', '.', '-'")
    return value


class QualityFields(BaseModel):
    """The wire form of `face.Quality`: its components and score, without the raw measurements."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: Unit
    size: Unit
    sharpness: Unit
    pose: Unit
    score: Unit

    @classmethod
    def of(cls, quality: Quality) -> QualityFields:
        return cls(**{k: float(getattr(quality, k)) for k in cls.model_fields})


class Observation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    observation_id: str
    site: Ident
    device: Ident
    camera: Ident
    track_id: StrictInt = Field(ge=0, lt=2**63)
    first_ts: Timestamp
    last_ts: Timestamp
    best_ts: Timestamp
    recognizer_id: str = Field(min_length=1, max_length=128)
    embedding: bytes
    embedding_dim: StrictInt = Field(gt=0, le=MAX_EMBEDDING_DIM)
    det_score: Unit
    quality: QualityFields
    box: tuple[Finite, Finite, Finite, Finite]
    landmarks: tuple[tuple[Finite, Finite], ...] | None = None
    crop_jpeg: bytes = Field(max_length=MAX_CROP_BYTES)
    frame_size: tuple[StrictInt, StrictInt]
    frames_seen: StrictInt = Field(ge=1)
    co_tracks: tuple[StrictInt, ...] = ()

    @field_validator("observation_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        return str(uuid.UUID(v))

    @model_validator(mode="after")
    def _consistent(self) -> Observation:
        if not self.first_ts <= self.best_ts <= self.last_ts:
            raise ValueError("timestamps must satisfy first_ts <= best_ts <= last_ts")
        if len(self.embedding) != 4 * self.embedding_dim:
            raise ValueError(f"embedding has {len(self.embedding)} bytes, expected 4 x {self.embedding_dim}")
        vec = self.vector()
        if not np.all(np.isfinite(vec)):
            raise ValueError("embedding has non-finite values")
        norm = float(np.linalg.norm(vec))
        if not math.isclose(norm, 1.0, abs_tol=NORM_TOLERANCE):
            raise ValueError(f"embedding norm is {norm:.4f}, expected 1")
        if self.landmarks is not None and len(self.landmarks) != 5:
            raise ValueError("landmarks must be 5 points")
        if not self.crop_jpeg.startswith(b"\xff\xd8"):
            raise ValueError("crop_jpeg is not a JPEG")
        if min(self.frame_size) <= 0 or max(self.frame_size) > 16384:
            raise ValueError(f"implausible frame_size {self.frame_size}")
        if self.track_id in self.co_tracks:
            raise ValueError("a track cannot be its own co-track")
        return self

    def vector(self) -> np.ndarray:
        return np.frombuffer(self.embedding, dtype="<f4")

    @staticmethod
    def pack_vector(vec: np.ndarray) -> bytes:
        return np.asarray(vec, dtype="<f4").tobytes()


class DeviceStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    site: Ident
    device: Ident
    state: Literal["online", "offline"]
    ts: Timestamp
    version: str = Field("", max_length=64)
    stats: dict[Annotated[str, Field(max_length=64)], Finite] = Field(default_factory=dict, max_length=256)


class DeliveryAck(BaseModel):
    """Central → one edge: these observations are committed (`stored`, duplicates included) or were rejected
    for good (`rejected`: invalid, never storable); either way the edge may delete them from its spool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    site: Ident
    device: Ident
    ts: Timestamp
    stored: tuple[str, ...] = Field((), max_length=MAX_ACK_IDS)
    rejected: tuple[str, ...] = Field((), max_length=MAX_ACK_IDS)

    @field_validator("stored", "rejected")
    @classmethod
    def _uuids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(uuid.UUID(i)) for i in ids)


Message = Observation | DeviceStatus | DeliveryAck


def encode(message: Message) -> bytes:
    return msgpack.packb(message.model_dump(mode="python"), use_bin_type=True)


def decode(data: bytes, kind: type[Message] = Observation) -> Any:
    """Decode and validate one message; every failure is a SchemaError with a short reason."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SchemaError("too_large", f"{len(data)} bytes (limit {MAX_MESSAGE_BYTES})")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise SchemaError("not_msgpack", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise SchemaError("not_a_map", f"top level is {type(raw).__name__}")
    if type(raw.get("v")) is not int or raw.get("v") != SCHEMA_VERSION:  # not True, not 1.0
        raise SchemaError("bad_version", f"schema version {raw.get('v')!r}, this service speaks {SCHEMA_VERSION}")
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "message"
        reason = "bad_embedding" if "embedding" in err["msg"] or where.startswith("embedding") else "invalid"
        raise SchemaError(reason, f"{where}: {err['msg']} ({exc.error_count()} error(s))") from None


def peek_observation_id(data: bytes) -> str | None:
    """The observation id of a payload that failed validation, when it still has a readable one (else None)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE_BYTES)
        return str(uuid.UUID(raw["observation_id"])) if isinstance(raw, dict) else None
    except Exception:  # garbage has no id
        return None

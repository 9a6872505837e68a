"""Typed configuration of the central service (TOML). Unknown keys are errors that name the key.

Example (see deploy/central.example.toml):

    data_dir = "/var/lib/revisit-central"
    database_url = "postgresql+psycopg://revisit@db/revisit"
    production = true
    secret_key = "..."                       # or $REVISIT_SECRET_KEY; unset: <data_dir>/secret_key (made once, 0600)

    [broker]                                 # leave out for the embedded broker ([embedded_broker])
    host = "mqtt.example.com"
    port = 8883
    shared_group = "central"                 # several workers split the load
    [broker.tls]
    ca = "/etc/revisit/ca.pem"

    [vectors]
    engine = "embedded"                      # default: usearch in process under <data_dir>/vectors
                                             # "qdrant": a Qdrant server ([qdrant] url) or its local mode (path)
    [qdrant]
    url = "https://qdrant.example.com:6333"  # a server or cluster (sets engine "qdrant" when engine is left out)

    [cluster]
    threshold = 0.37
    scope = "all"                            # or "site": visitors never span sites

    [admin]                                  # ensured as an admin account on start; more: `revisit central users`
    username = "admin"
    password_hash = "$argon2id$..."          # `revisit central passwd`; or the password in $REVISIT_ADMIN_PASSWORD

    [web]
    bind = "127.0.0.1"                       # behind an HTTPS reverse proxy in production
    port = 8080
    live_urls = { "store-1/box-a" = "http://10.0.0.20:8090" }   # edges' live views, relayed behind login
    session_idle_min = 60                    # a session unused this long ends
    session_max_hours = 12                   # and every session ends this long after its login
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from revisit.central.kiosk.config import KioskConfig
from revisit.shared.assign import DEFAULT_THRESHOLD
from revisit.shared.config import BrokerConnection, EngineConfig, Strict, load_toml
from revisit.shared.schema import Ident

SECRET_FILE = "secret_key"  # under data_dir when no secret_key is configured (development only)
MIN_SECRET_CHARS = 32
# The match threshold is shared.assign.DEFAULT_THRESHOLD (its docstring has the measurements).
DEFAULT_MATCH_THRESHOLD = DEFAULT_THRESHOLD
# The quality floor, chosen with `revisit eval recurrence` (README, "Recurrence over weeks"): a face below 0.35 never
# founds a visitor and joins one only at cosine >= 0.5. On `hard` (20-32 px) faces this lifts loyal precision from
# 0.42 to 0.93; on clean and `cctv` faces it changes precision and recall by less than 0.01.
FOUND_MIN_QUALITY = 0.35
LOW_QUALITY_THRESHOLD = 0.5


class EmbeddedBrokerConfig(Strict):
    bind: str = Field("127.0.0.1", description="address of the in-process broker (0.0.0.0 for edges on the LAN)")
    port: int = Field(1883, ge=0, le=65535, description="0 picks a free port")
    password_file: Path | None = Field(None, description="amqtt/mosquitto-style password file; default: open")
    username: str = Field("revisit-central", description="the service's own login (in the password file if set)")
    password: SecretStr | None = None


class BrokerConfig(BrokerConnection):
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="stable: the broker keeps this persistent session; default revisit-central-<instance>",
    )
    shared_group: Ident | None = Field(None, description="subscribe as $share/<group>/... so workers split the load")


class VectorsConfig(Strict):
    engine: Literal["embedded", "qdrant"] | None = Field(
        None, description="embedded (usearch, the default) or qdrant; left out: qdrant when [qdrant] url/path is set"
    )
    path: Path | None = Field(None, description="the embedded index directory; default <data_dir>/vectors")
    background_adds: bool = Field(
        False,
        description="embedded: a thread adds changed prototypes to the graph (searched exactly until then) instead "
        "of the ingest thread (measured at 1M: no faster on 2 cores)",
    )


class QdrantConfig(Strict):
    path: Path | None = Field(None, description="qdrant-client local mode directory (old setups, tests)")
    url: str | None = Field(None, description="a Qdrant server or cluster, instead of local mode")
    api_key: SecretStr | None = None
    prefix: Ident = Field("revisit", description="collection name prefix")

    @model_validator(mode="after")
    def _one(self) -> QdrantConfig:
        if self.path is not None and self.url is not None:
            raise ValueError("qdrant: give path (local mode) or url (server), not both")
        if self.api_key is not None and self.url is None:
            raise ValueError("qdrant.api_key needs qdrant.url")
        return self


class ClusterConfig(Strict):
    threshold: float = Field(DEFAULT_MATCH_THRESHOLD, gt=0, lt=1, description="cosine to join a visitor")
    scope: Literal["all", "site"] = Field("all", description="match visitors across all sites, or per site")
    visit_gap_min: float = Field(30, gt=0, description="sightings further apart than this are separate visits")
    candidates: int = Field(8, ge=1, le=100, description="nearest prototypes considered per sighting")
    found_min_quality: float = Field(
        FOUND_MIN_QUALITY,
        ge=0,
        le=1,
        description="a face below this quality never founds a visitor: it joins one it matches or waits unassigned",
    )
    low_quality_threshold: float | None = Field(
        LOW_QUALITY_THRESHOLD,
        gt=0,
        lt=1,
        description="cosine a face below found_min_quality needs to join a visitor; None: the threshold",
    )


class LoyalConfig(Strict):
    min_visits: int = Field(3, ge=1, description="visits before today that make a loyal customer")
    window_days: int = Field(30, ge=1, le=3650)
    timezone: str = Field("UTC", description="head office's IANA zone: all-sites days, default of sites")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return _valid_zone(v)


class SiteConfig(Strict):
    timezone: str = Field(description="IANA zone of the site: its visits' days and arrival times")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return _valid_zone(v)


def _valid_zone(name: str) -> str:
    from revisit.central.store import StoreError, zone_info

    try:
        zone_info(name)
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    return name


class RetentionConfig(Strict):
    crops_days: float | None = Field(30, gt=0, description="crops deleted after this; None keeps them")
    sightings_days: float | None = Field(365, gt=0, description="sightings and their embeddings; None keeps them")
    interval_min: float = Field(60, gt=0, description="how often the retention job runs in the service")


class IngestConfig(Strict):
    recognizers: dict[str, int] = Field(
        default_factory=dict,
        description="extra recognizer ids (custom models) and their embedding dims; the manifest's are known",
    )
    max_crop_pixels: int = Field(1024 * 1024, ge=64 * 64, description="crops larger than this are rejected")
    queue_size: int = Field(
        1000, ge=1, le=1_000_000, description="messages received and not yet stored; beyond: flow control"
    )
    batch_size: int = Field(64, ge=1, le=10_000, description="observations stored in one transaction at most")
    batch_ms: float = Field(50, ge=0, le=10_000, description="how long a batch waits to fill up")
    max_past_s: float | None = Field(
        7 * 86400, gt=0, description="observations older than this at receipt are stamped (clock_skew); None: off"
    )
    max_future_s: float | None = Field(
        300, gt=0, description="observations ahead of the receive time by more are stamped (clock_skew); None: off"
    )
    app_acks: bool = Field(True, description="publish DeliveryAcks to revisit/v1/<site>/<device>/acks after commit")


class AdminConfig(Strict):
    username: str = Field("admin", min_length=1, max_length=64)
    password_hash: SecretStr | None = Field(None, description="hashed password (see the pages' hashing)")
    password_env: str = Field("REVISIT_ADMIN_PASSWORD", description="else the plain password from this variable")

    def password(self) -> str | None:
        return os.environ.get(self.password_env) or None


class WebConfig(Strict):
    bind: str = Field("127.0.0.1", description="address of the pages and API (use an HTTPS proxy in production)")
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    forwarded_allow_ips: str = Field("127.0.0.1", description="proxies trusted for X-Forwarded-* headers")
    live_urls: dict[str, str] = Field(
        default_factory=dict, description="'site/device' -> the edge's live view base URL, relayed behind login"
    )
    session_idle_min: float = Field(60, gt=0, le=7 * 24 * 60, description="a session unused this long ends")
    session_max_hours: float = Field(12, gt=0, le=30 * 24, description="every session ends this long after login")
    max_json_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="request bodies (not uploads)")
    max_json_depth: int = Field(32, ge=2, le=256, description="nesting of JSON request bodies")


class CentralConfig(Strict):
    data_dir: Path = Path("/var/lib/revisit-central")
    instance: Ident | None = Field(
        None, description="this worker's name, unique per broker; default <host>-<hash of data_dir>"
    )
    broker: BrokerConfig | None = Field(None, description="None: run the embedded broker")
    embedded_broker: EmbeddedBrokerConfig = EmbeddedBrokerConfig()
    vectors: VectorsConfig = VectorsConfig()
    qdrant: QdrantConfig = QdrantConfig()
    database_url: str | None = Field(None, description="default sqlite:///<data_dir>/revisit.db")
    storage_dir: Path | None = Field(None, description="crops; default <data_dir>/crops")
    cluster: ClusterConfig = ClusterConfig()
    loyal: LoyalConfig = LoyalConfig()
    sites: dict[Ident, SiteConfig] = Field(
        default_factory=dict, description="per site (the topics' site id): its time zone; others use loyal.timezone"
    )
    retention: RetentionConfig = RetentionConfig()
    ingest: IngestConfig = IngestConfig()
    admin: AdminConfig = AdminConfig()
    web: WebConfig = WebConfig()
    kiosk: KioskConfig = KioskConfig()
    engine: EngineConfig = Field(EngineConfig(), description="the face engine of the kiosk (event photos, selfies)")
    secret_key: SecretStr | None = Field(
        default_factory=lambda: SecretStr(key) if (key := os.environ.get("REVISIT_SECRET_KEY")) else None,
        description="signs session cookies and kiosk photo links; default $REVISIT_SECRET_KEY, else (development "
        "only) a random one made once in <data_dir>/secret_key",
    )
    production: bool = Field(False, description="refuse default secrets and open brokers")

    @model_validator(mode="after")
    def _production(self) -> CentralConfig:
        if not self.production:
            return self
        problems = []
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        if len(secret) < MIN_SECRET_CHARS:
            problems.append("secret_key must be set to at least 32 random characters (or $REVISIT_SECRET_KEY)")
        if self.admin.password_hash is None and not self.admin.password():
            problems.append(f"admin.password_hash or ${self.admin.password_env} must be set")
        if self.admin.password() in {"admin", "password", "change-me"}:
            problems.append("the admin password is a default one")
        if (
            self.broker is None
            and self.embedded_broker.password_file is None
            and self.embedded_broker.bind not in {"127.0.0.1", "localhost", "::1"}
        ):
            problems.append("the embedded broker listens beyond localhost without embedded_broker.password_file")
        if problems:
            raise ValueError("production mode: " + "; ".join(problems))
        return self

    @property
    def instance_name(self) -> str:
        """Unique per host and data directory unless configured: two workers never share a client id."""
        if self.instance:
            return self.instance
        host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:40] or "host"
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        return f"{host}-{digest}"

    @property
    def mqtt_client_id(self) -> str:
        if self.broker is not None and self.broker.client_id:
            return self.broker.client_id
        return f"revisit-central-{self.instance_name}"[:64]

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'revisit.db'}"

    @property
    def crops_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "crops"

    @property
    def qdrant_path(self) -> Path | None:
        return None if self.qdrant.url else (self.qdrant.path or self.data_dir / "qdrant")

    @property
    def vector_engine(self) -> str:
        if self.vectors.engine is not None:
            return self.vectors.engine
        return "qdrant" if self.qdrant.url or self.qdrant.path else "embedded"

    @property
    def vectors_path(self) -> Path:
        return self.vectors.path or self.data_dir / "vectors"


def load(path: str | Path) -> CentralConfig:
    config = load_toml(path, CentralConfig)
    assert isinstance(config, CentralConfig)
    return config

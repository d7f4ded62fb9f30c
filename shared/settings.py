"""Runtime settings, read from ``LOOPWISE_*`` environment variables.

One definition so that services, the CLI, docker-compose and the tests agree
on names and defaults.
"""

from __future__ import annotations

import os
import socket
import tempfile
from functools import lru_cache

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("scorer", "router", "labels", "quality")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPWISE_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = Field(
        False, description="treat redis_url as a node of a Redis Cluster (as a "
        "redis+cluster:// URL does)")
    stream_shards: int | None = Field(
        None, ge=1, le=1024, description="shards of the ingest and label streams and of the "
        "router's keys (shared.sharding); unset: 1 on a single Redis, 12 on a cluster. "
        "Every process must agree, and it stays fixed while data lives in Redis")
    database_url: str = "sqlite+aiosqlite:///./var/loopwise.db"
    host: str = "127.0.0.1"
    scorer_port: int = 8001
    router_port: int = 8002
    labels_port: int = 8003
    quality_port: int = 8004
    # Where the other services answer when they are not on this host (Kubernetes
    # Services, compose containers): e.g. LOOPWISE_ROUTER_URL=http://router:8002. Unset,
    # a service is reached at ``host`` and its port.
    scorer_url: str | None = None
    router_url: str | None = None
    labels_url: str | None = None
    quality_url: str | None = None

    # Stream consumption.
    batch_size: int = Field(500, ge=1, le=10_000)
    poll_ms: int = Field(100, ge=1)
    reclaim_idle_ms: int = Field(
        60_000, ge=1, description="pending entries idle this long are reclaimed"
    )
    max_deliveries: int = Field(
        5, ge=2, description="a reclaimed entry whose handler still fails after this many "
        "deliveries is dead-lettered with the error, so that it cannot hold others back",
    )
    consumer_backoff_seconds: float = Field(
        0.2, gt=0, description="a consumer's first pause after a failure that is not the "
        "entries' (database or Redis unavailable, a timeout); doubles while it lasts",
    )
    consumer_backoff_max_seconds: float = Field(
        5.0, gt=0, description="the longest such pause: a consumer notices a store that "
        "is back within about this long",
    )
    consumer_stall_seconds: float = Field(
        60.0, gt=0, description="a consumer that has neither read nor finished a batch "
        "for this long is reported stalled (not ready)",
    )
    stream_retention_seconds: int = Field(
        3600, ge=0, description="acknowledged stream entries are kept this long, then "
        "trimmed; an entry a consumer group still needs is never trimmed",
    )
    trim_interval_seconds: float = Field(30.0, gt=0)
    consumer_retention_seconds: float = Field(
        3600, gt=0, description="a consumer name in a group that has not read for this long "
        "and holds no pending entries (its process is gone) is deleted by the housekeeping; "
        "one holding entries is left until they are reclaimed",
    )
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    stream_workers: int = Field(
        1, ge=1, le=32,
        description="processes consuming a service's streams (one consumer each, same "
        "group): `serve` runs the first and starts the others without HTTP",
    )
    metrics_dir: str = Field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "loopwise-metrics"),
        description="with stream_workers > 1, each service's processes write their "
        "metrics under <metrics_dir>/<service>-<port> (emptied when the service starts) "
        "and /metrics reports their sum",
    )

    # Routing and review.
    auto_accept_threshold: float = Field(0.9, ge=0.0, le=1.0)
    lease_seconds: int = Field(600, ge=1)
    task_retention_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="a finished review task (done, dropped, a gold "
        "task expired or skipped) is kept this long after its last change, then expires: "
        "a duplicate or late submit after that is refused as not handed, an adjudication "
        "of its item gets no payload; at least lease_seconds",
    )
    dropped_task_retention_seconds: int = Field(
        7 * 24 * 3600, ge=1, description="records of tasks dropped because a queue was "
        "full are kept this long",
    )
    overlap: int = Field(1, ge=1, le=5)

    # Model lifecycle.
    retrain_every: int = Field(50, ge=1, description="retrain after this many new non-auto labels")

    # Calls between services (HTTP, with a service token). Unset: a service that calls
    # another makes itself a short-lived `service` token at start and revokes it at stop.
    service_token: str | None = Field(None, description="bearer token for service calls")
    metrics_token: str | None = Field(
        None, description="bearer token Prometheus scrapes /metrics with (besides '*' tokens)")
    peer_timeout_seconds: float = Field(30.0, gt=0)

    # The HTTP door (shared.request_guard): bodies above these get 413 before any parsing.
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="largest request body")
    max_upload_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="largest file a route that takes one (a Label "
        "Studio import) accepts")

    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        """Accept plain ``postgresql://`` and ``sqlite://`` URLs and pick the async driver."""
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @model_validator(mode="after")
    def _task_outlives_its_lease(self) -> Settings:
        """A task must not expire while a labeler may still submit on time."""
        if self.task_retention_seconds < self.lease_seconds:
            raise ValueError(f"task_retention_seconds ({self.task_retention_seconds}) must "
                             f"be at least lease_seconds ({self.lease_seconds})")
        return self

    @property
    def cluster(self) -> bool:
        """Whether Redis is a cluster (shared.redisconn)."""
        return self.redis_cluster or self.redis_url.startswith("redis+cluster://")

    @property
    def shards(self) -> int:
        if self.stream_shards is not None:
            return self.stream_shards
        return 12 if self.cluster else 1

    def port_of(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def url_of(self, service: str) -> str:
        given = getattr(self, f"{service}_url", None)
        if given:
            return str(given).rstrip("/")
        return f"http://{self.host}:{self.port_of(service)}"


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""Fixtures for the real services: Redis and PostgreSQL.

``LOOPWISE_REDIS_URL`` / ``LOOPWISE_DATABASE_URL`` point at running servers
(CI sets them); otherwise testcontainers starts them where a Docker engine
exists. With ``LOOPWISE_REQUIRE_INTEGRATION=1`` a missing service fails the
run instead of skipping, so CI can never pass without the integration tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine, upgrade
from shared.redisconn import connect
from shared.settings import Settings
from tests.helpers import METRICS_TOKEN

ROOT = Path(__file__).resolve().parents[1]
# Several test runs may share a machine (CI, a developer's tree): give each its own
# ports with LOOPWISE_TEST_PORT_BASE and its own Redis database in LOOPWISE_REDIS_URL.
PORT_BASE = int(os.environ.get("LOOPWISE_TEST_PORT_BASE", "18000"))
TEST_PORTS = {"scorer": PORT_BASE + 1, "router": PORT_BASE + 2, "labels": PORT_BASE + 3,
              "quality": PORT_BASE + 4}


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _unavailable(what: str) -> None:
    message = (f"{what}: set LOOPWISE_{what.upper()}_URL or run a Docker engine for "
               "testcontainers")
    if os.environ.get("LOOPWISE_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message + " (LOOPWISE_REQUIRE_INTEGRATION=1: integration tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis the suite uses. With ``LOOPWISE_TEST_REDIS_CLUSTER=1`` (``make cluster``)
    a Redis Cluster of six nodes the suite starts on loopback (ports from
    ``LOOPWISE_TEST_PORT_BASE + 200``, cluster bus + 700), and the services run on it."""
    if os.environ.get("LOOPWISE_TEST_REDIS_CLUSTER") == "1":
        from loopwise.localcluster import LocalCluster

        cluster = LocalCluster(PORT_BASE + 200).start()
        before = os.environ.get("LOOPWISE_REDIS_URL")
        os.environ["LOOPWISE_REDIS_URL"] = cluster.url  # for Settings() made by the tests too
        try:
            yield cluster.url
        finally:
            cluster.stop()
            if before is None:
                os.environ.pop("LOOPWISE_REDIS_URL", None)
            else:
                os.environ["LOOPWISE_REDIS_URL"] = before
        return
    url = os.environ.get("LOOPWISE_REDIS_URL")
    if url:
        yield url
        return
    if not _docker_available():
        _unavailable("redis")
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7") as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("LOOPWISE_DATABASE_URL")
    if url:
        yield Settings(database_url=url).database_url
        return
    if not _docker_available():
        _unavailable("database")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16", driver="asyncpg") as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def settings(redis_url: str, database_url: str) -> Settings:
    upgrade(database_url)
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        scorer_port=TEST_PORTS["scorer"],
        router_port=TEST_PORTS["router"],
        labels_port=TEST_PORTS["labels"],
        quality_port=TEST_PORTS["quality"],
        reclaim_idle_ms=3000,
        retrain_every=40,
        metrics_token=METRICS_TOKEN,
    )


def service_env(settings: Settings) -> dict[str, str]:
    return {
        "LOOPWISE_REDIS_URL": settings.redis_url,
        "LOOPWISE_DATABASE_URL": settings.database_url,
        "LOOPWISE_SCORER_PORT": str(settings.scorer_port),
        "LOOPWISE_ROUTER_PORT": str(settings.router_port),
        "LOOPWISE_LABELS_PORT": str(settings.labels_port),
        "LOOPWISE_QUALITY_PORT": str(settings.quality_port),
        "LOOPWISE_RECLAIM_IDLE_MS": str(settings.reclaim_idle_ms),
        "LOOPWISE_RETRAIN_EVERY": str(settings.retrain_every),
        "LOOPWISE_LOG_LEVEL": "WARNING",
        "LOOPWISE_METRICS_TOKEN": METRICS_TOKEN,
        **({"LOOPWISE_STREAM_SHARDS": str(settings.stream_shards)}
           if settings.stream_shards else {}),
    }


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Settings]:
    """The four services, each its own process, as ``loopwise up`` runs them."""
    from loopwise.processes import ServiceGroup

    group = ServiceGroup(settings, env=service_env(settings), log_dir=ROOT / "var" / "test-logs")
    group.start(timeout=90)
    try:
        yield settings
    finally:
        group.stop()


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect(settings.redis_url, settings.cluster)
    yield client
    await client.aclose()


@pytest.fixture
def project() -> str:
    """A fresh project per test, so tests never see each other's data."""
    return f"t-{uuid.uuid4().hex[:12]}"

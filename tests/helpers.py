"""Helpers for the integration tests: tokens, waiting on consumer groups, HTTP clients."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from shared import sharding, streams
from shared.auth import create_token
from shared.bus import group_drained as group_idle
from shared.redisconn import connect
from shared.settings import Settings


async def token(engine, user: str, role: str, project: str) -> str:
    return await create_token(engine, user, role, project)


def client(settings: Settings, service: str, bearer: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.AsyncClient(base_url=settings.url_of(service), headers=headers, timeout=30)


METRICS_TOKEN = "test-metrics-token"


async def metrics_text(settings: Settings, service: str) -> str:
    """A service's /metrics, scraped as Prometheus does (with the metrics token)."""
    async with client(settings, service, settings.metrics_token) as http:
        r = await http.get("/metrics")
        assert r.status_code == 200, r.text
        return r.text


async def stream_entries(redis: aioredis.Redis, stream: str, shards: int | None = None,
                         **kw: Any) -> list[Any]:
    """XRANGE of a stream; of a sharded one, every shard's and the plain name's entries
    (each shard in order; the shards one after another)."""
    if stream not in streams.SHARDED:
        return list(await redis.xrange(stream, **kw))
    out: list[Any] = []
    for name in sharding.every_stream(stream, shards or Settings().shards):
        out += await redis.xrange(name, **kw)
    return out


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def groups_idle(redis: aioredis.Redis, *pairs: tuple[str, str], timeout: float = 60,
                      shards: int | None = None) -> None:
    """``shards``: how many shards the streams of ``redis`` have when it is not the
    session's Redis (a private single Redis has none, even in the cluster stage)."""
    async def idle() -> bool:
        return all([await group_idle(redis, s, g, shards) for s, g in pairs])

    await wait_for(idle, timeout, f"consumer groups {pairs} to drain")


def require_tool(name: str, package: str) -> str:
    """The path of a command-line tool the test needs; CI (LOOPWISE_REQUIRE_INTEGRATION=1)
    fails without it, elsewhere the test is skipped with the install command."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: apt-get install {package}"
        if os.environ.get("LOOPWISE_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool_test_rules(cases: dict, tmp_path) -> None:
    """Run ``promtool test rules`` on unit-test cases for the alert rules; fail with its
    output unless every case passes."""
    import subprocess

    import yaml

    promtool = require_tool("promtool", "prometheus")
    path = tmp_path / "rules_test.yml"
    path.write_text(yaml.safe_dump(cases))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


async def configure(settings: Settings, bearer: str, project: str, **changes: Any) -> dict:
    """Change a project's settings at their home (the labels service), then wait until
    every service that keeps a copy (router, scorer, quality) has taken the change."""
    async with client(settings, "labels", bearer) as http:
        r = await http.patch(f"/v1/projects/{project}", json=changes)
        assert r.status_code == 200, r.text
    redis = connect(settings.redis_url)
    try:
        await groups_idle(redis, *((streams.PROJECTS, group) for group in (
            streams.GROUP_ROUTER, streams.GROUP_SCORER, streams.GROUP_QUALITY)))
    finally:
        await redis.aclose()
    return r.json()

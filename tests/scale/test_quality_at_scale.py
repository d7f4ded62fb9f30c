"""The quality service at scale, end to end (issue 16): a project of 200,000 votes posted
on ``loopwise:labels``, the quality service running as its own process on Redis and
PostgreSQL, its consensus read back from the stream.

A stage of its own (``make scale``, marker ``scale``): about three minutes on two cores,
too long for ``make test``. Correctness only; the latency from the last vote of a burst to
its consensus is a figure of ``loopwise bench quality --e2e`` (BENCHMARKS.md), printed
here for the log, never asserted.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import redis.asyncio as aioredis

from bench.quality_e2e import (
    crowd_votes,
    drained,
    eligible,
    post,
    quality_process,
    restart_seconds,
    settle_project,
    watching,
)
from tests.conftest import PORT_BASE, ROOT
from tests.helpers import client, token, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.scale]
VOTES = int(os.environ.get("LOOPWISE_SCALE_VOTES", "201000"))
CRASH_VOTES = 30_000


async def human_votes(settings, engine, project) -> int:
    bearer = await token(engine, "reviewer-1", "reviewer", project)
    async with client(settings, "quality", bearer) as http:
        r = await http.get(f"/v1/projects/{project}/quality")
        assert r.status_code == 200, r.text
        return int(r.json()["label_events"].get("human", 0))


@contextlib.asynccontextmanager
async def own_database(settings):
    """A Redis database of the stage's own, flushed before and after: the 231,000 votes
    it posts on ``loopwise:labels`` must not stay behind as a backlog for the labels and
    scorer groups of whatever runs next on the shared database (the Label Studio stage
    timed out ingesting them)."""
    if settings.cluster:
        pytest.fail("the scale stage flushes a Redis database of its own: single Redis only")
    url = settings.redis_url.rsplit("/", 1)[0] + "/12"
    redis = aioredis.from_url(url)
    await redis.flushdb()
    try:
        yield url, redis
    finally:
        await redis.flushdb()
        await redis.aclose()


async def test_every_item_of_a_200k_vote_project_gets_its_consensus_through_the_streams(
    settings, engine, project
):
    async with own_database(settings) as (url, redis):
        await _at_scale(settings.model_copy(update={"quality_port": PORT_BASE + 50,
                                                    "redis_url": url}),
                        engine, redis, project)


async def _at_scale(own, engine, redis, project) -> None:
    votes = crowd_votes(VOTES // 3, "item-", seed=16)
    with quality_process(own, ROOT / "var" / "test-logs",
                         LOOPWISE_QUALITY_CHECKPOINT_INTERVAL_SECONDS="5") as group:
        async with watching(redis, project) as watcher:
            row = await settle_project(redis, watcher, project, votes, timeout=1500)
            print(f"\n{row['votes']:,} votes: every consensus published "
                  f"{row['all_consensus_s']:.1f} s after posting began")
            # Every item with two votes or more has its consensus, once per change, and
            # it is Dawid-Skene's: off a fit from scratch on the same votes for at most
            # 0.5% of the items (the incremental path between refits), as accurate.
            assert row["items"] == len(eligible(votes)) >= VOTES // 3 - 1000
            assert row["duplicate_events"] == 0
            assert row["differ_from_reference"] <= 0.005 * row["items"]
            assert row["accuracy"] >= row["reference_accuracy"] - 0.005
            assert await human_votes(own, engine, project) == len(votes)

            # SIGKILLed while it consumes more votes (checkpoints every 5 s, so the
            # crash falls between a checkpoint and the acknowledgements after it), then
            # started again: every vote counted once, every new item settled.
            more = crowd_votes(CRASH_VOTES // 3, "late-", seed=61)
            await post(redis, project, more, len(votes))
            async def partly_counted() -> bool:
                return await human_votes(own, engine, project) >= len(votes) + len(more) // 3

            await wait_for(partly_counted, 600, "a third of the late votes counted")
            seconds = restart_seconds(group)
            print(f"restarted in {seconds:.1f} s")
            await drained(redis, 600)
            await watcher.until(eligible(more), 600)
            assert await human_votes(own, engine, project) == len(votes) + len(more)
            assert watcher.duplicates == 0

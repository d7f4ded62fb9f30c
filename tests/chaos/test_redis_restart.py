"""Redis killed (SIGKILL) mid-stream and started again, while predictions stream in: once
with its append-only file, once coming back empty. On a redis-server of the test's own;
the label store is the suite's database (each test its own project).

With AOF the server runs ``appendfsync always``: every write is in the file (fsync'ed)
before Redis answers it, so a kill -9 loses nothing any client was told was done, and
every prediction must end as one auto label or one task. (``everysec``, Redis's default,
may lose the last second of acknowledged writes on a kill -9 or a power cut: entries a
producer was told were added, and acknowledgements or task writes the services made.)

Empty, what only Redis held is gone (unrouted predictions, queued tasks, unstored label
events): the predictions posted once it is back must each be accounted for exactly once,
those posted before at most once, and the consumers carry on with recreated groups.
The producer keeps posting through the outage, sending a chunk again when its reply was
lost (the predictions' event ids make a resend harmless).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared.auth import create_token
from shared.redisconn import connect
from tests.chaos.conftest import PORT_BASE, PrivateRedis, chaos_settings, metric, start_services
from tests.chaos.ledger import Producer, Reviewers, predictions, settle

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
PREDICTIONS = 40_000
RATE = 1000.0
DOWN_SECONDS = 5.0
KILL_AT = 0.4  # the share of the predictions posted when Redis is killed


async def _kill_mid_stream(server: PrivateRedis, producer: Producer, wipe: bool
                           ) -> tuple[float, float]:
    """Kill Redis when KILL_AT of the predictions are posted, keep it down a few seconds,
    start it again; (when it was killed, when it was back), monotonic."""
    await producer.wait_acked(KILL_AT * len(producer.items))
    server.kill()
    killed = time.monotonic()
    if wipe:
        server.wipe()
    await asyncio.sleep(DOWN_SECONDS)
    await asyncio.to_thread(server.start)
    return killed, time.monotonic()


@pytest.fixture
def aof_redis():
    server = PrivateRedis(PORT_BASE + 46, appendfsync="always")
    try:
        yield server
    finally:
        server.close()


async def test_nothing_is_lost_when_redis_with_aof_is_killed_and_restarted(
        aof_redis, settings, engine):
    chaos = chaos_settings(aof_redis.url, settings.database_url)
    project = f"aof-{uuid.uuid4().hex[:8]}"
    items = predictions(PREDICTIONS, auto_share=0.5, seed=46)
    group = start_services(chaos, "router", "labels")
    redis = connect(chaos.redis_url)
    tokens = {f"rev{n}": await create_token(engine, f"rev{n}", "labeler", project)
              for n in range(4)}
    producer = Producer(chaos.redis_url, project, items, rate=RATE)
    reviewers = Reviewers(chaos.url_of("router"), project, tokens)
    try:
        reviewing = asyncio.create_task(reviewers.run())
        _, (killed, back) = await asyncio.gather(
            producer.run(), _kill_mid_stream(aof_redis, producer, wipe=False))
        reviewers.stop.set()
        await reviewing
        acct = await settle(redis, engine, project, items, timeout=180,
                            submitted=reviewers.recorded)
        print(f"\nRedis (AOF, appendfsync always) down {back - killed:.1f} s: "
              f"{acct.summary()}; {producer.resent} chunks resent")
        assert not acct.problems(), acct.report()
        assert acct.auto + acct.tasks == PREDICTIONS
        assert acct.submits > 0
    finally:
        reviewers.stop.set()
        group.stop()
        await redis.aclose()


async def test_predictions_after_redis_comes_back_empty_are_all_routed(
        private_redis, settings, engine):
    chaos = chaos_settings(private_redis.url, settings.database_url)
    project = f"empty-{uuid.uuid4().hex[:8]}"
    items = predictions(PREDICTIONS, auto_share=0.5, seed=47)
    group = start_services(chaos, "router", "labels")
    redis = connect(chaos.redis_url)
    producer = Producer(chaos.redis_url, project, items, rate=RATE)
    try:
        _, (killed, back) = await asyncio.gather(
            producer.run(), _kill_mid_stream(private_redis, producer, wipe=True))
        before = producer.acked_between(0, killed)
        after = producer.acked_between(killed)
        assert len(before) + len(after) == PREDICTIONS
        acct = await settle(redis, engine, project, after, timeout=180, at_most_once=before)
        print(f"\nRedis down {back - killed:.1f} s, back empty: {acct.summary()} "
              f"({len(after):,} posted after the wipe, each exactly once; "
              f"{PREDICTIONS - acct.auto - acct.tasks:,} of the {len(before):,} before it "
              "gone with Redis)")
        assert not acct.problems(), acct.report()
        for service, stream in (("router", "loopwise:predictions"),
                                ("labels", "loopwise:labels")):
            assert metric(chaos, service, "loopwise_consumer_group_recreated_total",
                          stream=stream) >= 1
    finally:
        group.stop()
        await redis.aclose()

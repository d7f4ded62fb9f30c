"""A Redis Cluster master SIGKILLed while 50,000 predictions stream in: its replica takes
over and nothing is lost or duplicated.

On a cluster of the test's own (three masters, three replicas, no persistence: what a
node holds is in its memory and its replica's). The killed master is the one that holds
the project's shard, which is everything the router and the labels service touch for it:
the prediction stream shard, the router's keys and the label stream shard (one slot,
:mod:`shared.sharding`). Replication is asynchronous, so the producer counts a chunk as
sent only once a replica has it (``WAIT 1``) and sends it again otherwise (its event
ids make a resend harmless); the services need no such care, because everything one
handler changes lives on one master and a replica receives that master's writes in
order: whatever the failover loses is a suffix, the acknowledgements with it, and the
entries are delivered again. The killed node is started again once its replica has
taken over and rejoins as the new master's replica.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from loopwise.localcluster import LocalCluster
from shared import sharding, streams
from shared.redisconn import connect
from tests.chaos.conftest import PORT_BASE, chaos_settings, start_services
from tests.chaos.ledger import Producer, predictions, settle

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
PREDICTIONS = 50_000
RATE = 1000.0
KILL_AT = 0.4  # the share of the predictions posted when the master is killed


@pytest.fixture
def cluster():
    cluster = LocalCluster(PORT_BASE + 210).start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_master_killed_mid_stream_loses_and_duplicates_nothing(
        cluster, settings, engine):
    chaos = chaos_settings(cluster.url, settings.database_url)
    project = f"failover-{uuid.uuid4().hex[:8]}"
    stream = sharding.project_stream(streams.PREDICTIONS, project, chaos.shards)
    items = predictions(PREDICTIONS, auto_share=0.5, seed=61)
    group = start_services(chaos, "router", "labels")
    redis = connect(chaos.redis_url)
    producer = Producer(chaos.redis_url, project, items, rate=RATE, stream=stream, replicas=1)

    async def kill_and_fail_over() -> tuple[int, int, float]:
        await producer.wait_acked(KILL_AT * PREDICTIONS)
        dead = cluster.kill_master(stream)
        killed = time.monotonic()
        promoted = await asyncio.to_thread(cluster.wait_failover, stream, dead)
        took = time.monotonic() - killed
        await asyncio.to_thread(cluster.restart, dead)
        return dead, promoted, took

    try:
        _, (dead, promoted, took) = await asyncio.gather(producer.run(), kill_and_fail_over())
        acct = await settle(redis, engine, project, items, timeout=240, shards=chaos.shards)
        print(f"\nmaster :{dead} of {stream} killed at {KILL_AT:.0%} of {PREDICTIONS:,} "
              f"predictions; :{promoted} took over after {took:.1f} s; {acct.summary()}; "
              f"{producer.resent} chunks resent")
        assert dead != promoted
        assert not acct.problems(), acct.report()
        assert acct.auto + acct.tasks == PREDICTIONS
    finally:
        group.stop()
        await redis.aclose()

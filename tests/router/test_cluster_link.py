"""The router's scripts over the auto-pipelining link on a real Redis Cluster: each call
reaches the master of its slot, and a stale slot map (a slot that moved, a failover)
costs a redirect, not a wrong answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from loopwise.localcluster import LocalCluster
from services.router.queue import ReviewQueue, ScriptRunner
from shared import sharding
from shared.redisconn import connect
from tests.conftest import PORT_BASE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_url(settings) -> Iterator[str]:
    """The suite's cluster under ``make cluster``; else one of this module's own."""
    if settings.cluster:
        yield settings.redis_url
        return
    cluster = LocalCluster(PORT_BASE + 220).start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_client(cluster_url) -> AsyncIterator:
    client = connect(cluster_url)
    await client.initialize()  # type: ignore[attr-defined]
    yield client
    await client.aclose()


async def test_each_script_call_runs_on_the_master_of_its_keys_slot(cluster_client):
    runner = ScriptRunner(cluster_client)
    where = cluster_client.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INFO', 'server'):match("
        "'tcp_port:(%d+)')")
    try:
        ports = set()
        for shard in range(12):
            key = f"link-{uuid.uuid4().hex}:{sharding.tag(shard)}"
            port = await runner(where, [key], [str(shard)])
            assert int(port) == cluster_client.get_node_from_key(key).port
            assert await cluster_client.get(key) == str(shard).encode()
            ports.add(int(port))
        assert len(ports) == 3  # the twelve shards spread over the three masters
    finally:
        await runner.aclose()


async def test_a_stale_slot_map_is_followed_and_refreshed(cluster_client):
    runner = ScriptRunner(cluster_client)
    incr = cluster_client.register_script("return redis.call('INCR', KEYS[1])")
    key = f"link-stale-{uuid.uuid4().hex}"
    try:
        assert await runner(incr, [key], []) == 1
        manager = cluster_client.nodes_manager
        slot = cluster_client.keyslot(key)
        right = manager.slots_cache[slot]
        wrong = next(n for n in manager.nodes_cache.values()
                     if n.server_type == "primary" and n.name != right[0].name)
        manager.slots_cache[slot] = [wrong]  # as if the slot had moved since the map was read
        # The wrong master answers MOVED: the script did not run there; it runs once, where
        # the slot lives, and the map is read again for the next call.
        assert await runner(incr, [key], []) == 2
        assert await runner(incr, [key], []) == 3
        assert manager.slots_cache[slot][0].name == right[0].name
        assert await cluster_client.get(key) == b"3"
    finally:
        await runner.aclose()


async def test_the_review_queue_leases_and_submits_through_the_link(cluster_client):
    queue = ReviewQueue(cluster_client, prefix=f"lt{uuid.uuid4().hex[:6]}:", shards=12)
    project = f"link-{uuid.uuid4().hex[:6]}"
    shard = sharding.shard_of(project, 12)
    try:
        task_id = sharding.task_id(shard, uuid.uuid4().hex)
        assert (await queue.enqueue_rows([(task_id, project, "i1", 0.5, 1, "review",
                                           b"{}")]))[0] == 1
        got = await queue.next(project, "alice", 60)
        assert got is not None and got[0] == task_id
        outcome, _ = await queue.commit_submit(project, task_id, "alice", "e1",
                                               "lt:labels", '{"e": 1}')
        assert outcome == "recorded"
        assert await cluster_client.xlen(queue.labels_stream("lt:labels", shard)) == 1
        assert (await queue.commit_submit(project, task_id, "alice", "e2", "lt:labels",
                                          '{"e": 2}'))[0] == "duplicate"
    finally:
        await queue.aclose()

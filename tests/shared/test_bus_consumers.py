"""Dead consumers against real Redis: a group's consumer names of processes that are gone
are deleted after ``consumer_retention_seconds``, never one holding pending entries."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from shared.bus import Bus, Delivery
from shared.events import LabelEvent
from shared.wire import encode_event

pytestmark = pytest.mark.integration
GROUP = "test-dead-consumers"


async def _consumers(redis, stream: str) -> set[str]:
    return {c["name"].decode() for c in await redis.xinfo_consumers(stream, GROUP)}


async def test_idle_consumers_without_pending_entries_go_and_holders_stay_until_reclaimed(
        redis, settings):
    stream = f"loopwise:test-consumers-{uuid.uuid4().hex[:10]}"
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    entry = encode_event(LabelEvent(event_id=uuid.uuid4(), project="c", item_id="i",
                                    label="cat", labeler_id="alice", source="human",
                                    mode="blind").to_json())
    for _ in range(3):
        await redis.xadd(stream, entry)
    # "finished" read and acknowledged its entry; "holding" died with one pending.
    done = await redis.xreadgroup(GROUP, "finished", {stream: ">"}, count=1)
    await redis.xack(stream, GROUP, done[0][1][0][0])
    held = await redis.xreadgroup(GROUP, "holding", {stream: ">"}, count=1)

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        return None

    bus = Bus(settings.model_copy(update={"consumer_retention_seconds": 0.01}), "test")
    bus.consume(stream, GROUP, LabelEvent, handler)  # registered, not started
    own = bus._consumers[0].name
    mine = await redis.xreadgroup(GROUP, own, {stream: ">"}, count=1)  # this process's
    await redis.xack(stream, GROUP, mine[0][1][0][0])  # idle too, nothing pending
    await asyncio.sleep(0.05)  # every consumer idle longer than the retention
    before = REGISTRY.get_sample_value("loopwise_stream_consumers_deleted_total",
                                       {"stream": stream, "group": GROUP}) or 0
    try:
        assert await bus.forget_dead_consumers(stream) == ["finished"]
        assert await _consumers(redis, stream) == {"holding", own}
        assert REGISTRY.get_sample_value("loopwise_stream_consumers_deleted_total",
                                         {"stream": stream, "group": GROUP}) == before + 1

        # A live consumer reclaims the holder's entry; the holder goes at the next pass.
        await redis.xautoclaim(stream, GROUP, own, min_idle_time=0, start_id="0")
        await asyncio.sleep(0.05)
        assert await bus.forget_dead_consumers(stream) == ["holding"]
        assert await _consumers(redis, stream) == {own}
        assert held[0][1][0][0] in {p["message_id"] for p in await redis.xpending_range(
            stream, GROUP, min="-", max="+", count=10)}  # still pending, with its claimer
    finally:
        await bus.close()
        await redis.delete(stream)


async def test_consumers_are_kept_within_their_retention(redis, settings):
    stream = f"loopwise:test-consumers-{uuid.uuid4().hex[:10]}"
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    await redis.xadd(stream, {"data": "{}"})
    read = await redis.xreadgroup(GROUP, "recent", {stream: ">"}, count=1)
    await redis.xack(stream, GROUP, read[0][1][0][0])

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        return None

    bus = Bus(settings, "test")  # the default: an hour
    bus.consume(stream, GROUP, LabelEvent, handler)
    try:
        assert await bus.forget_dead_consumers(stream) == []
        assert await _consumers(redis, stream) == {"recent"}
    finally:
        await bus.close()
        await redis.delete(stream)

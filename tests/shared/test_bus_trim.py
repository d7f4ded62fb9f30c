"""Trimming streams against real Redis: acknowledged and old entries go, needed ones stay."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client import REGISTRY

from shared import streams
from shared.bus import Bus, Delivery
from shared.events import LabelEvent
from shared.wire import encode_event
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def _entry(i: int) -> dict[str, str]:
    return encode_event(LabelEvent(event_id=uuid.uuid4(), project="trim", item_id=f"i{i}",
                                   label="cat", labeler_id="alice", source="human",
                                   mode="blind").to_json())


async def test_trim_keeps_what_any_group_still_needs(redis, settings):
    stream = f"loopwise:test-trim-{uuid.uuid4().hex[:10]}"
    old = int(time.time() * 1000) - 2 * 3_600_000  # two hours ago
    ids = [await redis.xadd(stream, _entry(i), id=f"{old + i}-0") for i in range(6)]
    ids += [await redis.xadd(stream, _entry(6 + i)) for i in range(4)]  # recent ones
    await redis.xgroup_create(stream, "done", id="0")
    await redis.xgroup_create(stream, "lagging", id="0")
    bus = Bus(settings.model_copy(update={"stream_retention_seconds": 3600}), "test")
    try:
        read = await redis.xreadgroup("done", "c", {stream: ">"}, count=100)
        await redis.xack(stream, "done", *[i for i, _ in read[0][1]])
        read = await redis.xreadgroup("lagging", "c", {stream: ">"}, count=5)
        await redis.xack(stream, "lagging", *ids[:3])  # ids[3] and ids[4] are pending
        assert await bus.trim(stream, approximate=False) == 3
        assert [i for i, _ in await redis.xrange(stream)] == ids[3:]
        # On the way it exports where each group stands, for the lag alert.
        def gauge(name: str, **labels: str) -> float | None:
            return REGISTRY.get_sample_value(name, {"stream": stream, **labels})

        assert gauge("loopwise_stream_lag", group="lagging") == 5
        assert gauge("loopwise_stream_lag", group="done") == 0
        assert gauge("loopwise_stream_pending", group="lagging") == 2
        assert gauge("loopwise_stream_length") == 7

        await redis.xack(stream, "lagging", *ids[3:5])  # now it needs ids[5] on
        assert await bus.trim(stream, approximate=False) == 2
        assert [i for i, _ in await redis.xrange(stream)] == ids[5:]

        # Everything read and acknowledged: the retention keeps the recent entries.
        read = await redis.xreadgroup("lagging", "c", {stream: ">"}, count=100)
        await redis.xack(stream, "lagging", *[i for i, _ in read[0][1]])
        assert await bus.trim(stream, approximate=False) == 1  # ids[5], two hours old
        assert [i for i, _ in await redis.xrange(stream)] == ids[6:]
    finally:
        await bus.close()
        await redis.delete(stream)


async def test_a_consuming_bus_trims_its_streams_in_the_background(redis, settings):
    stream = f"loopwise:test-trim-{uuid.uuid4().hex[:10]}"
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    handled: list[str] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        handled.extend(d.entry_id for d in batch)

    bus = Bus(settings.model_copy(update={"stream_retention_seconds": 0,
                                          "trim_interval_seconds": 0.2, "poll_ms": 20}), "test")
    bus.consume(stream, "g", LabelEvent, handler)
    await bus.start()
    try:
        pipe = redis.pipeline(transaction=False)
        for i in range(1000):
            pipe.xadd(stream, _entry(i))
        await pipe.execute()

        async def trimmed() -> bool:  # approximate trimming drops whole nodes of 100
            return len(handled) == 1000 and await redis.xlen(stream) < 100

        await wait_for(trimmed, timeout=30, what="the consumed entries to be trimmed")
    finally:
        await bus.close()
        await redis.delete(stream)


async def test_streams_without_consumers_are_capped(redis, settings, monkeypatch):
    stream = f"loopwise:test-capped-{uuid.uuid4().hex[:10]}"
    monkeypatch.setitem(streams.CAPPED, stream, 100)
    bus = Bus(settings, "test")
    try:
        event = LabelEvent(event_id=uuid.uuid4(), project="trim", item_id="x", label="cat",
                           labeler_id="alice", source="human", mode="blind")
        for _ in range(10):
            await bus.publish(stream, [event] * 100)
        assert 100 <= await redis.xlen(stream) < 300  # approximate: whole nodes go
    finally:
        await bus.close()
        await redis.delete(stream)


async def test_one_pass_trims_everything_retention_lets_go_at_any_rate(redis, settings):
    """Redis stops an approximate XTRIM after 100 nodes (10,000 entries) unless told
    otherwise; above ~333 entries/s per 30 s pass that let a stream grow for ever."""
    stream = f"loopwise:test-trim-{uuid.uuid4().hex[:10]}"
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    entry = _entry(0)
    for _ in range(10):
        pipe = redis.pipeline(transaction=False)
        for _ in range(5_000):
            pipe.xadd(stream, entry)
        await pipe.execute()
    while read := await redis.xreadgroup("g", "c", {stream: ">"}, count=10_000):
        await redis.xack(stream, "g", *[i for i, _ in read[0][1]])
    bus = Bus(settings.model_copy(update={"stream_retention_seconds": 0}), "test")
    try:
        trimmed = await bus.trim(stream)
        left = await redis.xlen(stream)
        assert trimmed + left == 50_000
        assert left < 100  # approximate: at most the newest node stays
    finally:
        await bus.close()
        await redis.delete(stream)

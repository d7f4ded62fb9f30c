"""A consumer group a service creates starts at the stream's first entry: what producers
wrote before the service first started is consumed, not skipped (against real Redis)."""

from __future__ import annotations

import uuid

import pytest

from shared.bus import Bus, Delivery
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


async def test_entries_written_before_the_first_start_are_consumed(redis, settings: Settings):
    stream = f"loopwise:test-first-start-{uuid.uuid4().hex[:10]}"
    early = [LabelEvent(project="early", item_id=f"i{n}", label="cat", labeler_id="amy",
                        source="human", mode="blind") for n in range(3)]
    for event in early:  # the stream exists, no group yet: a producer that started first
        await redis.xadd(stream, encode_event(event.to_json()))
    seen: list[str] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        seen.extend(d.event.item_id for d in batch)

    bus = Bus(settings.model_copy(update={"poll_ms": 20}), "test")
    bus.consume(stream, "first-start", LabelEvent, handler)
    await bus.start()
    try:
        async def all_seen() -> bool:
            return sorted(seen) == ["i0", "i1", "i2"]

        await wait_for(all_seen, 10, "the entries written before the group existed")
        groups = await redis.xinfo_groups(stream)
        assert groups[0]["lag"] == 0 and groups[0]["pending"] == 0
    finally:
        await bus.close()
        await redis.delete(stream)
    # A group that exists keeps its position: a restart does not replay what was acked.
    await redis.xadd(stream, encode_event(early[0].to_json()))
    await redis.xgroup_create(stream, "kept", id="$")
    again: list[str] = []

    async def second(batch: list[Delivery[LabelEvent]]) -> None:
        again.extend(d.event.item_id for d in batch)

    bus = Bus(settings.model_copy(update={"poll_ms": 20}), "test")
    bus.consume(stream, "kept", LabelEvent, second)
    await bus.start()
    try:
        late = LabelEvent(project="early", item_id="late", label="cat", labeler_id="amy",
                          source="human", mode="blind")
        await redis.xadd(stream, encode_event(late.to_json()))

        async def late_seen() -> bool:
            return again == ["late"]

        await wait_for(late_seen, 10, "the entry written after the group's position")
    finally:
        await bus.close()
        await redis.delete(stream)


async def test_a_group_with_an_unknown_lag_is_not_drained_until_it_was_handed_the_last_entry(
        redis):
    """Redis reports no lag once an entry after the group's position was deleted (or
    trimmed); unread entries must not look drained then."""
    from shared.bus import group_drained

    stream = f"loopwise:test-lag-{uuid.uuid4().hex[:8]}"
    ids = [await redis.xadd(stream, {"data": "{}"}) for _ in range(10)]
    await redis.xgroup_create(stream, "g", id="0")
    try:
        read = await redis.xreadgroup("g", "c", {stream: ">"}, count=5)
        await redis.xack(stream, "g", *[i for i, _ in read[0][1]])
        await redis.xdel(stream, ids[7])
        [info] = await redis.xinfo_groups(stream)
        assert info["lag"] is None  # what Redis says after the delete
        assert not await group_drained(redis, stream, "g")
        read = await redis.xreadgroup("g", "c", {stream: ">"}, count=10)
        await redis.xack(stream, "g", *[i for i, _ in read[0][1]])
        assert await group_drained(redis, stream, "g")
    finally:
        await redis.delete(stream)

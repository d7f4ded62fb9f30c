"""Reclaimed entries against real Redis: a failing entry holds no other back, and one that
keeps failing is dead-lettered with its error after ``max_deliveries``."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from shared import streams
from shared.bus import Bus, Delivery
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
GROUP = "test-reclaim"


def _label(item: str) -> LabelEvent:
    return LabelEvent(event_id=uuid.uuid4(), project="reclaim", item_id=item, label="cat",
                      labeler_id="alice", source="human", mode="blind")


@pytest.fixture
async def consuming(redis, settings: Settings
                    ) -> AsyncIterator[Callable[..., object]]:
    """Start a bus on a stream of its own with ``handler``; returns the stream name."""
    buses: list[Bus] = []
    names: list[str] = []

    async def start(handler, max_deliveries: int = 3, before=None) -> str:
        stream = f"loopwise:test-reclaim-{uuid.uuid4().hex[:10]}"
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        if before is not None:  # what happened to the stream before this consumer started
            await before(stream)
        bus = Bus(settings.model_copy(update={
            "reclaim_idle_ms": 150, "poll_ms": 20, "max_deliveries": max_deliveries}), "test")
        bus.consume(stream, GROUP, LabelEvent, handler)
        await bus.start()
        buses.append(bus)
        names.append(stream)
        return stream

    yield start
    for bus in buses:
        await bus.close()
    if names:
        await redis.delete(*names)


async def _publish(redis, stream: str, events: list[LabelEvent]) -> list[str]:
    pipe = redis.pipeline(transaction=True)  # one batch for the consumer
    for event in events:
        pipe.xadd(stream, encode_event(event.to_json()))
    return [i.decode() for i in await pipe.execute()]


async def _pending(redis, stream: str) -> int:
    return int((await redis.xpending(stream, GROUP))["pending"])


async def _dead_letters(redis, stream: str) -> list[dict]:
    rows = await redis.xrevrange(streams.DEADLETTER, count=200)
    letters = [orjson.loads(fields[b"data"]) for _, fields in rows]
    return [d for d in letters if d["stream"] == stream]


async def test_an_entry_that_keeps_failing_is_dead_lettered_and_holds_no_other_back(
        redis, consuming):
    calls: Counter[str] = Counter()
    handled: list[str] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        calls.update(d.event.item_id for d in batch)
        if any(d.event.item_id == "poison" for d in batch):
            raise RuntimeError("cannot store this one")
        handled.extend(d.event.item_id for d in batch)

    stream = await consuming(handler, max_deliveries=3)
    ids = await _publish(redis, stream, [_label("a"), _label("poison"), _label("b")])

    async def settled() -> bool:
        return await _pending(redis, stream) == 0 and bool(await _dead_letters(redis, stream))

    await wait_for(settled, timeout=30, what="the poison entry to be dead-lettered")
    assert sorted(handled) == ["a", "b"]  # each stored once, after the batch that failed
    [dead] = await _dead_letters(redis, stream)
    assert dead["entry_id"] == ids[1] and dead["group"] == GROUP
    assert "all 3 deliveries" in dead["reason"]
    assert "RuntimeError: cannot store this one" in dead["reason"]
    assert orjson.loads(dead["fields"]["data"])["item_id"] == "poison"  # the original entry
    # Delivery 1 in its batch; delivery 2 reclaimed with the others as a batch, then alone
    # (that batch is split); delivery 3 alone: the limit, dead-lettered.
    assert calls["poison"] == 4


async def test_an_entry_that_fails_once_is_retried_not_dead_lettered(redis, consuming):
    failures = Counter({"flaky": 1})
    handled: list[str] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        for d in batch:
            if failures[d.event.item_id] > 0:
                failures[d.event.item_id] -= 1
                raise ConnectionError("the database went away for a moment")
        handled.extend(d.event.item_id for d in batch)

    stream = await consuming(handler)
    await _publish(redis, stream, [_label("flaky"), _label("c")])

    async def settled() -> bool:  # pending is 0 before the first read too: wait for both
        return len(handled) >= 2 and await _pending(redis, stream) == 0

    await wait_for(settled, timeout=30, what="the retried entries to be stored and acked")
    assert sorted(handled) == ["c", "flaky"]
    assert await _dead_letters(redis, stream) == []


async def test_entries_a_dead_consumer_left_pending_are_reclaimed_in_batches(redis, consuming):
    """Work left pending (a consumer that died, a batch that failed) comes back a batch at
    a time (XAUTOCLAIM with the batch size), not one entry per claim."""
    batches: list[int] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        batches.append(len(batch))

    async def a_consumer_read_them_and_died(stream: str) -> None:
        await _publish(redis, stream, [_label(f"i{n}") for n in range(120)])
        await redis.xreadgroup(GROUP, "doomed", {stream: ">"}, count=200)
        assert await _pending(redis, stream) == 120

    stream = await consuming(handler, before=a_consumer_read_them_and_died)

    async def settled() -> bool:
        return await _pending(redis, stream) == 0

    await wait_for(settled, timeout=30, what="the pending entries to be reclaimed")
    assert batches == [120]

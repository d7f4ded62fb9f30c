"""A store that is down is nobody's entry's fault (against real Redis): the consumer holds
its batch, backs off, and settles it whole once the store is back; the outage never counts
towards an entry's delivery limit, and only an entry whose own content fails is
dead-lettered."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from shared import streams
from shared.bus import Bus, Delivery
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
GROUP = "test-outage"


def _label(item: str) -> LabelEvent:
    return LabelEvent(event_id=uuid.uuid4(), project="outage", item_id=item, label="cat",
                      labeler_id="alice", source="human", mode="blind")


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_outage_holds_the_batch_and_counts_against_no_entry(redis, settings: Settings):
    stream = f"loopwise:test-outage-{uuid.uuid4().hex[:10]}"
    database_up = asyncio.Event()
    calls: list[list[str]] = []
    stored: list[str] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        items = [d.event.item_id for d in batch]
        calls.append(items)
        if not database_up.is_set():  # what SQLAlchemy raises when PostgreSQL is down
            raise OperationalError("INSERT ...", {}, ConnectionRefusedError(111, "refused"))
        if "poison" in items:
            raise ValueError("this label breaks a constraint")
        stored.extend(items)

    # A short idle time: without the consumer keeping its entries, the reclaiming read
    # would claim them (a delivery each time) many times over during the outage.
    bus = Bus(settings.model_copy(update={
        "poll_ms": 20, "reclaim_idle_ms": 150, "max_deliveries": 2,
        "consumer_backoff_seconds": 0.02, "consumer_backoff_max_seconds": 0.1}), "test")
    bus.consume(stream, GROUP, LabelEvent, handler)
    await bus.start()
    backoffs = _sample("loopwise_consumer_backoffs_total", service="test", stream=stream,
                       reason="infrastructure")
    try:
        events = [_label(f"i{n}") for n in range(40)] + [_label("poison")]
        pipe = redis.pipeline(transaction=True)  # one batch
        for event in events:
            pipe.xadd(stream, encode_event(event.to_json()))
        await pipe.execute()

        async def failing_a_while() -> bool:
            return len(calls) >= 5
        await wait_for(failing_a_while, 10, "the handler to fail a few times")
        await asyncio.sleep(0.6)  # four times the idle time after which entries are claimed
        [consumer] = bus.consumers
        assert consumer.status(time.monotonic(), 60) == "backoff"
        assert _sample("loopwise_consumer_up", service="test", stream=stream, group=GROUP) == 0
        rows = await redis.xpending_range(stream, GROUP, "-", "+", 100)
        assert len(rows) == 41
        assert {int(r["times_delivered"]) for r in rows} == {1}  # the outage added nothing
        assert all(len(c) == 41 for c in calls)  # the batch is tried whole, never split
        assert _sample("loopwise_events_reclaimed_total", service="test", stream=stream) == 0

        database_up.set()

        async def settled() -> bool:
            return int((await redis.xpending(stream, GROUP))["pending"]) == 0
        await wait_for(settled, 30, "the entries to be settled")
        assert sorted(stored) == sorted(f"i{n}" for n in range(40))  # each once
        letters = [orjson.loads(f[b"data"]) for _, f in
                   await redis.xrevrange(streams.DEADLETTER, count=200)]
        [dead] = [d for d in letters if d["stream"] == stream]
        # Delivery 1 failed on its content after the outage, delivery 2 (reclaimed) too.
        assert orjson.loads(dead["fields"]["data"])["item_id"] == "poison"
        assert "all 2 deliveries" in dead["reason"] and "ValueError" in dead["reason"]
        assert _sample("loopwise_consumer_backoffs_total", service="test", stream=stream,
                       reason="infrastructure") > backoffs
        assert consumer.status(time.monotonic(), 60) == "consuming"
    finally:
        await bus.close()
        await redis.delete(stream)

"""A consumer group or stream that disappears (Redis restarted empty, a failover to an
empty replica, a flush) is recreated: the consumer says so and goes on consuming."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from shared import metrics
from shared.bus import Bus, Delivery
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
GROUP = "test-recovery"


def _recreated(stream: str) -> float:
    return REGISTRY.get_sample_value("loopwise_consumer_group_recreated_total",
                                     {"stream": stream, "group": GROUP}) or 0.0


@pytest.mark.parametrize("disappearance", ["group destroyed", "stream deleted"])
async def test_a_vanished_group_is_recreated_and_consumption_goes_on(
        redis, settings: Settings, disappearance: str):
    stream = f"loopwise:test-recovery-{uuid.uuid4().hex[:10]}"
    seen: list[str] = []

    async def handler(batch: list[Delivery[LabelEvent]]) -> None:
        seen.extend(d.event.item_id for d in batch)

    def label(item: str) -> dict:
        return encode_event(LabelEvent(project="recovery", item_id=item, label="cat",
                                       labeler_id="amy", source="human",
                                       mode="blind").to_json())

    bus = Bus(settings.model_copy(update={"poll_ms": 20}), "test")
    bus.consume(stream, GROUP, LabelEvent, handler)
    await bus.start()
    try:
        await redis.xadd(stream, label("before"))

        async def seen_before() -> bool:
            return seen == ["before"]
        await wait_for(seen_before, 10, "the first entry")
        await bus.trim(stream)
        metrics.STREAM_LAG.labels(stream, GROUP).set(12345)  # a value from before the loss
        if disappearance == "group destroyed":
            await redis.xgroup_destroy(stream, GROUP)
        else:
            await redis.delete(stream)
        await redis.xadd(stream, label("after"))

        async def seen_after() -> bool:
            return "after" in seen
        await wait_for(seen_after, 10, "the entry written after the group was gone")
        # The new group starts at the stream's first entry: what the stream still holds is
        # read again (a redelivery, harmless), nothing after the loss is skipped.
        again = ["before"] if disappearance == "group destroyed" else []
        assert seen == ["before", *again, "after"]
        assert _recreated(stream) == 1
        [consumer] = bus.consumers
        assert consumer.recreated == 1
        lag = REGISTRY.get_sample_value("loopwise_stream_lag", {"stream": stream, "group": GROUP})
        assert lag != 12345  # forgotten when the group was recreated, then measured anew
        await bus.trim(stream)
        assert REGISTRY.get_sample_value(
            "loopwise_stream_lag", {"stream": stream, "group": GROUP}) == 0
    finally:
        await bus.close()
        await redis.delete(stream)

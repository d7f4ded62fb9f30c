"""At-least-once delivery against the running services: duplicates and dead consumers."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from services.labels.tables import label_events
from shared import streams
from shared.events import LabelEvent
from shared.wire import encode_event
from tests.helpers import groups_idle, wait_for

pytestmark = pytest.mark.integration


def _label(project: str, item: str) -> LabelEvent:
    return LabelEvent(event_id=uuid.uuid4(), project=project, item_id=item, label="cat",
                      labeler_id="alice", source="human", mode="blind")


async def _stored(engine, project: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(label_events).where(
            label_events.c.project == project))).scalar_one()


async def test_a_resent_event_is_stored_once(services, engine, redis, project):
    event = _label(project, "i1")
    for _ in range(3):
        await redis.xadd(streams.LABELS, encode_event(event.to_json()))
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    assert await _stored(engine, project) == 1


async def test_entries_a_dead_consumer_left_pending_are_reclaimed(services, engine, redis,
                                                                  project):
    """A consumer read an entry and died before acking: another consumer must finish it."""
    event = _label(project, "i2")
    # Added and read by the doomed consumer in one step, before anyone else (a script: one
    # key, so on a Redis Cluster too).
    delivered = await redis.eval(
        "redis.call('XADD', KEYS[1], '*', 'data', ARGV[1]) "
        "return redis.call('XREADGROUP', 'GROUP', ARGV[2], 'doomed-consumer', 'COUNT', 1, "
        "'STREAMS', KEYS[1], '>')",
        1, streams.LABELS, event.to_json(), streams.GROUP_LABELS)
    assert delivered and delivered[0][1], "the doomed consumer should hold the entry"
    pending = await redis.xpending_range(streams.LABELS, streams.GROUP_LABELS, "-", "+", 10,
                                         consumername="doomed-consumer")
    assert len(pending) == 1
    assert await _stored(engine, project) == 0

    async def stored() -> bool:
        return await _stored(engine, project) == 1

    await wait_for(stored, timeout=30, what="the reclaimed entry to be stored")
    await wait_for(lambda: _no_pending(redis), timeout=10, what="the entry to be acked")


async def _no_pending(redis) -> bool:
    pending = await redis.xpending_range(streams.LABELS, streams.GROUP_LABELS, "-", "+", 10,
                                         consumername="doomed-consumer")
    return not pending

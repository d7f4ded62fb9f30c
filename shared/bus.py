"""Stream I/O: publish events in the wire format; consume streams in batches.

Each (stream, consumer group) a service consumes is read by one
:class:`shared.consumer.StreamConsumer` task: XREADGROUP in batches, acknowledged only
when the handler returns, entries left pending reclaimed in batches (XAUTOCLAIM), bad
entries and poison entries dead-lettered, infrastructure failures waited out with
backoff and never held against the entries, a vanished group recreated. The bus owns
those tasks (they stop before the service's other background work) and the
housekeeping of the streams they read (trimming, lag and pending gauges).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel

from shared import metrics, sharding, streams
from shared.consumer import (
    BatchHandler,
    Delivery,
    StreamConsumer,
    body_error,
    dead_letter,
    publish_dead,
    validation_reason,
)
from shared.events import Event
from shared.logs import get_logger
from shared.readiness import ConsumerHealth
from shared.redisconn import client_for
from shared.retention import GroupPosition, trim_point
from shared.settings import Settings
from shared.supervisor import Supervisor
from shared.wire import encode_event, text

# An event model, or a RootModel over a union of them (shared.events.QualityEvent).
E = TypeVar("E", bound=BaseModel)
log = get_logger(__name__)
# Entries one XTRIM call may remove (whole stream nodes of 100): a few milliseconds of
# Redis' time a call; a pass repeats the call until the stream is down to its trim point.
TRIM_CALL_LIMIT = 100_000
CONSUMER_GAUGE_SECONDS = 1.0  # loopwise_consumer_up's refresh in multiprocess mode

# KEYS: a stream. ARGV: a group, idle ms, then the consumer names never to delete (this
# process's). Deletes the group's consumers idle longer than that which hold no pending
# entries (XGROUP DELCONSUMER would drop them), in one atomic step so that none can take
# an entry between the look and the deletion. Returns the names deleted.
_FORGET_DEAD_CONSUMERS = """
local own = {}
for i = 3, #ARGV do own[ARGV[i]] = true end
local gone = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for j = 1, #row, 2 do c[row[j]] = row[j + 1] end
  if not own[c.name] and c.pending == 0 and c.idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c.name)
    gone[#gone + 1] = c.name
  end
end
return gone
"""
__all__ = [
    "BatchHandler",
    "Bus",
    "Delivery",
    "body_error",
    "group_drained",
    "publish",
    "validation_reason",
]


async def group_drained(redis: aioredis.Redis, stream: str, group: str,
                        shards: int | None = None) -> bool:
    """True when the consumer group has read everything and acknowledged it all; for a
    sharded stream, on every shard and the plain name (``shards``: the settings')."""
    if stream in streams.SHARDED:
        count = shards if shards is not None else Settings().shards
        for name in sharding.every_stream(stream, count):
            if not await _drained(redis, name, group):
                return False
        return True
    return await _drained(redis, stream, group)


async def _drained(redis: aioredis.Redis, stream: str, group: str) -> bool:
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:
        return False
    for g in groups:
        name = text(g["name"])
        if name != group:
            continue
        if int(g.get("pending", 0)) != 0:
            return False
        if g.get("lag") is not None:
            return int(g["lag"]) == 0
        # Redis cannot tell the lag once entries were trimmed or deleted behind the group:
        # drained means the group has been handed the stream's newest entry.
        last = (await redis.xinfo_stream(stream))["last-generated-id"]
        return text(g["last-delivered-id"]) == text(last)
    return False


async def publish(redis: aioredis.Redis, stream: str, events: Sequence[Event],
                  shards: int = 1) -> list[str]:
    """XADD each event as ``data=<json>``; one round trip for the whole batch (a cluster
    client splits it per node). An event of a sharded stream goes to its project's shard
    (:mod:`shared.sharding`). A module function, so that a command without a running
    service publishes the same way."""
    if not events:
        return []
    # Streams nobody consumes (dead letters, model history) are capped instead of
    # trimmed behind consumer groups; approximate, so the cap costs nothing.
    cap = streams.CAPPED.get(stream)
    pipe = redis.pipeline(transaction=False)
    sharded = stream in streams.SHARDED
    for event in events:
        name = (sharding.project_stream(stream, event.project, shards)  # type: ignore[attr-defined]
                if sharded else stream)
        pipe.xadd(name, encode_event(event.to_json()), maxlen=cap, approximate=True)
    ids = await pipe.execute()
    return [text(i) for i in ids]


class Bus:
    """One per process: the stream consumers it runs, a redis client for publishing.

    Its housekeeping (trimming the consumed streams) runs on ``supervisor``, in every
    process; without one the bus keeps a supervisor of its own and stops it on close.
    """

    def __init__(self, settings: Settings, service: str,
                 supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.service = service
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor or Supervisor(service)
        self.redis: aioredis.Redis = client_for(settings)
        self._consumers: list[StreamConsumer[Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._forget_dead = self.redis.register_script(_FORGET_DEAD_CONSUMERS)

    @property
    def consumers(self) -> list[ConsumerHealth]:
        """What each consumer is doing, for readiness and ``loopwise_consumer_up``."""
        return [c.health for c in self._consumers]

    async def start(self) -> None:
        # A new consumer group starts at the stream's first entry, not its newest: entries
        # a producer wrote before the service first started are consumed, not skipped
        # forever with a lag of 0; a service that starts after a project was configured
        # still learns its settings. A group that exists keeps its position.
        for consumer in self._consumers:
            await consumer.ensure_group()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(c.run(), name=f"{self.service}:consume {c.stream}")
                       for c in self._consumers]
        if self._consumers:
            self.supervisor.every("stream trim", self.settings.trim_interval_seconds,
                                  self._trim_consumed, immediately=True, each_process=True)
        if self._consumers and metrics.multiprocess():
            # A callback gauge cannot cross processes: each writes its consumers' state.
            self.supervisor.every("consumer gauges", CONSUMER_GAUGE_SECONDS,
                                  self._export_consumer_up, immediately=True,
                                  each_process=True)

    async def stop_consuming(self) -> None:
        """Stop reading the streams (publishing still works until ``close``). A batch in
        its handler is cancelled; its entries stay pending and are reclaimed."""
        tasks, self._tasks = self._tasks, []
        while tasks:
            for task in tasks:
                task.cancel()
            # Cancelled again until they end (a client may turn a cancellation into an
            # error of its own, which the consumer then waits out).
            await asyncio.wait(tasks, timeout=0.1)
            tasks = [t for t in tasks if not t.done()]

    async def close(self) -> None:
        await self.stop_consuming()
        if self._own_supervisor:
            await self.supervisor.stop()
        await self.redis.aclose()

    async def trim(self, stream: str, approximate: bool = True) -> int:
        """Drop the entries every consumer group has acknowledged and the retention
        no longer keeps (:func:`shared.retention.trim_point`); how many went. Exports
        each group's lag and pending count and the stream's length on the way; a group
        that is gone, or whose lag Redis cannot tell, has no lag series rather than a
        stale one."""
        try:
            groups = await self.redis.xinfo_groups(stream)
        except aioredis.ResponseError:  # no such stream (yet, or any more)
            groups = []
        gone = {c.group for c in self._consumers if c.stream == stream} - {
            text(g["name"]) for g in groups}
        for group in gone:
            metrics.forget(metrics.STREAM_LAG, stream, group)
            metrics.forget(metrics.STREAM_PENDING, stream, group)
        if not groups:
            metrics.STREAM_LENGTH.labels(stream).set(0)
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for g in groups:
            pipe.xpending(stream, g["name"])
        positions = []
        for g, p in zip(groups, await pipe.execute(), strict=True):
            name = text(g["name"])
            positions.append(GroupPosition(
                name=name, last_delivered=text(g["last-delivered-id"]),
                oldest_pending=text(p["min"]) if p["pending"] else None))
            metrics.STREAM_PENDING.labels(stream, name).set(int(p["pending"]))
            if g.get("lag") is not None:  # Redis cannot always tell (7.0+ only)
                metrics.STREAM_LAG.labels(stream, name).set(int(g["lag"]))
            else:
                metrics.forget(metrics.STREAM_LAG, stream, name)
        point = trim_point(positions, int(time.time() * 1000),
                           self.settings.stream_retention_seconds * 1000)
        trimmed = 0
        if point is not None:
            trimmed = await self._trim_to(stream, point, approximate)
            if trimmed:
                metrics.STREAM_TRIMMED.labels(stream).inc(trimmed)
        metrics.STREAM_LENGTH.labels(stream).set(int(await self.redis.xlen(stream)))
        return trimmed

    async def _export_consumer_up(self) -> None:
        for consumer in self._consumers:
            consumer.export_up()

    async def _trim_to(self, stream: str, point: str, approximate: bool) -> int:
        """XTRIM MINID until nothing more goes; how many went.

        An approximate XTRIM stops after ``100 × stream-node-max-entries`` entries (10,000
        by default) unless given a LIMIT: one pass every 30 s then kept up with no more
        than ~333 entries/s, and a faster stream grew for ever though nothing lagged.
        Calls of at most ``TRIM_CALL_LIMIT`` entries (whole nodes, so each is short and
        Redis serves others in between) repeated until one trims nothing keep up with any
        rate; the point is fixed for the pass, so the loop ends.
        """
        if not approximate:  # exact trimming takes no LIMIT and removes all in one call
            return int(await self.redis.xtrim(stream, minid=point, approximate=False))
        total = 0
        while trimmed := int(await self.redis.xtrim(stream, minid=point, approximate=True,
                                                    limit=TRIM_CALL_LIMIT)):
            total += trimmed
        return total

    async def forget_dead_consumers(self, stream: str) -> list[str]:
        """Delete the consumers of this bus's groups on ``stream`` that have not read for
        ``consumer_retention_seconds`` and hold no pending entries: names of processes
        that are gone (every restart adds one). One that holds entries stays until a live
        consumer has reclaimed them (XAUTOCLAIM after ``reclaim_idle_ms``); then it goes
        at a later pass. Returns the names deleted."""
        idle_ms = int(self.settings.consumer_retention_seconds * 1000)
        deleted: list[str] = []
        for group in sorted({c.group for c in self._consumers if c.stream == stream}):
            own = sorted({c.name for c in self._consumers
                          if c.stream == stream and c.group == group})
            try:
                gone = await self._forget_dead(keys=[stream], args=[group, idle_ms, *own])
            except aioredis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # recreated by its consumer when it reads next
                    continue
                raise
            if gone:
                names = [text(n) for n in gone]
                metrics.CONSUMERS_DELETED.labels(stream, group).inc(len(names))
                log.info("dead consumers deleted", stream=stream, group=group,
                         consumers=names, idle_seconds=self.settings.consumer_retention_seconds)
                deleted += names
        return deleted

    async def _trim_consumed(self) -> None:
        """Trim the streams this process consumes and delete their dead consumers, now
        and then, off the hot path."""
        for stream in sorted({c.stream for c in self._consumers}):
            with self.supervisor.guard("stream trim", stream=stream):  # one at a time
                await self.trim(stream)
            with self.supervisor.guard("dead consumers", stream=stream):
                await self.forget_dead_consumers(stream)

    async def publish(self, stream: str, events: Sequence[Event]) -> list[str]:
        """XADD each event as ``data=<json>``; one round trip for the whole batch."""
        return await publish(self.redis, stream, events, self.settings.shards)

    async def refuse(self, stream: str, group: str,
                     refused: Sequence[tuple[Delivery[Any], str]], kind: str = "schema") -> None:
        """Dead-letter valid events a handler will not take (a label outside its project's
        schema), with the reason and the event as it was read; the caller acks them."""
        if not refused:
            return
        await publish_dead(self.publish, stream, [
            dead_letter(d.stream or stream, group, d.entry_id, reason,
                        encode_event(d.event.to_json()))
            for d, reason in refused])
        metrics.EVENTS_DEADLETTERED.labels(self.service, stream, kind).inc(len(refused))

    def consume(self, stream: str, group: str, model: type[E], handler: BatchHandler[E]) -> None:
        """Register ``handler`` for ``stream``: new entries in batches, and reclaimed ones.

        Each entry is validated with ``model.model_validate_json``; an entry it refuses
        is dead-lettered with the reason. A sharded stream is consumed on each of its
        shards and on its plain name, one consumer each (a cluster cannot read streams
        of several slots in one call).
        """
        for name in sharding.names_of(stream, self.settings.shards):
            self._consumers.append(StreamConsumer(self.redis, self.settings, self.service,
                                                  name, group, model, handler, self.publish))

"""Stream I/O: publish events in the wire format; consume streams in batches.

Consumption runs on FastStream's batch stream subscriber (XREADGROUP in
batches, acknowledged only when the handler returns; a handler error leaves
the entries pending) plus a second subscriber in the same group that
reclaims entries a dead consumer or a failed handler left pending
(XAUTOCLAIM). Validation happens here, per entry, so one bad entry is
dead-lettered with its reason and never blocks the rest of the batch. A
reclaimed batch that fails again is handled entry by entry, and an entry
still failing after ``max_deliveries`` is dead-lettered with the error, so a
poison entry is never retried forever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisBatchStreamMessage
from pydantic import BaseModel, ValidationError

from shared import metrics, streams
from shared.events import DeadLetterEvent, Event, stable_id
from shared.logs import get_logger
from shared.retention import GroupPosition, trim_point
from shared.settings import Settings
from shared.supervisor import Supervisor
from shared.wire import (
    MALFORMED_KEY,
    encode_event,
    entry_body,
    original_fields,
    text,
)

# An event model, or a RootModel over a union of them (shared.events.QualityEvent).
E = TypeVar("E", bound=BaseModel)
log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[E]):
    """A validated event and the stream entry it came in."""

    entry_id: str
    event: E


BatchHandler = Callable[[list[Delivery[E]]], Awaitable[None]]


_UNION_TAG = ("union_tag_invalid", "union_tag_not_found")


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        # A union picked by its "type" field (QualityEvent) says what was wrong with it.
        where = ".".join(str(p) for p in err["loc"]) or (
            "type" if err["type"] in _UNION_TAG else "event")
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def group_drained(redis: aioredis.Redis, stream: str, group: str) -> bool:
    """True when the consumer group has read everything and acknowledged it all."""
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:
        return False
    for g in groups:
        name = text(g["name"])
        if name == group:
            return int(g.get("pending", 0)) == 0 and int(g.get("lag") or 0) == 0
    return False


async def keep_raw_entries(raw: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's batch parser, minus its per-entry decode and re-encode.

    The stock parser JSON-decodes every entry, re-encodes the whole batch and
    decodes it again (about 15% of the router's time). We let it build the
    message (which binds the consumer group for acks) from an empty batch and
    keep the raw entries; ``decode_entries`` then decodes each entry once.
    """
    message = await original({**raw, "data": []})
    message.raw_message = raw
    return message


async def decode_entries(message: Any) -> list[bytes | dict[str, Any]]:
    """Each entry's JSON bytes, left for the model to parse and validate in one pass
    (pydantic's JSON validation, in Rust); an entry without a body becomes a marker."""
    return [entry_body(fields) for fields in message.raw_message["data"]]


def body_error(exc: ValidationError) -> tuple[str, str]:
    """(reason, kind) for an entry whose bytes did not validate: malformed or invalid."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"'data' is not JSON: {first['msg']}", "malformed"
    if first["type"] in ("model_type", "dict_type") and not first["loc"]:
        got = type(first.get("input")).__name__
        return f"'data' must be a JSON object, got {got}", "malformed"
    return validation_reason(exc), "validation"


async def publish(redis: aioredis.Redis, stream: str, events: Sequence[Event]) -> list[str]:
    """XADD each event as ``data=<json>``; one round trip for the whole batch. A module
    function, so that a command without a running service publishes the same way."""
    if not events:
        return []
    # Streams nobody consumes (dead letters, model history) are capped instead of
    # trimmed behind consumer groups; approximate, so the cap costs nothing.
    cap = streams.CAPPED.get(stream)
    pipe = redis.pipeline(transaction=False)
    for event in events:
        pipe.xadd(stream, encode_event(event.to_json()), maxlen=cap, approximate=True)
    ids = await pipe.execute()
    return [text(i) for i in ids]


class HandlerFailed(Exception):
    """Some reclaimed entries still fail: they stay pending and are tried again later."""


class Bus:
    """One per process: the FastStream broker for consuming, a redis client for publishing.

    Its housekeeping (trimming the consumed streams) runs on ``supervisor``, in every
    process; without one the bus keeps a supervisor of its own and stops it on close.
    """

    def __init__(self, settings: Settings, service: str,
                 supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.service = service
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor or Supervisor(service)
        broker_log = logging.getLogger("loopwise.faststream")
        broker_log.setLevel(logging.WARNING)  # per-batch and shutdown chatter is not news
        self.broker = RedisBroker(
            settings.redis_url,
            logger=broker_log,
            log_level=logging.DEBUG,
        )
        self.redis: aioredis.Redis = aioredis.from_url(settings.redis_url)
        self._consumed: set[str] = set()
        self._groups: set[tuple[str, str]] = set()
        self._consuming = False

    async def start(self) -> None:
        # A new consumer group starts at the stream's first entry, not its newest (FastStream
        # would create it at "$"): entries a producer wrote before the service first started
        # are consumed, not skipped forever with a lag of 0; a service that starts after a
        # project was configured still learns its settings. A group that exists keeps its
        # position.
        for stream, group in sorted(self._groups):
            try:
                await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
            except aioredis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        await self.broker.start()
        self._consuming = True
        if self._consumed:
            self.supervisor.every("stream trim", self.settings.trim_interval_seconds,
                                  self._trim_consumed, immediately=True, each_process=True)

    async def stop_consuming(self) -> None:
        """Stop reading the streams (publishing still works until ``close``)."""
        if self._consuming:
            self._consuming = False
            await self.broker.stop()

    async def close(self) -> None:
        await self.stop_consuming()
        if self._own_supervisor:
            await self.supervisor.stop()
        await self.redis.aclose()

    async def trim(self, stream: str, approximate: bool = True) -> int:
        """Drop the entries every consumer group has acknowledged and the retention
        no longer keeps (:func:`shared.retention.trim_point`); how many went. Exports
        each group's lag and pending count and the stream's length on the way."""
        try:
            groups = await self.redis.xinfo_groups(stream)
        except aioredis.ResponseError:  # no such stream (yet)
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
        point = trim_point(positions, int(time.time() * 1000),
                           self.settings.stream_retention_seconds * 1000)
        trimmed = 0
        if point is not None:
            trimmed = int(await self.redis.xtrim(stream, minid=point, approximate=approximate))
            if trimmed:
                metrics.STREAM_TRIMMED.labels(stream).inc(trimmed)
        metrics.STREAM_LENGTH.labels(stream).set(int(await self.redis.xlen(stream)))
        return trimmed

    async def _trim_consumed(self) -> None:
        """Trim the streams this process consumes, now and then, off the hot path."""
        for stream in sorted(self._consumed):
            with self.supervisor.guard("stream trim", stream=stream):  # one at a time
                await self.trim(stream)

    async def publish(self, stream: str, events: Sequence[Event]) -> list[str]:
        """XADD each event as ``data=<json>``; one round trip for the whole batch."""
        return await publish(self.redis, stream, events)

    def _dead_letter(self, stream: str, group: str, entry_id: str, reason: str,
                     raw: Any) -> DeadLetterEvent:
        return DeadLetterEvent(event_id=stable_id("deadletter", stream, group, entry_id),
                               stream=stream, entry_id=entry_id, group=group, reason=reason,
                               fields=original_fields(raw))

    async def _publish_dead(self, stream: str, dead: list[DeadLetterEvent]) -> None:
        await self.publish(streams.DEADLETTER, dead)
        log.warning("deadlettered", stream=stream, count=len(dead), first=dead[0].reason)

    async def refuse(self, stream: str, group: str,
                     refused: Sequence[tuple[Delivery[Any], str]], kind: str = "schema") -> None:
        """Dead-letter valid events a handler will not take (a label outside its project's
        schema), with the reason and the event as it was read; the caller acks them."""
        if not refused:
            return
        await self._publish_dead(stream, [
            self._dead_letter(stream, group, d.entry_id, reason, encode_event(d.event.to_json()))
            for d, reason in refused])
        metrics.EVENTS_DEADLETTERED.labels(self.service, stream, kind).inc(len(refused))

    async def _delivery_counts(self, stream: str, group: str, entry_ids: list[str]
                               ) -> dict[str, int]:
        """How often each pending entry was delivered (XPENDING); absent: no longer pending."""
        if not entry_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(stream, group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for entry_id, rows in zip(entry_ids, await pipe.execute(), strict=True):
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

    async def _isolate(self, stream: str, group: str, handler: BatchHandler[E],
                       deliveries: list[Delivery[E]], raws: dict[str, Any],
                       batch_error: Exception) -> None:
        """Handle each delivery alone after its batch failed (with ``batch_error``). Those
        that succeed are acked; those that failed ``max_deliveries`` times are
        dead-lettered with the error and acked; if any is left, raise, so that it stays
        pending for another try."""
        done: list[str] = []
        failed: list[tuple[Delivery[E], Exception]] = []
        if len(deliveries) == 1:  # the batch was this delivery alone
            failed.append((deliveries[0], batch_error))
        else:
            for delivery in deliveries:
                try:
                    await handler([delivery])
                    done.append(delivery.entry_id)
                except Exception as exc:
                    failed.append((delivery, exc))
        limit = self.settings.max_deliveries
        counts = await self._delivery_counts(stream, group, [d.entry_id for d, _ in failed])
        given_up = [(d, exc) for d, exc in failed if counts.get(d.entry_id, 0) >= limit]
        if given_up:
            await self._publish_dead(stream, [
                self._dead_letter(
                    stream, group, d.entry_id,
                    f"the handler failed on all {counts[d.entry_id]} deliveries "
                    f"(max_deliveries {limit}); last error: {type(exc).__name__}: {exc}",
                    raws[d.entry_id])
                for d, exc in given_up])
            metrics.EVENTS_DEADLETTERED.labels(self.service, stream, "handler").inc(
                len(given_up))
        acked = done + [d.entry_id for d, _ in given_up]
        if acked:
            await self.redis.xack(stream, group, *acked)
        retry = [(d, exc) for d, exc in failed if counts.get(d.entry_id, 0) < limit]
        if retry:
            delivery, first_error = retry[0]
            raise HandlerFailed(
                f"{len(retry)} of {len(deliveries)} reclaimed entries of {stream} still fail "
                f"(first: {delivery.entry_id}, delivered {counts.get(delivery.entry_id, 0)} "
                f"times); they stay pending") from first_error

    def consume(self, stream: str, group: str, model: type[E], handler: BatchHandler[E]) -> None:
        """Register ``handler`` for ``stream``: new entries in batches, and reclaimed ones.

        Each entry is validated with ``model.model_validate_json``; an entry it refuses
        is dead-lettered with the reason.
        """
        service = self.service
        self._consumed.add(stream)
        self._groups.add((stream, group))

        def accept(bodies: list[Any], message: RedisBatchStreamMessage
                   ) -> tuple[list[str], list[Delivery[E]], list[DeadLetterEvent]]:
            """Validate each entry: the deliveries, and the dead letters of bad entries."""
            entry_ids = [i.decode() for i in message.raw_message["message_ids"]]
            deliveries: list[Delivery[E]] = []
            dead: list[DeadLetterEvent] = []
            for entry_id, body, raw in zip(entry_ids, bodies, message.raw_message["data"],
                                           strict=True):
                if isinstance(body, bytes):
                    try:
                        event = model.model_validate_json(body, context={"raw": body})
                        deliveries.append(Delivery(entry_id, event))
                        continue
                    except ValidationError as exc:
                        reason, kind = body_error(exc)
                elif isinstance(body, dict) and MALFORMED_KEY in body:
                    reason, kind = body[MALFORMED_KEY], "malformed"
                else:
                    reason, kind = "entry is not a JSON object", "malformed"
                dead.append(self._dead_letter(stream, group, entry_id, reason, raw))
                metrics.EVENTS_DEADLETTERED.labels(service, stream, kind).inc()
            return entry_ids, deliveries, dead

        async def handle(bodies: list[Any], message: RedisBatchStreamMessage,
                         reclaimed: bool) -> None:
            started = time.perf_counter()
            entry_ids, deliveries, dead = accept(bodies, message)
            if dead:
                await self._publish_dead(stream, dead)
            try:
                if deliveries:
                    await handler(deliveries)
            except Exception as exc:
                if not reclaimed:
                    raise  # left pending; the reclaiming subscriber tries again
                raws = dict(zip(entry_ids, message.raw_message["data"], strict=True))
                await self._isolate(stream, group, handler, deliveries, raws, exc)
            metrics.EVENTS_CONSUMED.labels(service, stream).inc(len(entry_ids))
            metrics.HANDLER_SECONDS.labels(service, stream).observe(time.perf_counter() - started)

        async def on_batch(bodies: list[Any], message: RedisBatchStreamMessage) -> None:
            await handle(bodies, message, reclaimed=False)

        async def on_reclaimed(bodies: list[Any], message: RedisBatchStreamMessage) -> None:
            """Entries left pending (a dead consumer, or a handler that failed): as a batch,
            and if that fails, one at a time, so that one bad entry holds no other back.
            An entry still failing after ``max_deliveries`` is dead-lettered with its error."""
            await handle(bodies, message, reclaimed=True)

        consumer = f"{service}-{self.settings.consumer_name}"
        self.broker.subscriber(
            stream=StreamSub(
                stream,
                group=group,
                consumer=consumer,
                batch=True,
                max_records=self.settings.batch_size,
                polling_interval=self.settings.poll_ms,
            ),
            parser=keep_raw_entries,
            decoder=decode_entries,
        )(on_batch)
        self.broker.subscriber(
            stream=StreamSub(
                stream,
                group=group,
                consumer=f"{consumer}-reclaim",
                batch=True,
                min_idle_time=self.settings.reclaim_idle_ms,
                polling_interval=max(self.settings.poll_ms, 1000),
            ),
            parser=keep_raw_entries,
            decoder=decode_entries,
        )(on_reclaimed)

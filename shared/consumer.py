"""One consumer group's consumer of one stream: read, handle, acknowledge, recover.

An entry is acknowledged only after its handler returned (its effect is durable). What
goes wrong is told apart (:mod:`shared.faults`):

- An entry that does not validate is dead-lettered with the reason at once.
- A handler failing on the entries' content leaves the batch pending; the reclaiming
  read (XAUTOCLAIM, a whole batch at a time) tries it again as a batch, then entry by
  entry, and an entry still failing on its ``max_deliveries``-th delivery is
  dead-lettered with the error, so that a poison entry is never retried forever.
- A database, Redis or peer that is unavailable is nobody's entry's fault. The consumer
  keeps the batch it holds, backs off (:mod:`shared.backoff`, capped, with jitter), reads
  nothing more meanwhile, and tries the same batch again until the store is back. The
  entries stay pending under this consumer, kept from going idle with ``XCLAIM ...
  JUSTID`` (which resets their idle time and, unlike a read or a claim, leaves their
  delivery counter alone), so no other consumer claims them meanwhile. An outage thus
  never adds to an entry's delivery count; only deliveries that ended in a content
  failure, or in the consumer's death, do.
- A consumer group or stream that is gone (Redis restarted empty, failed over to an
  empty replica, or was flushed: ``NOGROUP``) is created again from the stream's first
  entry, logged and counted, and consumption goes on.

FastStream 0.7.8's stream subscriber, which this replaces, stops for good on NOGROUP,
reclaims one entry per XAUTOCLAIM and retries a failed read after a fixed 5 s; none of
that could be configured, hence a loop of our own (the framework's parser is kept for
its wire format, :mod:`shared.wire`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from shared import metrics, streams
from shared.backoff import backoff_seconds
from shared.events import DeadLetterEvent, Event, stable_id
from shared.faults import is_infrastructure
from shared.logs import get_logger
from shared.readiness import ConsumerHealth, Phase
from shared.settings import Settings
from shared.wire import MALFORMED_KEY, entry_body, original_fields, text

E = TypeVar("E", bound=BaseModel)
log = get_logger(__name__)
Publish = Callable[[str, Sequence[Event]], Awaitable[list[str]]]
RECLAIM_EVERY_SECONDS = 1.0  # how often the pending entries are looked at when idle
_UNION_TAG = ("union_tag_invalid", "union_tag_not_found")


@dataclass(frozen=True, slots=True)
class Delivery(Generic[E]):
    """A validated event and the stream entry it came in (``stream``: the shard's name
    when the stream is sharded, so a refusal names the stream that holds the entry)."""

    entry_id: str
    event: E
    stream: str = ""


BatchHandler = Callable[[list[Delivery[E]]], Awaitable[None]]


def validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        # A union picked by its "type" field (QualityEvent) says what was wrong with it.
        where = ".".join(str(p) for p in err["loc"]) or (
            "type" if err["type"] in _UNION_TAG else "event")
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def body_error(exc: ValidationError) -> tuple[str, str]:
    """(reason, kind) for an entry whose bytes did not validate: malformed or invalid."""
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"'data' is not JSON: {first['msg']}", "malformed"
    if first["type"] in ("model_type", "dict_type") and not first["loc"]:
        got = type(first.get("input")).__name__
        return f"'data' must be a JSON object, got {got}", "malformed"
    return validation_reason(exc), "validation"


def dead_letter(stream: str, group: str, entry_id: str, reason: str,
                raw: Any) -> DeadLetterEvent:
    return DeadLetterEvent(event_id=stable_id("deadletter", stream, group, entry_id),
                           stream=stream, entry_id=entry_id, group=group, reason=reason,
                           fields=original_fields(raw))


async def publish_dead(publish: Publish, stream: str, dead: list[DeadLetterEvent]) -> None:
    await publish(streams.DEADLETTER, dead)
    log.warning("deadlettered", stream=stream, count=len(dead), first=dead[0].reason)


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, aioredis.ResponseError) and str(exc).startswith("NOGROUP")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass
class _Batch(Generic[E]):
    """Entries read together and how far their handling got, so that a retry after an
    infrastructure failure redoes only what is not done (nothing is done twice)."""

    raws: dict[str, Any]  # entry id -> fields as read
    deliveries: list[Delivery[E]]
    dead: list[DeadLetterEvent]
    reclaimed: bool
    dead_sent: bool = False
    handled: bool = False  # the handler took the batch (or each entry was settled)
    isolating: bool = False
    done: list[str] = field(default_factory=list)  # handled alone
    failed: dict[str, Exception] = field(default_factory=dict)  # failed alone, on content

    def open(self) -> list[Delivery[E]]:
        return [d for d in self.deliveries
                if d.entry_id not in self.failed and d.entry_id not in self.done]


class StreamConsumer(Generic[E]):
    """Consumes ``stream`` as ``group`` with ``handler``, one task (:meth:`run`)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, service: str, stream: str,
                 group: str, model: type[E], handler: BatchHandler[E],
                 publish: Publish) -> None:
        self.redis = redis
        self.settings = settings
        self.service = service
        self.stream = stream
        self.group = group
        self.model = model
        self.handler = handler
        self.publish = publish
        self.name = f"{service}-{settings.consumer_name}"
        self.health = ConsumerHealth(stream, group, since=time.monotonic())
        self._reclaim_at = 0.0
        self._cursor = "0-0"
        if metrics.multiprocess():  # the bus exports it every second (export_up)
            self.export_up()
        else:
            metrics.CONSUMER_UP.labels(service, stream, group).set_function(self._up)

    def _up(self) -> float:
        status = self.health.status(time.monotonic(), self.settings.consumer_stall_seconds)
        return 1.0 if status == "consuming" else 0.0

    def export_up(self) -> None:
        """Write ``loopwise_consumer_up`` now (multiprocess mode has no callback gauges)."""
        metrics.CONSUMER_UP.labels(self.service, self.stream, self.group).set(self._up())

    async def ensure_group(self) -> bool:
        """Create the group at the stream's first entry (and the stream) unless it exists:
        what producers wrote before the group existed is consumed, not skipped. True if
        created."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            return True
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Read and handle until cancelled; no failure ends it."""
        failures = 0
        try:
            while True:
                try:
                    await self._step()
                    failures = 0
                except Exception as exc:
                    if _cancelling():
                        raise asyncio.CancelledError from exc
                    if is_nogroup(exc):
                        await self._recreate()
                        continue
                    failures += 1
                    await self._pause(failures, exc, holding=())
        finally:
            self.health.phase = Phase.STOPPED

    async def _step(self) -> None:
        if time.monotonic() >= self._reclaim_at:
            if await self._reclaim():
                return  # more may be pending: look again before reading new entries
            self._reclaim_at = time.monotonic() + max(
                RECLAIM_EVERY_SECONDS, self.settings.poll_ms / 1000)
        reply: Any = await self.redis.xreadgroup(  # RESP2: [[stream, entries]]
            self.group, self.name, {self.stream: ">"}, count=self.settings.batch_size,
            block=self.settings.poll_ms)
        self.health.progressed(time.monotonic())
        for _, entries in reply or ():
            if entries:
                await self._handle(entries, reclaimed=False)

    async def _reclaim(self) -> bool:
        """Claim a batch of entries left pending longer than ``reclaim_idle_ms`` (a dead
        consumer's, or a batch that failed on its content) and handle them together.
        True while the scan of the pending entries is not through."""
        reply = await self.redis.xautoclaim(
            self.stream, self.group, self.name, min_idle_time=self.settings.reclaim_idle_ms,
            start_id=self._cursor, count=self.settings.batch_size)
        self._cursor = text(reply[0])
        self.health.progressed(time.monotonic())
        entries = [(i, f) for i, f in reply[1] if f is not None]
        if entries:
            metrics.EVENTS_RECLAIMED.labels(self.service, self.stream).inc(len(entries))
            await self._handle(entries, reclaimed=True)
        return self._cursor != "0-0"

    async def _recreate(self) -> None:
        created = await self.ensure_group()
        self._cursor, self._reclaim_at = "0-0", 0.0
        for gauge in (metrics.STREAM_LAG, metrics.STREAM_PENDING):  # no phantom values
            metrics.forget(gauge, self.stream, self.group)
        if created:
            self.health.recreated += 1
            metrics.CONSUMER_GROUP_RECREATED.labels(self.stream, self.group).inc()
            log.warning("consumer group recreated", stream=self.stream, group=self.group,
                        why="the group was gone (Redis restarted empty, failed over or was "
                            "flushed); it starts again at the stream's first entry")

    async def _pause(self, failures: int, exc: Exception, holding: Sequence[str]) -> None:
        """Back off after ``failures`` failures in a row; keep ``holding`` (pending entry
        ids) from going idle meanwhile, without adding to their delivery count."""
        infra = is_infrastructure(exc)
        reason = "infrastructure" if infra else "error"
        error = f"{type(exc).__name__}: {exc}"
        metrics.CONSUMER_BACKOFFS.labels(self.service, self.stream, reason).inc()
        self.health.backing_off(time.monotonic(), failures, error)
        seconds = backoff_seconds(failures, self.settings.consumer_backoff_seconds,
                                  self.settings.consumer_backoff_max_seconds, random.random())
        (log.warning if infra else log.error)(
            "consumer backing off", stream=self.stream, group=self.group, reason=reason,
            failures=failures, seconds=round(seconds, 2), holding=len(holding), error=error,
            exc_info=None if infra else exc)
        deadline = time.monotonic() + seconds
        keep_every = self.settings.reclaim_idle_ms / 3000
        while (left := deadline - time.monotonic()) > 0:
            if holding:
                with suppress(Exception):  # Redis may be what is down; nothing to keep then
                    await self.redis.xclaim(self.stream, self.group, self.name, 0,
                                            list(holding), justid=True)
            await asyncio.sleep(min(left, keep_every))

    # ------------------------------------------------------------------ one batch

    def _accept(self, entries: list[tuple[Any, Any]], reclaimed: bool) -> _Batch[E]:
        """Validate each entry: the deliveries, and the dead letters of bad entries."""
        raws: dict[str, Any] = {}
        deliveries: list[Delivery[E]] = []
        dead: list[DeadLetterEvent] = []
        for raw_id, fields in entries:
            entry_id = text(raw_id)
            raws[entry_id] = fields
            body = entry_body(fields)
            if isinstance(body, bytes):
                try:
                    event = self.model.model_validate_json(body, context={"raw": body})
                    deliveries.append(Delivery(entry_id, event, self.stream))
                    continue
                except ValidationError as exc:
                    reason, kind = body_error(exc)
            elif MALFORMED_KEY in body:
                reason, kind = body[MALFORMED_KEY], "malformed"
            else:
                reason, kind = "entry is not a JSON object", "malformed"
            dead.append(dead_letter(self.stream, self.group, entry_id, reason, fields))
            metrics.EVENTS_DEADLETTERED.labels(self.service, self.stream, kind).inc()
        return _Batch(raws, deliveries, dead, reclaimed)

    async def _handle(self, entries: list[tuple[Any, Any]], reclaimed: bool) -> None:
        """Settle a batch, trying it again after each infrastructure failure until the
        failure is gone: the batch is never split or counted against for an outage."""
        batch = self._accept(entries, reclaimed)
        failures = 0
        while True:
            started = time.perf_counter()
            self.health.phase = Phase.HANDLING
            try:
                await self._settle(batch)
            except Exception as exc:
                if _cancelling() or not is_infrastructure(exc):
                    raise
                failures += 1
                await self._pause(failures, exc, holding=[d.entry_id for d in batch.open()])
                continue
            break
        self.health.progressed(time.monotonic())
        metrics.EVENTS_CONSUMED.labels(self.service, self.stream).inc(len(entries))
        metrics.HANDLER_SECONDS.labels(self.service, self.stream).observe(
            time.perf_counter() - started)

    async def _settle(self, batch: _Batch[E]) -> None:
        """Dead letters out, the handler over the batch, then the acks. On a content
        failure a new batch stays pending for the reclaiming read; a reclaimed one is
        handled entry by entry (:meth:`_isolate`)."""
        if batch.dead and not batch.dead_sent:
            await publish_dead(self.publish, self.stream, batch.dead)
            batch.dead_sent = True
            await self.redis.xack(self.stream, self.group, *[d.entry_id for d in batch.dead])
        if not batch.handled and not batch.isolating:
            try:
                if batch.deliveries:
                    await self.handler(batch.deliveries)
                batch.handled = True
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                if not batch.reclaimed:
                    log.warning("batch failed; its entries stay pending for a retry",
                                stream=self.stream, group=self.group,
                                entries=len(batch.deliveries),
                                error=f"{type(exc).__name__}: {exc}")
                    return
                batch.isolating = True
                if len(batch.deliveries) == 1:  # the batch was this delivery alone
                    batch.failed[batch.deliveries[0].entry_id] = exc
        if batch.isolating and not batch.handled:
            await self._isolate(batch)
            batch.handled = True
        else:
            await self._ack([d.entry_id for d in batch.deliveries])

    async def _isolate(self, batch: _Batch[E]) -> None:
        """Handle each delivery of a reclaimed batch alone: those that succeed are acked;
        those that failed ``max_deliveries`` times are dead-lettered with the error and
        acked; the rest stay pending for another try."""
        for delivery in batch.open():
            try:
                await self.handler([delivery])
            except Exception as exc:
                if is_infrastructure(exc):
                    raise  # the batch is tried again from here once the store is back
                batch.failed[delivery.entry_id] = exc
            else:
                batch.done.append(delivery.entry_id)
        limit = self.settings.max_deliveries
        counts = await self._delivery_counts(list(batch.failed))
        given_up = [(i, exc) for i, exc in batch.failed.items() if counts.get(i, 0) >= limit]
        if given_up:
            await publish_dead(self.publish, self.stream, [
                dead_letter(self.stream, self.group, i,
                            f"the handler failed on all {counts[i]} deliveries "
                            f"(max_deliveries {limit}); last error: {type(exc).__name__}: "
                            f"{exc}", batch.raws[i])
                for i, exc in given_up])
            metrics.EVENTS_DEADLETTERED.labels(self.service, self.stream, "handler").inc(
                len(given_up))
        await self._ack(batch.done + [i for i, _ in given_up])
        retry = [i for i in batch.failed if counts.get(i, 0) < limit]
        if retry:
            first = batch.failed[retry[0]]
            log.warning("reclaimed entries still fail; they stay pending", stream=self.stream,
                        group=self.group, failing=len(retry), of=len(batch.deliveries),
                        first=retry[0], delivered=counts.get(retry[0], 0),
                        error=f"{type(first).__name__}: {first}")

    async def _ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self.redis.xack(self.stream, self.group, *entry_ids)

    async def _delivery_counts(self, entry_ids: list[str]) -> dict[str, int]:
        """How often each pending entry was delivered (XPENDING); absent: no longer pending."""
        if not entry_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for entry_id, rows in zip(entry_ids, await pipe.execute(), strict=True):
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

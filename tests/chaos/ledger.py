"""What the chaos tests post, and the count at the end: every prediction accounted for.

A :class:`Producer` posts predictions whose event ids the test knows, at a steady rate,
and keeps posting through a Redis outage (a chunk whose reply was lost is sent again:
the event id makes the resend harmless). :class:`Reviewers` lease and submit tasks over
HTTP, retrying through a router that is down. :func:`account` then looks where each
prediction ended up: one auto label in the label store (its event id is the router's
``stable_key("auto", prediction id)``) or one task in the router's queue (task id
``stable_key("task", prediction id)``), never both, never neither; each recorded
submit stored once; no consumer group with anything pending or unread; no dead letter.
The failure message lists what was lost or duplicated.

The tests read the router's task keys and the label store's table directly: they are
the witnesses, not another service.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field

import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.labels.tables import label_events
from services.router.queue import routed_task_id, task_key_of
from shared import sharding, streams
from shared.events import stable_key
from shared.redisconn import connect
from shared.settings import Settings

AUTO_CONFIDENCE = 0.95  # above the default fixed threshold (0.9): an auto label
REVIEW_CONFIDENCE = 0.6  # below it: a review task
SHOWN = 20  # ids listed per kind of problem in a failure message


@dataclass(frozen=True, slots=True)
class Prediction:
    event_id: str
    item_id: str
    auto: bool

    def wire(self, project: str) -> bytes:
        p = AUTO_CONFIDENCE if self.auto else REVIEW_CONFIDENCE
        return orjson.dumps({"event_id": self.event_id, "project": project,
                             "item_id": self.item_id, "model_version": "chaos-m1",
                             "probs": {"a": p, "b": round(1 - p, 6)}})


def predictions(count: int, auto_share: float, seed: int, prefix: str = "i") -> list[Prediction]:
    """``count`` predictions, a seeded ``auto_share`` of them confident. Their event ids are
    new every time (uuid4): the label store may be a database earlier runs wrote to."""
    rng = random.Random(seed)
    return [Prediction(str(uuid.uuid4()), f"{prefix}{n}", rng.random() < auto_share)
            for n in range(count)]


@dataclass
class Producer:
    """Posts ``items`` to ``loopwise:predictions`` at ``rate`` a second, in chunks."""

    redis_url: str
    project: str
    items: list[Prediction]
    rate: float
    chunk: int = 100
    stream: str = streams.PREDICTIONS
    # On a Redis Cluster (asynchronous replication) a chunk counts as sent once this many
    # replicas have it (WAIT), else it is sent again: a failover cannot lose it.
    replicas: int = 0
    acked: int = 0  # predictions Redis acknowledged
    acked_at: list[float] = field(default_factory=list)  # monotonic time, per chunk
    resent: int = 0  # chunks sent again after an error
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_acked(self, count: float) -> None:
        """Until at least ``count`` predictions are acknowledged."""
        while self.acked < count:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        redis = connect(self.redis_url, socket_timeout=5)
        started = time.monotonic()
        try:
            for start in range(0, len(self.items), self.chunk):
                due = started + start / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                wires = [p.wire(self.project) for p in self.items[start:start + self.chunk]]
                while True:
                    try:
                        pipe = redis.pipeline(transaction=False)
                        for w in wires:
                            pipe.xadd(self.stream, {"data": w})
                        await pipe.execute()
                        if self.replicas and await redis.execute_command(  # type: ignore[call-arg]
                                "WAIT", self.replicas, 2000,
                                target_nodes=redis.get_node_from_key(self.stream)) < self.replicas:
                            raise RedisError("not yet on a replica")
                        break
                    except (RedisError, OSError):
                        self.resent += 1
                        await asyncio.sleep(0.2)
                self.acked += len(wires)
                self.acked_at.append(time.monotonic())
                self._progress.set()
        finally:
            await redis.aclose()

    def acked_between(self, after: float, before: float = float("inf")) -> list[Prediction]:
        """The predictions whose chunk was acknowledged in (after, before)."""
        out: list[Prediction] = []
        for i, at in enumerate(self.acked_at):
            if after < at < before:
                out.extend(self.items[i * self.chunk:(i + 1) * self.chunk])
        return out


@dataclass
class Reviewers:
    """Labelers leasing and submitting over HTTP until ``stop`` is set; a router that is
    down (connection refused, a 5xx) is waited for and the same request sent again."""

    router_url: str
    project: str
    tokens: dict[str, str]  # labeler -> bearer token
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    recorded: dict[str, str] = field(default_factory=dict)  # task id -> labeler
    retries: int = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._work(name, token) for name, token in self.tokens.items()))

    async def _request(self, http: httpx.AsyncClient, method: str, url: str,
                       **kw) -> httpx.Response | None:
        while not self.stop.is_set():
            try:
                r = await http.request(method, url, **kw)
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code < 500:
                return r
            self.retries += 1
            await asyncio.sleep(0.3)
        return None

    async def _work(self, name: str, token: str) -> None:
        async with httpx.AsyncClient(base_url=self.router_url, timeout=10,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            while not self.stop.is_set():
                got = await self._request(http, "GET",
                                          f"/v1/projects/{self.project}/tasks/next")
                if got is None:
                    return
                if got.status_code == 204:
                    await asyncio.sleep(0.2)
                    continue
                assert got.status_code == 200, got.text
                task_id = got.json()["task_id"]
                # Sent again until answered: "recorded" or, if the first one got through
                # before the router died, "duplicate"; either way the label is stored once.
                done = await self._request(http, "POST", f"/v1/tasks/{task_id}/submit",
                                           json={"label": "a"})
                if done is None:
                    return
                assert done.status_code == 200, done.text
                self.recorded[task_id] = name
                await asyncio.sleep(0.05)


@dataclass
class Accounting:
    expected: int
    auto: int = 0
    tasks: int = 0
    lost: list[str] = field(default_factory=list)  # neither an auto label nor a task
    both: list[str] = field(default_factory=list)  # an auto label and a task
    wrong_route: list[str] = field(default_factory=list)  # a label where a task belongs
    auto_twice: list[str] = field(default_factory=list)  # items with several auto labels
    unexpected: list[str] = field(default_factory=list)  # stored labels nobody posted
    submits: int = 0
    submits_missing: list[str] = field(default_factory=list)
    submits_twice: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # stream/group with work left
    dead_letters: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        for name in ("lost", "both", "wrong_route", "auto_twice", "unexpected",
                     "submits_missing", "submits_twice", "pending", "dead_letters"):
            found = getattr(self, name)
            if found:
                out.append(f"{name}: {len(found)} (first: {found[:SHOWN]})")
        return out

    def summary(self) -> str:
        return (f"{self.expected:,} predictions: {self.auto:,} auto labels stored, "
                f"{self.tasks:,} tasks queued; {self.submits:,} reviewed labels stored")

    def report(self) -> str:
        return "\n".join([self.summary(), *self.problems()])


async def account(redis: aioredis.Redis, engine: AsyncEngine, project: str,
                  exactly_once: list[Prediction], at_most_once: list[Prediction] = (),
                  submitted: dict[str, str] | None = None,
                  groups: tuple[tuple[str, str], ...] = (
                      (streams.PREDICTIONS, streams.GROUP_ROUTER),
                      (streams.LABELS, streams.GROUP_LABELS)),
                  shards: int | None = None) -> Accounting:
    """Where every prediction ended up. ``exactly_once``: each must be one auto label or
    one task; ``at_most_once``: may be gone (Redis lost it) but never twice."""
    submitted = submitted or {}
    shards = shards or Settings().shards
    everything = [*exactly_once, *at_most_once]
    acct = Accounting(expected=len(everything))
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(label_events.c.event_id, label_events.c.item_id, label_events.c.source,
                   label_events.c.task_id, label_events.c.labeler_id)
            .where(label_events.c.project == project))).all()
    auto_ids: dict[str, int] = {}
    auto_items: dict[str, int] = {}
    human: dict[tuple[str, str], int] = {}
    for event_id, item_id, source, task_id, labeler in rows:
        if source == "auto":
            auto_ids[event_id] = auto_ids.get(event_id, 0) + 1
            auto_items[item_id] = auto_items.get(item_id, 0) + 1
        else:
            human[(task_id, labeler)] = human.get((task_id, labeler), 0) + 1
    acct.auto = len(auto_ids)
    acct.auto_twice = sorted(i for i, n in auto_items.items() if n > 1)
    pipe = redis.pipeline(transaction=False)
    for p in everything:
        pipe.exists(task_key_of(routed_task_id(p.event_id, project, shards)))
    queued = [bool(x) for x in await pipe.execute()] if everything else []
    acct.tasks = sum(queued)
    known_auto = set()
    must = {p.event_id for p in exactly_once}
    for p, task in zip(everything, queued, strict=True):
        auto_id = stable_key("auto", p.event_id)
        known_auto.add(auto_id)
        label = auto_id in auto_ids
        if label and task:
            acct.both.append(p.item_id)
        elif not label and not task and p.event_id in must:
            acct.lost.append(p.item_id)
        elif (label and not p.auto) or (task and p.auto):
            acct.wrong_route.append(p.item_id)
    acct.unexpected = sorted(set(auto_ids) - known_auto)
    acct.submits = sum(1 for key in submitted.items() if human.get(key))
    acct.submits_missing = sorted(t for t, who in submitted.items() if not human.get((t, who)))
    acct.submits_twice = sorted(f"{t}|{who}" for (t, who), n in human.items() if n > 1)
    named = [(name, group) for stream, group in groups
             for name in sharding.names_of(stream, shards)]
    plain = {stream for stream, _ in groups}
    for stream, group in named:
        if stream not in plain and not await redis.exists(stream):
            continue  # a shard nobody wrote to: nothing can be pending on it
        try:
            last = (await redis.xinfo_stream(stream))["last-generated-id"]
            info = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
        except RedisError:
            last, info = None, {}
        g = info.get(group)
        if g is None:
            acct.pending.append(f"{stream}/{group}: no such group")
        # Read up to the last entry (XINFO's lag is nil once a stream was trimmed).
        elif int(g["pending"]) or g["last-delivered-id"] != last:
            acct.pending.append(f"{stream}/{group}: {g['pending']} pending, lag {g.get('lag')}")
    for _, f in await redis.xrange(streams.DEADLETTER, count=SHOWN):
        dead = orjson.loads(f[b"data"])
        acct.dead_letters.append(f"{dead['stream']} {dead['entry_id']}: {dead['reason']}"[:300])
    return acct


async def settle(redis: aioredis.Redis, engine: AsyncEngine, project: str,
                 exactly_once: list[Prediction], timeout: float, **kw) -> Accounting:
    """Account again every few seconds until nothing is wrong or ``timeout`` passes; the
    last accounting (the caller asserts it has no problems)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            acct = await account(redis, engine, project, exactly_once, **kw)
        except (RedisError, OSError) as exc:  # a server still coming back
            acct = Accounting(expected=len(exactly_once), pending=[f"unreadable: {exc!r}"])
        if not acct.problems() or time.monotonic() > deadline:
            return acct
        await asyncio.sleep(3)


async def count_labels(engine: AsyncEngine, project: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(label_events).where(
            label_events.c.project == project))).scalar_one()

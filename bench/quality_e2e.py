"""Quality at scale end to end (issue 16 items 1 and 4): the quality service as a process
of its own, on Redis and PostgreSQL, fed through ``loopwise:labels``.

A project of N votes (a simulated crowd: 5 classes, 40 labelers of four kinds, three
labels an item, an item's labels arriving a few thousand votes apart) is posted on the
label stream in the wire format, as the labels service would; the consensus the service
publishes back on the same stream is read as it comes. Then:

* Correctness: once the stream is drained, every item with two or more votes must have a
  consensus label; they are compared with Dawid-Skene fitted from scratch on the same
  votes (:class:`services.quality.consensus.DawidSkene`, the reference the incremental
  path is held to) and with the simulated truth.
* Latency: bursts of new votes (333 new items x 3 votes), each posted after the previous
  burst's consensus arrived: the time from the last vote of a burst being on the stream
  to the consensus of every item it settled being on the stream, debounce included
  (``LOOPWISE_QUALITY_QUIET_SECONDS``, 2 s by default), background refits running and
  adopted at their natural rate. p50/p95/max over the bursts.
* Restart: the process SIGKILLed and started again, timed to ``/readyz`` (which waits
  for the state to be loaded), with the project's checkpoint and, the baseline in the
  same run, with the checkpoints deleted (every vote replayed, as before issue 16 item 4).

The test of the ``scale`` stage (``tests/scale``) runs the same pieces on 200k votes and
asserts correctness only; the figures are this benchmark's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import numpy as np
import redis.asyncio as aioredis

from bench.quality import simulate_crowd
from bench.quality_scale import load_note
from shared import sharding, streams
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BURST_ITEMS = 333
PREFIX = "bench-e2e-"  # the benchmark's projects
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- votes


@dataclass
class Votes:
    """A crowd's votes in arrival order, as strings, with each item's true class."""

    items: list[str]
    labelers: list[str]
    labels: list[str]
    truth: dict[str, str]

    def __len__(self) -> int:
        return len(self.items)

    def slice(self, start: int, stop: int) -> Votes:
        return Votes(self.items[start:stop], self.labelers[start:stop],
                     self.labels[start:stop], self.truth)


def crowd_votes(n_items: int, prefix: str, seed: int, window: int = 3000) -> Votes:
    """Three votes an item; an item's votes spread over ``window`` votes (0: together)."""
    crowd = simulate_crowd(n_items, seed=seed)
    rng = np.random.default_rng(seed)
    order = np.arange(len(crowd.item))
    if window:
        order = np.argsort(order + rng.integers(0, window, len(order)), kind="stable")
    names = [f"{prefix}{i:07d}" for i in range(n_items)]
    return Votes([names[i] for i in crowd.item[order].tolist()],
                 [f"labeler-{w:02d}" for w in crowd.labeler[order].tolist()],
                 [f"class-{c}" for c in crowd.label[order].tolist()],
                 {names[i]: f"class-{c}" for i, c in enumerate(crowd.truth.tolist())})


async def post(redis: aioredis.Redis, project: str, votes: Votes, first: int,
               chunk: int = 2000) -> int:
    """XADD the votes as human label events (event ids derived from the vote's number,
    so that posting the same vote twice is one vote); returns the next number."""
    n = first
    for start in range(0, len(votes), chunk):
        pipe = redis.pipeline(transaction=False)
        for item, who, label in zip(votes.items[start:start + chunk],
                                    votes.labelers[start:start + chunk],
                                    votes.labels[start:start + chunk], strict=True):
            event = LabelEvent(
                event_id=uuid5(NAMESPACE_URL, f"{project}/vote/{n}"), project=project,
                item_id=item, labeler_id=who, label=label, source="human", mode="blind",
                guideline_version="g1", created_at=T0 + timedelta(milliseconds=n))
            pipe.xadd(streams.LABELS, encode_event(event.to_json()))
            n += 1
        await pipe.execute()
    return n


def eligible(votes: Votes, min_votes: int = 2) -> set[str]:
    counts: dict[str, int] = {}
    for item in votes.items:
        counts[item] = counts.get(item, 0) + 1
    return {item for item, n in counts.items() if n >= min_votes}


def reference_consensus(votes: Votes) -> dict[str, str]:
    """Dawid-Skene from scratch on the votes (a labeler's later vote on an item wins)."""
    from services.quality.agreement import Triples
    from services.quality.consensus import DawidSkene

    latest = {(i, w): lab for i, w, lab in zip(votes.items, votes.labelers, votes.labels,
                                              strict=True)}
    rows = list(latest.items())
    triples = Triples(np.asarray([i for (i, _), _ in rows]),
                      np.asarray([w for (_, w), _ in rows]), np.asarray([lab for _, lab in rows]))
    model = DawidSkene().fit(triples)
    return {str(item): str(model.labels_[item]) for item in model.items_.tolist()}


# --------------------------------------------------------------------------- watching


@dataclass
class Watcher:
    """Follows the project's shard of ``loopwise:labels`` (where the quality service
    publishes its consensus labels, :mod:`shared.sharding`) and keeps the newest
    consensus label per item of one project, with when it was seen."""

    redis: aioredis.Redis
    project: str
    stream: str
    after: str = "0-0"
    labels: dict[str, str] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)
    events: int = 0
    event_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    async def run(self) -> None:
        needle = f'"project":"{self.project}"'.encode()
        while not self.stopping:
            try:
                got = await self.redis.xread({self.stream: self.after}, count=5000,
                                             block=500)
            except (aioredis.TimeoutError, aioredis.ConnectionError):
                task = asyncio.current_task()
                if self.stopping or (task is not None and task.cancelling()):
                    return  # a cancelled read can surface as a connection error
                await asyncio.sleep(0.5)  # a loaded machine: read the same entries again
                continue
            now = time.monotonic()
            for _, entries in got:
                for entry_id, fields in entries:
                    self.after = entry_id
                    raw = fields.get(b"data", b"")
                    if b'"consensus"' not in raw or needle not in raw.replace(b" ", b""):
                        continue
                    body = json.loads(raw)
                    if body.get("project") != self.project or body.get("source") != "consensus":
                        continue
                    self.events += 1
                    if body["event_id"] in self.event_ids:
                        self.duplicates += 1
                    self.event_ids.add(body["event_id"])
                    self.labels[body["item_id"]] = body["label"]
                    self.seen_at[body["item_id"]] = now

    async def until(self, items: set[str], timeout: float) -> float:
        """Wait until every item has a consensus; returns when the last was seen."""
        deadline = time.monotonic() + timeout
        while missing := items - self.seen_at.keys():
            if self.task is not None and self.task.done():
                self.task.result()  # the watcher failed: say why
                raise RuntimeError("the stream watcher stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(items)} items without a consensus "
                                   f"after {timeout:.0f} s, e.g. {sorted(missing)[:3]}")
            await asyncio.sleep(0.05)
        return max(self.seen_at[i] for i in items)


@contextlib.asynccontextmanager
async def watching(redis: aioredis.Redis, project: str) -> AsyncIterator[Watcher]:
    """A watcher from the stream's end, on a connection of its own."""
    stream = sharding.project_stream(streams.LABELS, project, Settings().shards)
    last = await redis.xinfo_stream(stream) if await redis.exists(stream) else None
    kwargs = redis.connection_pool.connection_kwargs
    own = aioredis.Redis(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379),
                         db=kwargs.get("db", 0), socket_timeout=60)
    watcher = Watcher(own, project, stream, after=last["last-generated-id"].decode() if last
                      else "0-0")
    task = watcher.task = asyncio.get_running_loop().create_task(watcher.run())
    try:
        yield watcher
    finally:
        watcher.stopping = True
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await own.aclose()


# --------------------------------------------------------------------------- process


def quality_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {"LOOPWISE_REDIS_URL": settings.redis_url,
            "LOOPWISE_DATABASE_URL": settings.database_url,
            "LOOPWISE_QUALITY_PORT": str(settings.quality_port),
            "LOOPWISE_LOG_LEVEL": "WARNING", **extra}


@contextlib.contextmanager
def quality_process(settings: Settings, log_dir: Path, **env: str) -> Iterator[Any]:
    """The quality service alone, as ``loopwise serve quality`` runs it."""
    from loopwise.processes import ServiceGroup

    group = ServiceGroup(settings, services=("quality",), env=quality_env(settings, **env),
                         log_dir=log_dir)
    group.start(timeout=600)
    try:
        yield group
    finally:
        group.stop()


def restart_seconds(group: Any) -> float:
    """SIGKILL the service and start it again; seconds until it is ready."""
    group.kill("quality")
    started = time.monotonic()
    group.restart("quality", timeout=1200)
    return time.monotonic() - started


async def drained(redis: aioredis.Redis, timeout: float) -> None:
    from shared.bus import group_drained

    deadline = time.monotonic() + timeout
    while not await group_drained(redis, streams.LABELS, streams.GROUP_QUALITY):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the quality group did not drain in {timeout:.0f} s")
        await asyncio.sleep(0.2)


async def checkpoint_votes(database_url: str, project: str) -> int:
    """Votes in the project's checkpoint (0: none)."""
    from sqlalchemy import select

    from services.quality.tables import quality_checkpoints
    from shared.db import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(quality_checkpoints.c.votes).where(
                quality_checkpoints.c.project == project))).scalar() or 0)
    finally:
        await engine.dispose()


async def delete_checkpoints(database_url: str) -> None:
    """The benchmark's projects' checkpoints."""
    from services.quality.tables import quality_checkpoints
    from shared.db import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(quality_checkpoints.delete().where(
                quality_checkpoints.c.project.like(f"{PREFIX}%")))
    finally:
        await engine.dispose()


async def empty_quality_tables(database_url: str, prefix: str = "") -> None:
    """The quality rows of the projects named ``prefix...`` (all: ``""``): a benchmark
    starts and ends without state of its own for a restart to replay."""
    from services.quality.tables import (
        quality_checkpoints,
        quality_consensus,
        quality_findings,
        quality_label_votes,
    )
    from shared.db import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            for table in (quality_checkpoints, quality_consensus, quality_findings,
                          quality_label_votes):
                await conn.execute(table.delete().where(table.c.project.like(f"{prefix}%")))
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- one project


def agreement(published: dict[str, str], reference: dict[str, str], items: set[str]
              ) -> tuple[int, int]:
    """(items whose published consensus differs from the reference, items compared)."""
    return sum(1 for i in items if published.get(i) != reference.get(i)), len(items)


async def settle_project(redis: aioredis.Redis, watcher: Watcher, project: str, votes: Votes,
                         timeout: float) -> dict[str, Any]:
    """Post a project's votes, wait for every consensus; check it against the reference."""
    started = time.monotonic()
    await post(redis, project, votes, 0)
    posted = time.monotonic()
    await drained(redis, timeout)
    wanted = eligible(votes)
    await watcher.until(wanted, timeout)
    settled = time.monotonic()
    reference = reference_consensus(votes)
    differ, compared = agreement(watcher.labels, reference, wanted)
    truth = votes.truth
    return {"votes": len(votes), "items": compared, "post_s": posted - started,
            "all_consensus_s": settled - started, "differ_from_reference": differ,
            "accuracy": sum(watcher.labels[i] == truth[i] for i in wanted) / compared,
            "reference_accuracy": sum(reference.get(i) == truth[i] for i in wanted) / compared,
            "consensus_events": watcher.events, "duplicate_events": watcher.duplicates}


async def bursts_latency(redis: aioredis.Redis, watcher: Watcher, project: str, first: int,
                         bursts: int, seed: int, timeout: float) -> dict[str, Any]:
    latencies = []
    n = first
    for b in range(bursts):
        burst = crowd_votes(BURST_ITEMS, f"b{b:03d}-", seed=seed + b, window=0)
        await post(redis, project, burst, n)
        n += len(burst)
        last_vote = time.monotonic()
        latencies.append(await watcher.until(set(burst.items), timeout) - last_vote)
    return {"bursts": bursts, "burst_votes": 3 * BURST_ITEMS, "latencies": latencies,
            "p50": float(np.percentile(latencies, 50)),
            "p95": float(np.percentile(latencies, 95)), "max": float(np.max(latencies))}


# --------------------------------------------------------------------------- the run


async def _run(sizes: tuple[int, ...], bursts: int, redis_url: str, database_url: str,
               port: int, restart: bool) -> dict[str, Any]:
    from shared.db import upgrade_async

    await upgrade_async(database_url)
    await empty_quality_tables(database_url, PREFIX)
    redis = aioredis.from_url(redis_url)
    await redis.flushdb()
    settings = Settings(redis_url=redis_url, database_url=database_url, quality_port=port)
    quiet = os.environ.get("LOOPWISE_QUALITY_QUIET_SECONDS", "2.0")
    env = {"LOOPWISE_QUALITY_QUIET_SECONDS": quiet,
           # The same path at every size: incremental updates from the first fit on.
           "LOOPWISE_QUALITY_FULL_REFIT_MAX_VOTES": "0",
           "LOOPWISE_QUALITY_CHECKPOINT_INTERVAL_SECONDS": "10"}
    out: dict[str, Any] = {"quiet_seconds": float(quiet), "sizes": []}
    try:
        with quality_process(settings, ROOT / "var" / "bench-logs", **env) as group:
            for size in sizes:
                project = f"{PREFIX}{size}"
                votes = crowd_votes(size // 3, "item-", seed=size)
                async with watching(redis, project) as watcher:
                    row = await settle_project(redis, watcher, project, votes,
                                               timeout=max(600.0, size / 200))
                    row.update(await bursts_latency(redis, watcher, project, len(votes),
                                                    bursts, seed=size, timeout=600))
                if restart:
                    total = len(votes) + bursts * 3 * BURST_ITEMS
                    deadline = time.monotonic() + 120
                    while await checkpoint_votes(database_url, project) < total:
                        if time.monotonic() > deadline:
                            raise TimeoutError("no checkpoint of the whole project in 120 s")
                        await asyncio.sleep(0.5)
                    row["restart_checkpoint_s"] = restart_seconds(group)
                    await delete_checkpoints(database_url)
                    row["restart_replay_s"] = restart_seconds(group)
                out["sizes"].append(row)
    finally:
        await redis.flushdb()
        await redis.aclose()
        await empty_quality_tables(database_url, PREFIX)  # nothing left to replay
    return out


def run(sizes: tuple[int, ...], bursts: int, redis_url: str, database_url: str, port: int,
        restart: bool = True) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    result = asyncio.run(_run(sizes, bursts, redis_url, database_url, port, restart))
    result["load"] = (load_start, os.getloadavg()[0])
    return result


def render(result: dict[str, Any]) -> list[str]:
    rows = result["sizes"]
    lines = [
        "### End to end: the quality service as a process (issue 16 items 1, 2 and 4: "
        "`--e2e`)",
        "",
        "The quality service alone (`loopwise serve quality`), on Redis and PostgreSQL; a "
        "project of N votes (5 classes, 40 labelers of four kinds, 3 votes an item, an "
        "item's votes a few thousand votes apart) posted on `loopwise:labels` in the wire "
        "format; the consensus read back from the same stream. Every size in the same "
        "process, on the same path (`LOOPWISE_QUALITY_FULL_REFIT_MAX_VOTES=0`: incremental "
        "updates from the first fit on, background refits adopted as they come). Latency: "
        f"{rows[0]['bursts'] if rows else 0} bursts of {3 * BURST_ITEMS} votes on "
        f"{BURST_ITEMS} new items, each after the previous burst's consensus arrived; from "
        "the last vote of a burst on the stream to the consensus of all its items on the "
        f"stream, **debounce included** (quiet {result['quiet_seconds']:g} s). Reference: "
        "Dawid-Skene fitted from scratch on the same votes. Restart: SIGKILL, then the "
        "process started again until `/readyz`, with the checkpoint, and with the "
        "checkpoints deleted (every vote replayed: the baseline, same run). "
        f"{load_note([result['load']] if 'load' in result else [])}",
        "",
        "| votes | all consensus published after posting began (s) | off the reference | "
        "accuracy (reference) | p50 (s) | p95 (s) | max (s) | p95 / smallest p95 | "
        "restart, checkpoint (s) | restart, replay every vote (s) | duplicate events |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = rows[0]["p95"] if rows else 1.0
    for r in rows:
        lines.append(
            f"| {r['votes']:,} | {r['all_consensus_s']:.1f} | {r['differ_from_reference']} of "
            f"{r['items']:,} | {r['accuracy']:.4f} ({r['reference_accuracy']:.4f}) | "
            f"{r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | {r['p95'] / base:.2f}x | "
            + (f"{r['restart_checkpoint_s']:.1f} | {r['restart_replay_s']:.1f} | "
               if "restart_checkpoint_s" in r else "— | — | ")
            + f"{r['duplicate_events']} |")
    return lines

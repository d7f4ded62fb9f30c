"""The quality service's resident memory under a steady stream of auto labels (issue 13).

``loopwise serve quality`` runs alone on a Redis database of this benchmark's own
(FLUSHED at start) and the given label store; this process posts auto label events on
the project's shard of ``loopwise:labels`` in the router's wire format (one distinct item
each, as in the soak, or ``--items`` of them over and over) at a fixed rate, in 10 ms
ticks, and every ``--sample-seconds`` reads the service's VmRSS from /proc and how far its
group has read. The growth reported is from the end of the warm-up to the end.

A tool to bisect a memory growth: ``--env`` passes settings or allocator variables to
the service (``--env MALLOC_ARENA_MAX=2``, ``--env LOOPWISE_QUALITY_CHECKPOINT_INTERVAL_
SECONDS=100000``), ``--database-url`` may carry driver options.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis as sync_redis
import redis.asyncio as aioredis

from bench.soak import rss_mib
from loopwise.processes import ServiceGroup
from shared import sharding, streams
from shared.db import upgrade
from shared.events import LabelEvent, LabelSource
from shared.settings import Settings

TICK = 0.01


def say(message: str) -> None:
    print(f"[quality memory {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Feed:
    project: str
    rate: float
    total: int
    items: int  # 0: a new item each label
    template: dict[str, object]
    salt: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    posted: int = 0
    started: float = 0.0

    def wire(self, n: int) -> bytes:
        """Label ``n`` as the router writes an auto label (shared fields from a template)."""
        item = n % self.items if self.items else n
        label = "a" if n % 3 else "b"
        return orjson.dumps({**self.template,
                             "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.salt}/{n}")),
                             "item_id": f"m{item}", "label": label, "model_label": label,
                             "confidence": 0.95})


def template(project: str) -> dict[str, object]:
    return LabelEvent(project=project, item_id="-", label="-", labeler_id="model:mem-m1",
                      source=LabelSource.auto, model_version="mem-m1",
                      created_at=datetime.now(UTC), batch_id="mem").model_dump(mode="json")


async def produce(redis: aioredis.Redis, feed: Feed, stream: str) -> None:
    while feed.posted < feed.total:
        due = min(feed.total, int((time.monotonic() - feed.started) * feed.rate) + 1)
        if due > feed.posted:
            pipe = redis.pipeline(transaction=False)
            for n in range(feed.posted, due):
                pipe.xadd(stream, {"data": feed.wire(n)})
            await pipe.execute()
            feed.posted = due
        await asyncio.sleep(TICK)


async def read_by_quality(redis: aioredis.Redis, stream: str) -> tuple[int, int]:
    """Entries the quality group has read, and its lag."""
    for g in await redis.xinfo_groups(stream):
        if g["name"].decode() == streams.GROUP_QUALITY:
            return int(g.get("entries-read") or 0), int(g.get("lag") or 0)
    return 0, 0


async def sample(redis: aioredis.Redis, pid: int, feed: Feed, stream: str, every: float,
                 stop: asyncio.Event, samples: list[dict[str, float]]) -> None:
    while not stop.is_set():
        read, lag = await read_by_quality(redis, stream)
        now = time.monotonic() - feed.started
        samples.append({"t": now, "posted": feed.posted, "read": read, "lag": lag,
                        "rss": rss_mib(pid)})
        say(f"{now:6.0f} s  posted {feed.posted:>10,}  read {read:>10,}  lag {lag:>7,}  "
            f"RSS {samples[-1]['rss']:7.1f} MiB")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def drive(settings: Settings, pid: int, feed: Feed, every: float
                ) -> list[dict[str, float]]:
    redis = aioredis.Redis.from_url(settings.redis_url)
    stream = sharding.project_stream(streams.LABELS, feed.project, settings.shards)
    samples: list[dict[str, float]] = []
    stop = asyncio.Event()
    feed.started = time.monotonic()
    sampler = asyncio.create_task(sample(redis, pid, feed, stream, every, stop, samples))
    try:
        await produce(redis, feed, stream)
        for _ in range(240):  # up to two minutes for the service to read the rest
            if (await read_by_quality(redis, stream))[0] >= feed.total:
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await sampler
        await redis.aclose()
    return samples


def report(samples: list[dict[str, float]], warmup: float, rate: float) -> str:
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        return "too short a run to judge"
    first, last = after[0], after[-1]
    labels = max(last["read"] - first["read"], 1)
    growth = last["rss"] / first["rss"] - 1
    return (f"RSS {samples[0]['rss']:.1f} MiB at start, {first['rss']:.1f} MiB at "
            f"{first['t']:.0f} s (end of warm-up), {last['rss']:.1f} MiB at {last['t']:.0f} s: "
            f"{growth:+.1%} after warm-up, "
            f"{(last['rss'] - first['rss']) * 2**20 / labels:.1f} bytes a label over "
            f"{labels:,.0f} labels; peak {max(s['rss'] for s in samples):.1f} MiB; "
            f"largest lag {max(s['lag'] for s in samples):,.0f} at {rate:,.0f}/s")


def run(rate: float, seconds: float, warmup: float, redis_url: str, database_url: str,
        port: int, items: int, every: float, env: dict[str, str],
        retention_seconds: int) -> str:
    say(f"Redis database {redis_url} is this benchmark's own: flushing it now")
    sync_redis.Redis.from_url(redis_url).flushdb(asynchronous=True)  # big leftovers: no timeout
    upgrade(database_url.split("?", 1)[0])
    settings = Settings(redis_url=redis_url, database_url=database_url, quality_port=port)
    logs = Path(tempfile.mkdtemp(prefix="loopwise-quality-memory-"))
    project = f"mem-{uuid.uuid4().hex[:8]}"
    feed = Feed(project=project, rate=rate, total=int(rate * seconds), items=items,
                template=template(project))
    service_env = {"LOOPWISE_REDIS_URL": redis_url, "LOOPWISE_DATABASE_URL": database_url,
                   "LOOPWISE_QUALITY_PORT": str(port), "LOOPWISE_LOG_LEVEL": "WARNING",
                   "LOOPWISE_STREAM_RETENTION_SECONDS": str(retention_seconds), **env}
    say(f"project {project}, {feed.total:,} auto labels at {rate:,.0f}/s, "
        f"{'a new item each' if not items else f'{items:,} items'}; env {env}; logs {logs}")
    with ServiceGroup(settings, services=("quality",), env=service_env, log_dir=logs) as group:
        samples = asyncio.run(drive(settings, group.procs["quality"].pid, feed, every))
    return report(samples, warmup, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2500.0)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, default=29504)
    parser.add_argument("--items", type=int, default=0,
                        help="distinct items, reused in turn (0: a new item each label)")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--retention-seconds", type=int, default=60,
                        help="LOOPWISE_STREAM_RETENTION_SECONDS (the soak's 60 by default)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for the service (repeatable)")
    args = parser.parse_args()
    env = dict(e.split("=", 1) for e in args.env)
    print(run(args.rate, args.seconds, args.warmup, args.redis_url, args.database_url,
              args.port, args.items, args.sample_seconds, env, args.retention_seconds))


if __name__ == "__main__":
    main()

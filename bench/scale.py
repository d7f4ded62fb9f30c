"""Scale-out benchmark: one replica of the router and the labels service against two.

A replica is a whole ``loopwise serve <service>`` process with its own HTTP port, its
consumers in the same groups as the other replica's (README "Scaling out"). In each run
a dedicated Redis database (FLUSHED at start) and a fresh project get N predictions in
the contract's wire format (half at 0.99, auto-accepted, half at 0.6, queued for
review), posted as fast as one pipelining client can once the replicas are ready; the
run is timed from the first entry posted until the router group and the labels group
have nothing left to read or acknowledge and every auto label is in the label store.
Runs alternate one and two replicas, so the machine's other load falls on both.

What it can show on a small machine: whether a second replica adds throughput at all
(shared groups, no lock contention) and what it costs in CPU. What it cannot: on two
cores the two configurations compete for the same cores (the single replica already
uses about one core per service), so the ratio is bounded by the cores, not by the
design; the scaling of more machines is not measured here.

Run with ``loopwise bench scale --database-url postgresql+asyncpg://...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select

from bench import report
from loopwise.processes import ServiceGroup
from services.labels.tables import label_events
from shared import streams
from shared.bus import group_drained
from shared.db import make_engine, upgrade
from shared.settings import Settings

SECTION = "## Scale-out (loopwise bench scale)"
SERVICES = ("router", "labels")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = ((streams.PREDICTIONS, streams.GROUP_ROUTER), (streams.LABELS, streams.GROUP_LABELS))


def say(message: str) -> None:
    print(message, flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _wire(project: str, n: int) -> dict[str, str]:
    confidence = 0.99 if n % 2 else 0.6
    return {"data": json.dumps({
        "project": project, "item_id": f"s-{n:07d}", "model_version": "m-scale",
        "probs": {"a": confidence, "b": round(1 - confidence, 2)}})}


def _settings(redis_url: str, database_url: str, port_base: int, replica: int) -> Settings:
    base = port_base + 10 * replica
    return Settings(redis_url=redis_url, database_url=database_url, router_port=base + 2,
                    labels_port=base + 3, scorer_port=base + 1, quality_port=base + 4)


def _env(s: Settings) -> dict[str, str]:
    return {"LOOPWISE_REDIS_URL": s.redis_url, "LOOPWISE_DATABASE_URL": s.database_url,
            "LOOPWISE_ROUTER_PORT": str(s.router_port),
            "LOOPWISE_LABELS_PORT": str(s.labels_port),
            "LOOPWISE_SCORER_PORT": str(s.scorer_port),
            "LOOPWISE_QUALITY_PORT": str(s.quality_port),
            "LOOPWISE_LABELS_URL": s.url_of("labels"),
            "LOOPWISE_STREAM_WORKERS": "1", "LOOPWISE_LOG_LEVEL": "WARNING"}


async def _settled(redis_url: str, database_url: str, project: str, expected: int,
                  started: float) -> tuple[int, int]:
    """Wait until both groups are drained and every auto label is stored; (stored,
    distinct items)."""
    client = aioredis.from_url(redis_url)
    engine = make_engine(database_url)
    where = (label_events.c.project == project, label_events.c.source == "auto")
    try:
        stored = 0
        while True:
            if all([await group_drained(client, s, g) for s, g in GROUPS]):
                async with engine.connect() as conn:
                    stored = (await conn.execute(select(func.count()).where(*where))
                              ).scalar_one()
                if stored >= expected:
                    break
            if time.monotonic() - started > 600:
                raise TimeoutError(f"{stored} of {expected} auto labels stored")
            await asyncio.sleep(0.05)
        async with engine.connect() as conn:
            distinct = (await conn.execute(select(func.count(func.distinct(
                label_events.c.item_id))).where(*where))).scalar_one()
        return stored, distinct
    finally:
        await client.aclose()
        await engine.dispose()


def one_run(replicas: int, n: int, redis_url: str, database_url: str,
            port_base: int) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    project = f"scale-{uuid.uuid4().hex[:8]}"
    groups = []
    try:
        for replica in range(replicas):
            s = _settings(redis_url, database_url, port_base, replica)
            group = ServiceGroup(s, services=SERVICES, env=_env(s))
            groups.append(group)
            group.start(timeout=120)
        pids = [p.pid for g in groups for p in g.procs.values()]
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        for start in range(0, n, 5000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + 5000)):
                pipe.xadd(streams.PREDICTIONS, _wire(project, i))
            pipe.execute()
        posted = time.monotonic() - started
        expected = n // 2
        stored, distinct = asyncio.run(_settled(redis_url, database_url, project, expected,
                                                started))
        seconds = time.monotonic() - started
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        consumers = {g["name"].decode(): len(client.xinfo_consumers(streams.PREDICTIONS,
                                                                    g["name"]))
                     for g in client.xinfo_groups(streams.PREDICTIONS)}
        return {"replicas": replicas, "n": n, "seconds": seconds, "posted": posted,
                "rate": n / seconds, "stored": stored, "distinct": distinct,
                "expected": expected, "cpu": cpu,
                "router_consumers": consumers.get(streams.GROUP_ROUTER, 0)}
    finally:
        for group in groups:
            group.stop()
        client.close()


def run(n: int = 60_000, rounds: int = 2, redis_url: str = "redis://127.0.0.1:6379/11",
        database_url: str = "", port_base: int = 29200) -> str:
    if not database_url.startswith("postgresql"):
        raise ValueError("bench scale needs --database-url postgresql+asyncpg://...")
    say(f"bench scale: FLUSHING {redis_url} before each run")
    upgrade(database_url)
    load_start = os.getloadavg()
    results = []
    for r in range(rounds):
        for replicas in (1, 2):
            result = one_run(replicas, n, redis_url, database_url, port_base)
            result["round"] = r + 1
            say(f"round {r + 1}, {replicas} replica(s): {result['seconds']:.2f} s, "
                f"{result['rate']:,.0f}/s, CPU {result['cpu']:.1f} s")
            results.append(result)
    load_end = os.getloadavg()
    return _report(results, redis_url, database_url, load_start, load_end)


def _report(results: list[dict[str, Any]], redis_url: str, database_url: str,
            load_start: tuple[float, ...], load_end: tuple[float, ...]) -> str:
    n = results[0]["n"]
    lines = [
        f"{n:,} predictions a run posted as fast as one pipelining client can (half "
        "auto-accepted, half queued), through the router and the labels service; one "
        "replica (one `loopwise serve` process of each) against two (two of each, on "
        "their own ports, in the same consumer groups), alternating. Timed from the first "
        "entry posted until both groups have nothing to read or acknowledge and every "
        "auto label is stored in PostgreSQL.",
        "",
        "| round | replicas | seconds | predictions/s | vs one replica | CPU s (all processes) "
        "| CPU µs per prediction | auto labels stored (distinct) | router consumers |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    by_round: dict[int, dict[int, dict[str, Any]]] = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["replicas"]] = r
    for r in results:
        one = by_round[r["round"]][1]["rate"]
        lines.append(
            f"| {r['round']} | {r['replicas']} | {r['seconds']:.2f} | {r['rate']:,.0f} | "
            f"{r['rate'] / one:.0%} | {r['cpu']:.1f} | {1e6 * r['cpu'] / r['n']:.0f} | "
            f"{r['stored']:,} ({r['distinct']:,}) of {r['expected']:,} | "
            f"{r['router_consumers']} |")
    ratios = sorted(by_round[k][2]["rate"] / by_round[k][1]["rate"] for k in by_round)
    ok = all(r["stored"] == r["distinct"] == r["expected"] for r in results)
    lines += [
        "",
        f"Two replicas against one, per round: {', '.join(f'{x:.0%}' for x in ratios)}. "
        f"Every auto label stored exactly once in every run: **{'yes' if ok else 'NO'}**.",
        "",
        "Reading it: CPU is the service processes' own (router and labels, from "
        "/proc); Redis, PostgreSQL and the posting client share the same two cores and "
        "are not in it. One replica already keeps the machine busy (its two processes use "
        "about one core, Redis and PostgreSQL most of the other), so a second replica "
        "has no idle core to add: on two cores it shows that replicas share the groups "
        "correctly (every entry handled once, both consumers reading) at a small CPU cost "
        "per prediction, not that throughput grows with replicas. That needs replicas on "
        "cores (or machines) of their own, with Redis and PostgreSQL sized to match.",
        "",
        f"Machine load average at start / end: {' '.join(f'{x:.2f}' for x in load_start)} / "
        f"{' '.join(f'{x:.2f}' for x in load_end)} ({os.cpu_count()} cores, shared with other "
        f"work). Redis {redis_url} (flushed before each run), label store "
        f"{database_url.split('://')[0]}.",
    ]
    return "\n".join(lines)


__all__ = ["SECTION", "report", "run"]

"""The router's scripts on a Redis Cluster: the auto-pipelining client against redis-py's.

Issue 18 item 1 leaves a choice: extend the auto-pipelining link (``shared.redislink``,
one connection a node that sends every call of an event-loop turn in one write) to the
cluster, or let redis-py's cluster client (``redis.asyncio.RedisCluster``: a pooled
connection a call, routed by the keys' slot) carry the router's scripts there. This
measures both on the same six-node cluster in the same run, through the router's own
``ReviewQueue`` (so the same scripts, keys and shards as in production):

- *routing*: concurrent routers each send chunks of 100 predictions (half become review
  tasks, half auto labels XADDed to the label stream shard), one script call a shard;
- *review*: concurrent reviewers each lease a task (``next``) and submit it
  (``commit_submit``): two script calls a review, what the reviewer API makes.

Modes alternate A B B A across rounds, so drift of the machine's other load falls on
both. Each run uses keys of its own (a fresh prefix) on twelve projects, one per shard.
CPU is this process's (the client side); Redis' six processes share the same cores.

Run with ``loopwise bench cluster`` (starts its own cluster on loopback).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import orjson

from loopwise.localcluster import LocalCluster
from loopwise.processes import run_loop
from services.router.queue import ReviewQueue, routed_task_id
from shared import sharding
from shared.redisconn import connect

SECTION = "## Redis Cluster client (loopwise bench cluster)"
SHARDS = sharding.DEFAULT_CLUSTER_SHARDS
MODES = {"redis-py cluster client": False, "auto-pipelining link": True}


def say(message: str) -> None:
    print(message, flush=True)


def projects_one_per_shard(run: str) -> list[str]:
    """Project names covering every shard once (so every master gets its share)."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < SHARDS:
        name = f"bc-{run}-{n}"
        found.setdefault(sharding.shard_of(name, SHARDS), name)
        n += 1
    return [found[k] for k in range(SHARDS)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_run(url: str, pipelined: bool, predictions: int, routers: int,
                  reviewers: int, reviews: int) -> dict[str, Any]:
    client = connect(url)
    run = uuid.uuid4().hex[:8]
    queue = ReviewQueue(client, prefix=f"bench:{run}:", shards=SHARDS, pipelined=pipelined)
    projects = projects_one_per_shard(run)
    stream = f"bench:{run}:labels"
    chunk = 100
    try:
        await client.initialize()  # type: ignore[attr-defined]  # the slot map, not timed
        for script in (queue._enqueue, queue._next, queue._submit):
            await client.script_load(script.script)

        def rows(start: int) -> tuple[list[Any], list[tuple[str, bytes]]]:
            tasks, labels = [], []
            for n in range(start, min(predictions, start + chunk)):
                project = projects[n % len(projects)]
                if n % 2:
                    labels.append((project, orjson.dumps({"project": project, "n": n})))
                else:
                    tasks.append((routed_task_id(f"{run}-{n}", project, SHARDS), project,
                                  f"i{n}", 0.5, 1, "review", b'{"probs": {"a": 0.6}}'))
            return tasks, labels

        starts = list(range(0, predictions, chunk))

        async def router(worker: int) -> None:
            for start in starts[worker::routers]:
                tasks, labels = rows(start)
                await queue.enqueue_rows(tasks, labels=(stream, labels))

        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(router(w) for w in range(routers)))
        route_s, route_cpu = time.monotonic() - t0, time.process_time() - cpu0

        latencies: list[float] = []
        done = 0

        async def reviewer(worker: int) -> None:
            nonlocal done
            labeler = f"rev-{worker}"
            turn = worker
            while done < reviews:
                project = projects[turn % len(projects)]
                turn += 1
                began = time.monotonic()
                got = await queue.next(project, labeler, 600)
                if got is None:
                    continue
                task_id = got[0]
                event_id = str(uuid.uuid4())
                await queue.commit_submit(project, task_id, labeler, event_id, stream,
                                          orjson.dumps({"event_id": event_id}).decode())
                latencies.append(time.monotonic() - began)
                done += 1

        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(reviewer(w) for w in range(reviewers)))
        review_s, review_cpu = time.monotonic() - t0, time.process_time() - cpu0
        stored = 0
        for k in range(SHARDS):
            stored += await client.xlen(queue.labels_stream(stream, k))
        return {"pipelined": pipelined, "route_s": route_s, "route_cpu": route_cpu,
                "route_rate": predictions / route_s, "review_s": review_s,
                "review_cpu": review_cpu, "review_rate": len(latencies) / review_s,
                "reviews": len(latencies), "p50": statistics.median(latencies),
                "p99": _percentile(latencies, 0.99), "stream_entries": stored,
                "expected_entries": predictions // 2 + len(latencies)}
    finally:
        await queue.aclose()
        await client.aclose()


def run(rounds: int = 2, predictions: int = 24_000, routers: int = 8, reviewers: int = 48,
        reviews: int = 6_000, cluster_url: str = "", port_base: int = 29400) -> str:
    cluster = None
    if not cluster_url:
        say(f"bench cluster: starting six redis-server nodes at {port_base}..{port_base + 5}")
        cluster = LocalCluster(port_base).start()
        cluster_url = cluster.url
    load_start = os.getloadavg()
    results: list[dict[str, Any]] = []
    try:
        order = [False, True, True, False] * ((rounds + 1) // 2)
        for i, pipelined in enumerate(order[: 2 * rounds]):
            result = run_loop(one_run(cluster_url, pipelined, predictions, routers,
                                      reviewers, reviews))
            result["round"] = i // 2 + 1
            mode = next(m for m, p in MODES.items() if p == pipelined)
            say(f"round {result['round']}, {mode}: routing {result['route_rate']:,.0f} "
                f"predictions/s, review {result['review_rate']:,.0f} reviews/s "
                f"(p99 {1000 * result['p99']:.1f} ms)")
            results.append(result)
    finally:
        if cluster is not None:
            cluster.stop()
    return _report(results, predictions, routers, reviewers, load_start, os.getloadavg())


def _report(results: list[dict[str, Any]], predictions: int, routers: int, reviewers: int,
            load_start: tuple[float, ...], load_end: tuple[float, ...]) -> str:
    lines = [
        f"The router's scripts through `ReviewQueue` on a six-node Redis Cluster (three "
        f"masters, three replicas, loopback), {SHARDS} projects one a shard. Routing: "
        f"{predictions:,} predictions in chunks of 100 from {routers} concurrent routers "
        f"(half tasks, half auto labels XADDed in the same script, one call a shard). "
        f"Review: {reviewers} concurrent reviewers, each review a `next` and a "
        f"`commit_submit` (two script calls). Modes alternate A B B A.",
        "",
        "| round | client | routing predictions/s | client CPU µs a prediction "
        "| reviews/s | review p50 ms | review p99 ms | client CPU µs a review "
        "| label stream entries |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        mode = next(m for m, p in MODES.items() if p == r["pipelined"])
        ok = "ok" if r["stream_entries"] == r["expected_entries"] else "MISMATCH"
        lines.append(
            f"| {r['round']} | {mode} | {r['route_rate']:,.0f} | "
            f"{1e6 * r['route_cpu'] / predictions:.0f} | {r['review_rate']:,.0f} | "
            f"{1000 * r['p50']:.1f} | {1000 * r['p99']:.1f} | "
            f"{1e6 * r['review_cpu'] / r['reviews']:.0f} | "
            f"{r['stream_entries']:,} of {r['expected_entries']:,} {ok} |")

    def mean(pipelined: bool, key: str) -> float:
        return statistics.fmean(r[key] for r in results if r["pipelined"] == pipelined)

    route = mean(True, "route_rate") / mean(False, "route_rate")
    review = mean(True, "review_rate") / mean(False, "review_rate")
    lines += [
        "",
        f"Auto-pipelining link against redis-py's cluster client (mean of the rounds): "
        f"routing **{route:.2f}x**, review **{review:.2f}x** the throughput; review p99 "
        f"{1000 * mean(True, 'p99'):.1f} ms against {1000 * mean(False, 'p99'):.1f} ms.",
        "",
        f"Machine load average at start / end: {' '.join(f'{x:.2f}' for x in load_start)} / "
        f"{' '.join(f'{x:.2f}' for x in load_end)} ({os.cpu_count()} cores, shared with "
        f"other work; the six Redis nodes run on the same cores as the client).",
    ]
    return "\n".join(lines)


__all__ = ["SECTION", "run"]

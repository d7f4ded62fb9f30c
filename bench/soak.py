"""Soak: predictions at a fixed rate through the whole stack, for minutes.

The four services run as processes (``loopwise serve``, as ``loopwise up`` runs them) on
a Redis database of the benchmark's own (announced, then FLUSHED) and their own ports.
This process posts predictions to ``loopwise:predictions`` at ``rate`` a second (10 ms
ticks, one pipeline a tick, over loopback), half of them confident (auto labels) and
half not (review tasks; nobody reviews them), and every second samples each service's
resident memory (VmRSS of the service and its stream workers, from /proc), the streams'
lengths and what the router and labels groups have read.

Latency, end to end:
* posted → auto label stored: the prediction's stream entry id (Redis's clock, in ms,
  when it was added) to the label store's ``stored_at`` (the database's clock at the
  insert's transaction);
* posted → task queued: the entry id to the task's ``created_at`` (the router's clock
  when it began routing the batch; the task is written within that batch, a few ms on).
Every auto label is measured; tasks are sampled (one in ``TASK_SAMPLE``), read back at
the end. Percentiles over the whole run and after the warm-up; memory growth is from the
end of the warm-up to the end; a stream is bounded if its length stopped growing (the
second half's slope is under 1% of the rate).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis as sync_redis
import redis.asyncio as aioredis
from sqlalchemy import select

from loopwise.processes import ServiceGroup
from services.labels.tables import label_events
from services.router.queue import routed_task_id, task_key_of
from shared import sharding, streams
from shared.auth import create_token
from shared.bus import group_drained
from shared.db import make_engine, upgrade
from shared.redisconn import connect
from shared.settings import SERVICES, Settings

SECTION = "## Soak (loopwise bench soak)"
TICK = 0.01
HOT = ("router", "labels")  # the services on the latency path
TASK_SAMPLE = 20
WATCHED = (streams.PREDICTIONS, streams.LABELS, streams.QUALITY, streams.DEADLETTER)
DRAINED = ((streams.PREDICTIONS, streams.GROUP_ROUTER), (streams.LABELS, streams.GROUP_LABELS))
GOAL_P99_S = 1.0
GOAL_RSS_GROWTH = 0.10
TRIM_INTERVAL_S = 30.0  # the services' default LOOPWISE_TRIM_INTERVAL_SECONDS


def say(message: str) -> None:
    print(f"[bench soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (a service and its stream workers)."""
    total = 0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _event_id(salt: int, n: int) -> str:
    """Prediction ``n``'s event id; ``salt`` is the run's own, so that a label store that
    earlier runs wrote to never takes this run's labels for repeats."""
    h = f"{salt:016x}{n:016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:]}"


@dataclass
class Run:
    rate: float
    seconds: float
    warmup: float
    project: str
    total: int
    auto: np.ndarray  # bool per prediction
    posted_ms: np.ndarray  # int64 per prediction, 0 = not posted
    salt: int = field(default_factory=lambda: uuid.uuid4().int >> 64)
    posted: int = 0
    started: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    # ((auto posted ms, latency s), (task posted ms, latency s)), read back at the end
    latency: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None


def _wire(run: Run, n: int) -> bytes:
    p = 0.95 if run.auto[n] else 0.6
    event_id = _event_id(run.salt, n).encode()
    return (b'{"event_id":"%s","project":"%s","item_id":"s%d","model_version":"soak-m1",'
            b'"probs":{"a":%.2f,"b":%.2f}}' % (event_id, run.project.encode(), n, p, 1 - p))


async def _produce(redis: aioredis.Redis, run: Run) -> None:
    """Post at the fixed rate: each tick, what is due since the start."""
    while run.posted < run.total:
        due = min(run.total, int((time.monotonic() - run.started) * run.rate) + 1)
        if due > run.posted:
            first = run.posted
            pipe = redis.pipeline(transaction=False)
            for n in range(first, due):
                pipe.xadd(streams.PREDICTIONS, {"data": _wire(run, n)})
            ids = await pipe.execute()
            run.posted_ms[first:due] = [int(i.split(b"-")[0]) for i in ids]
            run.posted = due
        await asyncio.sleep(TICK)


async def _sample(redis: aioredis.Redis, procs: dict[str, Any], run: Run,
                  stop: asyncio.Event, shards: int) -> None:
    """Each watched stream's length and each group's read count and lag, summed over the
    stream's shards."""
    last_say = 0.0
    watched = [(s, name) for s in WATCHED for name in sharding.names_of(s, shards)]
    grouped = [(s, g, name) for s, g in DRAINED for name in sharding.names_of(s, shards)]
    while not stop.is_set():
        now = time.monotonic() - run.started
        pipe = redis.pipeline(transaction=False)
        for _, name in watched:
            pipe.xlen(name)
        for _, _, name in grouped:
            pipe.xinfo_groups(name)
        replies = await pipe.execute(raise_on_error=False)
        lengths = dict.fromkeys(WATCHED, 0)
        for (s, _), v in zip(watched, replies[:len(watched)], strict=True):
            lengths[s] += int(v) if isinstance(v, int) else 0
        read: dict[str, int] = {}
        for (stream, group, _), groups in zip(grouped, replies[len(watched):], strict=True):
            for g in groups if isinstance(groups, list) else []:
                if g["name"].decode() == group:
                    read[stream] = read.get(stream, 0) + int(g.get("entries-read") or 0)
                    read[stream + ":lag"] = read.get(stream + ":lag", 0) + int(
                        g.get("lag") or 0)
        sample = {"t": now, "posted": run.posted, "lengths": lengths, "read": read,
                  "rss": {name: rss_mib(proc.pid) for name, proc in procs.items()}}
        run.samples.append(sample)
        if now - last_say >= 10:
            last_say = now
            say(f"{now:5.0f} s: posted {run.posted:,} ({run.posted / max(now, 1e-9):,.0f}/s), "
                f"routed {read.get(streams.PREDICTIONS, 0):,} (lag "
                f"{read.get(streams.PREDICTIONS + ':lag', 0):,}), labels read "
                f"{read.get(streams.LABELS, 0):,}; lengths "
                + ", ".join(f"{s.split(':')[1]} {n:,}" for s, n in lengths.items())
                + "; RSS MiB " + ", ".join(f"{k} {v:.0f}" for k, v in sample["rss"].items()))
        await asyncio.sleep(1.0)


async def _drained(redis: aioredis.Redis, shards: int) -> bool:
    """Router and labels groups have read every shard up to its last entry and have
    nothing pending."""
    return all([await group_drained(redis, stream, group, shards)
                for stream, group in DRAINED])


async def _latencies(redis: aioredis.Redis, database_url: str, run: Run
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(auto: posted ms, latency s), (task sample: posted ms, latency s), tasks missing."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(label_events.c.item_id, label_events.c.stored_at).where(
                    label_events.c.project == run.project, label_events.c.source == "auto"))
                    ).all()
    finally:
        await engine.dispose()
    idx = np.fromiter((int(item[1:]) for item, _ in rows), dtype=np.int64, count=len(rows))
    stored = np.fromiter((at.timestamp() * 1000 for _, at in rows), dtype=np.float64,
                         count=len(rows))
    auto_posted = run.posted_ms[idx]
    auto_lat = (stored - auto_posted) / 1000
    sampled = np.flatnonzero(~run.auto[:run.posted])[::TASK_SAMPLE]
    pipe = redis.pipeline(transaction=False)
    for n in sampled:
        task_id = routed_task_id(_event_id(run.salt, int(n)), run.project, Settings().shards)
        pipe.hget(task_key_of(task_id), "body")
    bodies = await pipe.execute()
    task_posted, task_lat, missing = [], [], 0
    for n, body in zip(sampled, bodies, strict=True):
        if body is None:
            missing += 1
            continue
        created = datetime.fromisoformat(orjson.loads(body)["created_at"]).timestamp() * 1000
        task_posted.append(run.posted_ms[n])
        task_lat.append((created - run.posted_ms[n]) / 1000)
    return (auto_posted, auto_lat, np.asarray(task_posted, dtype=np.float64),
            np.asarray(task_lat), missing)


def _pcts(lat: np.ndarray) -> dict[str, float]:
    if not len(lat):
        return {"n": 0}
    q = np.quantile(lat, [0.5, 0.9, 0.99, 0.999])
    return {"n": len(lat), "p50": q[0], "p90": q[1], "p99": q[2], "p99.9": q[3],
            "max": float(lat.max())}


def _fmt(p: dict[str, float]) -> str:
    if not p["n"]:
        return "| 0 | — | — | — | — | — |"
    return (f"| {p['n']:,} | {p['p50'] * 1000:,.0f} | {p['p90'] * 1000:,.0f} | "
            f"{p['p99'] * 1000:,.0f} | {p['p99.9'] * 1000:,.0f} | {p['max'] * 1000:,.0f} |")


def _plot(run: Run, auto: tuple[np.ndarray, np.ndarray], tasks: tuple[np.ndarray, np.ndarray],
          path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t"] for s in run.samples])
    fig, ax = plt.subplots(2, 2, figsize=(13, 8), sharex=True)
    posted = np.array([s["posted"] for s in run.samples], dtype=float)
    routed = np.array([s["read"].get(streams.PREDICTIONS, 0) for s in run.samples], dtype=float)
    labelled = np.array([s["read"].get(streams.LABELS, 0) for s in run.samples], dtype=float)
    for series, name in ((posted, "posted"), (routed, "routed (router group read)"),
                         (labelled, "label events read (labels group)")):
        ax[0, 0].plot(t[1:], np.diff(series) / np.maximum(np.diff(t), 1e-9), label=name, lw=0.8)
    ax[0, 0].set_ylabel("entries/s")
    ax[0, 0].set_title("throughput")
    start_ms = run.posted_ms[0]
    width = max(1.0, run.seconds / 60)  # about 60 windows
    for (at, lat), name in ((auto, "posted → auto label stored"),
                            (tasks, "posted → task queued")):
        if not len(lat):
            continue
        window = ((at - start_ms) / 1000 // width).astype(int)
        xs, p50, p99 = [], [], []
        for w in np.unique(window):
            chunk = lat[window == w]
            xs.append((w + 0.5) * width)
            p50.append(np.quantile(chunk, 0.5))
            p99.append(np.quantile(chunk, 0.99))
        ax[0, 1].plot(xs, p99, label=f"{name} p99", lw=1, marker=".", ms=3)
        ax[0, 1].plot(xs, p50, label=f"{name} p50", lw=1, ls="--", marker=".", ms=3)
    ax[0, 1].axhline(GOAL_P99_S, color="red", lw=0.6, ls=":", label="goal p99")
    ax[0, 1].set_ylabel("s")
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_title(f"end-to-end latency ({width:.0f} s windows, by time posted)")
    for s in WATCHED:
        ax[1, 0].plot(t, [x["lengths"][s] for x in run.samples], label=s, lw=1)
    ax[1, 0].set_ylabel("entries")
    ax[1, 0].set_title("stream lengths")
    for name in run.samples[0]["rss"]:
        ax[1, 1].plot(t, [x["rss"][name] for x in run.samples], label=name, lw=1)
    ax[1, 1].set_ylabel("MiB")
    ax[1, 1].set_title("resident memory per service")
    for a in ax.flat:
        a.axvline(run.warmup, color="grey", lw=0.6, ls=":")
        a.legend(fontsize=7)
    for a in ax[1]:
        a.set_xlabel("s since the first prediction")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def _run(settings: Settings, procs: dict[str, Any], run: Run, database_url: str,
               retention_seconds: int) -> str:
    redis = connect(settings.redis_url)
    engine = make_engine(database_url)
    try:
        admin = await create_token(engine, "soak-admin", "admin", run.project)
        import httpx

        async with httpx.AsyncClient(base_url=settings.url_of("labels"), timeout=60,
                                     headers={"Authorization": f"Bearer {admin}"}) as http:
            r = await http.patch(f"/v1/projects/{run.project}",
                                 json={"routing": {"queue_cap": 100_000_000}})
            r.raise_for_status()
        await asyncio.sleep(3)  # the settings reach the router
        stop = asyncio.Event()
        run.started = time.monotonic()
        say(f"posting {run.total:,} predictions at {run.rate:,.0f}/s for {run.seconds:.0f} s")
        sampler = asyncio.create_task(_sample(redis, procs, run, stop, settings.shards))
        await _produce(redis, run)
        posting_took = time.monotonic() - run.started
        say(f"posted {run.posted:,} in {posting_took:.1f} s; waiting for the services to drain")
        for _ in range(240):  # at most 2 minutes
            if await _drained(redis, settings.shards):
                break
            await asyncio.sleep(0.5)
        drain = time.monotonic() - run.started - posting_took
        stop.set()
        await sampler
        dead = {name: proc.returncode for name, proc in procs.items()
                if proc.poll() is not None}
        return await _report(redis, run, database_url, posting_took, drain, dead,
                             retention_seconds)
    finally:
        await redis.aclose()
        await engine.dispose()


async def _report(redis: aioredis.Redis, run: Run, database_url: str, posting_took: float,
                  drain: float, dead: dict[str, int | None], retention_seconds: int) -> str:
    auto_at, auto_lat, task_at, task_lat, missing = await _latencies(redis, database_url, run)
    run.latency = ((auto_at, auto_lat), (task_at, task_lat))
    cut = run.posted_ms[0] + run.warmup * 1000
    rows = [("posted → auto label stored", auto_lat, auto_at),
            (f"posted → task queued (1 in {TASK_SAMPLE} sampled)", task_lat, task_at)]
    table = ["| latency | after warm-up | n | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    p99_after = []
    for name, lat, at in rows:
        whole, after = _pcts(lat), _pcts(lat[at >= cut])
        table.append(f"| {name} | whole run " + _fmt(whole))
        table.append(f"| {name} | after {run.warmup:.0f} s " + _fmt(after))
        p99_after.append(after.get("p99", float("nan")))
    expected_auto = int(run.auto[:run.posted].sum())
    t = np.array([s["t"] for s in run.samples])
    warm = t >= run.warmup
    mem = ["| service | RSS at warm-up end MiB | max after MiB | at end MiB | growth |",
           "|---|---:|---:|---:|---:|"]
    growths = {}
    for name in run.samples[0]["rss"]:
        series = np.array([s["rss"][name] for s in run.samples])
        base = series[warm][0] if warm.any() else series[0]
        growth = (series[-1] - base) / base if base else float("nan")
        growths[name] = growth
        mem.append(f"| {name} | {base:,.0f} | {series[warm].max() if warm.any() else 0:,.0f} | "
                   f"{series[-1]:,.0f} | {growth:+.1%} |")
    lengths = ["| stream | max | at end | slope, 2nd half (entries/s) | bounded |",
               "|---|---:|---:|---:|---|"]
    half = t >= t[-1] / 2
    bounded = {}
    # Trimming keeps acknowledged entries for the retention, then drops them at its next
    # pass: only a run well past both can tell a bounded stream from a growing one.
    judged = posting_took >= 2 * (retention_seconds + TRIM_INTERVAL_S)
    for s in WATCHED:
        series = np.array([x["lengths"][s] for x in run.samples], dtype=float)
        slope = float(np.polyfit(t[half], series[half], 1)[0]) if half.sum() > 2 else 0.0
        bounded[s] = slope < 0.01 * run.rate
        verdict = ("yes" if bounded[s] else "no") if judged else "not judged"
        lengths.append(f"| `{s}` | {series.max():,.0f} | {series[-1]:,.0f} | {slope:,.0f} | "
                       f"{verdict} |")
    achieved = run.posted / posting_took
    p99_ok = all(p < GOAL_P99_S for p in p99_after)
    mem_ok = all(g < GOAL_RSS_GROWTH for g in growths.values())
    return "\n".join([
        f"{run.posted:,} predictions posted at a fixed {run.rate:,.0f}/s ({achieved:,.0f}/s "
        f"achieved) for {posting_took:.0f} s through the four services (`loopwise serve`), "
        f"half confident (auto labels), half to review (nobody reviews); drained "
        f"{drain:.1f} s after the last one. {len(auto_lat):,} of {expected_auto:,} auto "
        f"labels stored; {missing} sampled tasks missing."
        + (f" Services that died: {dead}." if dead else ""),
        "",
        *table,
        "",
        *mem,
        "",
        *lengths,
        "",
        f"Goals (issue 13): latency p99 after warm-up under {GOAL_P99_S:.0f} s: "
        f"**{'met' if p99_ok else 'missed'}** "
        f"({', '.join(f'{p * 1000:,.0f} ms' for p in p99_after)}); resident memory growth "
        f"after warm-up under {GOAL_RSS_GROWTH:.0%}: **{'met' if mem_ok else 'missed'}**; "
        "stream lengths bounded: "
        + (f"**{'met' if all(bounded.values()) else 'missed'}**." if judged else
           f"**not judged** (a run under 2 x (retention {retention_seconds} s + trim "
           f"interval {TRIM_INTERVAL_S:.0f} s) cannot tell)."),
    ])


def log_problems(log_dir: Path) -> dict[str, Counter[str]]:
    """Per service, the warnings and errors its log holds, counted by event and error: a
    soak whose figures look right while a loop fails every few seconds is not a pass."""
    found: dict[str, Counter[str]] = {}
    for path in sorted(log_dir.glob("*.log")):
        seen: Counter[str] = Counter()
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                if line.strip():
                    seen[line.strip()[:120]] += 1  # a traceback or print outside the logger
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error",
                                                                  "critical"):
                what = str(entry.get("event", "?"))
                if entry.get("error"):
                    what += f" ({str(entry['error'])[:80]})"
                seen[what] += 1
        if seen:
            found[path.stem] = seen
    return found


def _problems_line(found: dict[str, Counter[str]]) -> str:
    if not found:
        return "Warnings or errors in the services' logs: **none**."
    parts = [f"{svc}: " + "; ".join(f"{n} × {what}" for what, n in seen.most_common(3))
             for svc, seen in found.items()]
    return "Warnings or errors in the services' logs: **" + " | ".join(parts) + "**."


def run(rate: float = 5000.0, seconds: float = 600.0, warmup: float = 60.0,
        redis_url: str = "redis://127.0.0.1:6379/10", database_url: str | None = None,
        port_base: int = 29100, workers: int = 2, retention_seconds: int = 60,
        plot: Path | None = None, seed: int = 1) -> str:
    """Run the soak against freshly started services; the section's body."""
    db = redis_url.rsplit("/", 1)[-1]
    say(f"Redis database {db} at {redis_url} is this benchmark's own: flushing it now")
    sync_redis.Redis.from_url(redis_url).flushdb(asynchronous=True)  # big leftovers: no timeout
    tmp = Path(tempfile.mkdtemp(prefix="loopwise-bench-soak-"))
    database_url = database_url or f"sqlite+aiosqlite:///{tmp}/soak.db"
    upgrade(database_url)
    ports = {name: port_base + i for i, name in enumerate(SERVICES, 1)}
    settings = Settings(redis_url=redis_url, database_url=database_url,
                        **{f"{n}_port": p for n, p in ports.items()})
    env = {"LOOPWISE_REDIS_URL": redis_url, "LOOPWISE_DATABASE_URL": settings.database_url,
           **{f"LOOPWISE_{n.upper()}_PORT": str(p) for n, p in ports.items()},
           "LOOPWISE_LOG_LEVEL": "WARNING",
           "LOOPWISE_STREAM_RETENTION_SECONDS": str(retention_seconds)}
    total = int(rate * seconds)
    rng = np.random.default_rng(seed)
    soak = Run(rate=rate, seconds=seconds, warmup=min(warmup, seconds / 2),
               project=f"soak-{uuid.uuid4().hex[:8]}", total=total,
               auto=rng.random(total) < 0.5, posted_ms=np.zeros(total, dtype=np.int64))
    say(f"services on ports {port_base + 1}-{port_base + 4}, database {database_url}, "
        f"stream retention {retention_seconds} s, {workers} stream worker(s) for the router "
        f"and the labels service; "
        f"logs in {tmp / 'logs'}")
    # The router and the labels service are on the latency path: they get ``workers``
    # stream processes each; the scorer and quality one.
    hot = ServiceGroup(settings, services=HOT, log_dir=tmp / "logs",
                       env={**env, "LOOPWISE_STREAM_WORKERS": str(workers)})
    others = ServiceGroup(settings, services=[s for s in SERVICES if s not in HOT],
                          env=env, log_dir=tmp / "logs")
    load_before = os.getloadavg()[0]
    with hot, others:
        procs = {name: hot.procs.get(name) or others.procs[name] for name in SERVICES}
        body = asyncio.run(_run(settings, procs, soak, database_url, retention_seconds))
    load_after = os.getloadavg()[0]
    if plot is not None and soak.samples and soak.latency is not None:
        _plot(soak, *soak.latency, plot)
        say(f"plot: {plot}")
    return (f"{body}\n\nRedis database {db} (flushed at start), label store "
            f"{database_url.split('://')[0]}, stream retention {retention_seconds} s "
            f"(LOOPWISE_STREAM_RETENTION_SECONDS), {workers} stream worker(s) for the router "
            f"and the labels service (LOOPWISE_STREAM_WORKERS; the scorer and quality 1), "
            f"warm-up {soak.warmup:.0f} s; 1-minute load average {load_before:.1f} at start, "
            f"{load_after:.1f} at end (2 cores: above 2 the machine was shared)."
            f"\n\n{_problems_line(log_problems(tmp / 'logs'))}")

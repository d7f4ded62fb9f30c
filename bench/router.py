"""Router benchmarks: routing throughput and the reviewer API under load.

(a) Routing. A dedicated Redis database (FLUSHDB at start!) gets N prediction
    entries on ``loopwise:predictions`` in the contract's wire format (``data`` =
    the JSON a scorer publishes; 10 classes, several projects, ~40% above the 0.9
    threshold). Two consumer groups read the same entries:
    1. ``bench-raw``: a bare redis-py asyncio loop, XREADGROUP (count 500) +
       json.loads + XACK, in this process: the ceiling of stream consumption.
    2. ``router``: the real router service, started as its own process
       (``loopwise serve router`` through :class:`loopwise.processes.ServiceGroup`);
       timed from process start until its group has lag 0 and pending 0 (XINFO
       GROUPS polled every 20 ms). The auto labels on ``loopwise:labels`` and the
       review tasks queued are checked against the expected split.
(b) Reviewer API. C concurrent clients over loopback, each its own labeler with its
    own token, loop ``GET /v1/projects/{p}/tasks/next`` + ``POST /v1/tasks/{id}/submit``
    against the router process (the tasks queued in (a)) for D seconds, then the
    same against a bare FastAPI app (:mod:`bench.bare_app`, same two routes, no
    work) served by uvicorn in its own process. Both use the same load generator:
    one asyncio process with one keep-alive HTTP/1.1 connection per client and a
    minimal request writer/response reader, so the generator costs far less CPU
    per request than either server (its CPU share is reported).

Run with ``loopwise bench router``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.utils import HIREDIS_AVAILABLE

from bench import report
from shared import sharding, streams
from shared.redisconn import connect

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Router (loopwise bench router)"
HOST = "127.0.0.1"
RAW_GROUP = "bench-raw"
LABELS = [str(i) for i in range(10)]
THRESHOLD = 0.9  # the router's default fixed threshold
ROUTING_GOAL = 0.40  # router rate / raw loop rate
API_RPS_GOAL = 0.30  # router requests/s / bare requests/s
API_P99_GOAL = 2.0  # router p99 / bare p99 at most


def say(message: str) -> None:
    print(f"[bench router] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of a process and its children (the service and its stream workers)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return own + sum(cpu_seconds(int(k)) or 0.0 for k in kids)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------- (a) routing


def prediction_entries(
    n: int, projects: list[str], auto_share: float, seed: int
) -> tuple[list[str], Counter[str]]:
    """N prediction JSON texts as a scorer publishes them, and the expected auto/review split."""
    rng = np.random.default_rng(seed)
    tops = np.where(
        rng.random(n) < auto_share, rng.uniform(THRESHOLD, 0.995, n), rng.uniform(0.30, 0.88, n)
    )
    top_label = rng.integers(0, len(LABELS), n)
    rest = rng.dirichlet(np.full(len(LABELS) - 1, 0.5), n)
    created = datetime.now(UTC).isoformat()
    out: list[str] = []
    expected: Counter[str] = Counter()
    for i in range(n):
        others = [x for x in LABELS if x != LABELS[top_label[i]]]
        probs = {
            label: round(float(p), 4)
            for label, p in zip(others, rest[i] * (1 - tops[i]), strict=True)
        }
        probs[LABELS[top_label[i]]] = round(1.0 - sum(probs.values()), 4)
        expected["auto" if max(probs.values()) >= THRESHOLD else "review"] += 1
        project = projects[i % len(projects)]
        out.append(
            json.dumps(
                {
                    "event_id": f"{i:08x}-{seed % 65536:04x}-4000-8000-{rng.integers(2**47):012x}",
                    "schema_version": 1,
                    "project": project,
                    "item_id": f"item-{i}",
                    "model_version": "bench-m1",
                    "probs": probs,
                    "payload": {"uri": f"s3://bench/{project}/item-{i}.png"},
                    "priority": None,
                    "created_at": created,
                }
            )
        )
    return out, expected


def fill_stream(client: redis.Redis, texts: list[str]) -> None:
    for start in range(0, len(texts), 5000):
        pipe = client.pipeline(transaction=False)
        for text in texts[start : start + 5000]:
            pipe.xadd(streams.PREDICTIONS, {"data": text})
        pipe.execute()


async def raw_loop(redis_url: str, count: int = 500) -> tuple[int, float]:
    """The baseline: XREADGROUP + json.loads + XACK until the stream is drained."""
    client = connect(redis_url)
    done = 0
    started = time.perf_counter()
    try:
        while True:
            got = await client.xreadgroup(
                RAW_GROUP, "raw-1", {streams.PREDICTIONS: ">"}, count=count
            )
            if not got or not got[0][1]:
                break
            ids = []
            for entry_id, fields in got[0][1]:
                json.loads(fields[b"data"])
                ids.append(entry_id)
            await client.xack(streams.PREDICTIONS, RAW_GROUP, *ids)
            done += len(ids)
        return done, time.perf_counter() - started
    finally:
        await client.aclose()


@dataclass
class GroupWatch:
    """Polls XINFO GROUPS in a thread: when the router's group first read and when it drained."""

    redis_url: str
    group: str
    total: int
    started: float = 0.0
    first_read: float | None = None
    drained: float | None = None
    pid: Any = None  # callable returning the router's pid once it runs
    cpu_first: float | None = None
    cpu_drained: float | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _cpu(self) -> float | None:
        pid = self.pid() if self.pid else None
        return tree_cpu_seconds(pid) if pid else None

    def run(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            while not self.stop.is_set():
                now = time.perf_counter()
                info = {g["name"].decode(): g for g in client.xinfo_groups(streams.PREDICTIONS)}
                g = info.get(self.group)
                if g is not None:
                    read = int(g.get("entries-read") or 0)
                    self.samples.append((now - self.started, read))
                    if read > 0 and self.first_read is None:
                        self.first_read = now
                        self.cpu_first = self._cpu()
                    if read >= self.total and g.get("lag") == 0 and g["pending"] == 0:
                        self.drained = now
                        self.cpu_drained = self._cpu()
                        return
                time.sleep(0.02)
        finally:
            client.close()


def reset_router_state(client: redis.Redis) -> None:
    """Forget a routing run: the router's keys, the labels it wrote, its consumer group."""
    for key in client.scan_iter("loopwise:router:*", count=5000):
        client.unlink(key)
    client.delete(streams.LABELS)
    client.xgroup_destroy(streams.PREDICTIONS, streams.GROUP_ROUTER)
    client.xgroup_create(streams.PREDICTIONS, streams.GROUP_ROUTER, id="0")


def expected_queued(client: redis.Redis, projects: list[str]) -> int:
    return sum(int(client.zcard(f"loopwise:router:queue:{p}")) for p in projects)


# --------------------------------------------------------------------------- (b) API load


class Http:
    """One keep-alive HTTP/1.1 connection: just enough client to cost the server, not us."""

    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.head = f"Host: {HOST}:{port}\r\n{auth}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        extra = (
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            if method == "POST"
            else ""
        )
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" in headers:
            return status, await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    return status, b"".join(chunks)
                chunks.append(chunk[:-2])
        return status, b""


@dataclass
class LoadResult:
    name: str
    seconds: float
    latencies: dict[str, list[float]]
    statuses: Counter[int]
    submitted: int
    empty: int
    server_cpu: float | None
    generator_cpu: float

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float, kind: str | None = None) -> float:
        values = self.latencies[kind] if kind else [x for v in self.latencies.values() for x in v]
        return float(np.percentile(values, q)) * 1000 if values else float("nan")

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in (200, 204))


async def run_load(
    name: str,
    port: int,
    clients: list[tuple[str, str | None]],
    seconds: float,
    warmup: float,
    server_pid: int | None,
) -> LoadResult:
    """Each client loops next + submit; only requests started inside the window count."""
    conns = [Http(port, token) for _, token in clients]
    await asyncio.gather(*(c.open() for c in conns))
    latencies: dict[str, list[float]] = {"next": [], "submit": []}
    statuses: Counter[int] = Counter()
    counts = Counter()
    window: dict[str, float] = {}

    async def client(i: int, conn: Http, project: str) -> None:
        choice = 0
        while True:
            started = time.perf_counter()
            if started >= window.get("end", float("inf")):
                return
            counting = started >= window.get("start", float("inf"))
            status, body = await conn.request("GET", f"/v1/projects/{project}/tasks/next")
            took = time.perf_counter() - started
            if counting:
                latencies["next"].append(took)
                statuses[status] += 1
            if status != 200:
                if counting:
                    counts["empty" if status == 204 else "error"] += 1
                await asyncio.sleep(0.01)
                continue
            task = json.loads(body)
            options = task["options"] or LABELS
            choice += 1
            payload = json.dumps(
                {"label": options[(i + choice) % len(options)], "duration_ms": 1200}
            ).encode()
            started = time.perf_counter()
            counting = started >= window.get("start", float("inf"))
            status, _ = await conn.request("POST", f"/v1/tasks/{task['task_id']}/submit", payload)
            if counting:
                latencies["submit"].append(time.perf_counter() - started)
                statuses[status] += 1
                counts["submitted"] += status == 200

    tasks = [
        asyncio.create_task(client(i, conn, project))
        for i, (conn, (project, _)) in enumerate(zip(conns, clients, strict=True))
    ]
    await asyncio.sleep(warmup)
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    cpu0, own0 = (cpu_seconds(server_pid) if server_pid else None), time.process_time()
    say(f"{name}: {len(clients)} clients, measuring {seconds:.0f}s after {warmup:.0f}s warm-up")
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - window["start"]  # includes the last requests' completion
    cpu1, own1 = (cpu_seconds(server_pid) if server_pid else None), time.process_time()
    await asyncio.gather(*(c.close() for c in conns))
    server_cpu = (cpu1 - cpu0) / elapsed if cpu0 is not None and cpu1 is not None else None
    return LoadResult(
        name,
        elapsed,
        latencies,
        statuses,
        counts["submitted"],
        counts["empty"],
        server_cpu,
        (own1 - own0) / elapsed,
    )


def wait_http(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server on port {port} not healthy after {timeout:.0f}s")


async def make_tokens(
    database_url: str, clients: int, projects: list[str]
) -> list[tuple[str, str]]:
    from shared.auth import create_token
    from shared.db import make_engine

    engine = make_engine(database_url)
    try:
        out = []
        for i in range(clients):
            project = projects[i % len(projects)]
            out.append(
                (project, await create_token(engine, f"bench-labeler-{i:02d}", "labeler", project))
            )
        return out
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- report


def _ratio_line(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def render(
    cfg: dict[str, Any], routing: dict[str, Any], loads: list[tuple[LoadResult, LoadResult]]
) -> str:
    n, runs, raws = routing["n"], routing["runs"], routing["raws"]
    paired = list(zip(raws, runs, strict=False))  # (raw loop, router) of each round
    ratios = [n / run["router_s"] / (raw_n / raw_s) for (raw_n, raw_s), run in paired]
    ratio = statistics.median(ratios)
    raw_rate = statistics.median(raw_n / raw_s for raw_n, raw_s in raws)
    head = runs[0]
    rps_ratio = statistics.median(r.rps / b.rps for r, b in loads)
    p99_ratio = statistics.median(r.pct(99) / b.pct(99) for r, b in loads)
    lines = [
        SECTION,
        "",
        f"Command: `{cfg['command']}`  ",
        f"Machine: {report.machine()}  ",
        f"Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; load average at start / end: "
        f"{cfg['load_start']} / {cfg['load_end']} (other work shares this machine).  ",
        f"Redis {routing['redis_version']} at {cfg['redis_url']} (flushed at start; the Redis "
        "server is shared with other work on the machine), router database: "
        f"{'SQLite in a temporary directory' if cfg['sqlite'] else 'the given URL'} (auth only).",
        "",
        f"### Routing {routing['n']:,} predictions already on the stream",
        "",
        f"{len(cfg['projects'])} projects, 10 classes, {routing['expected']['auto']:,} "
        f"({routing['expected']['auto'] / routing['n']:.0%}) at or above the 0.9 threshold → auto"
        f" labels, {routing['expected']['review']:,} → review tasks. Both consumers read the same"
        " entries, each in its own consumer group.",
        "",
        "| round | consumer | seconds | entries/s | / raw loop | from first read: s "
        "(start-up) | entries/s | / raw loop | CPU while routing |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, run in enumerate(runs):
        if i < len(raws):
            raw_n, raw_s = raws[i]
            base = raw_n / raw_s
            lines.append(
                f"| {i + 1} | raw redis-py loop (XREADGROUP 500 + json.loads + XACK), one "
                f"process | {raw_s:.2f} | {base:,.0f} | 100% | | | | |")
        else:
            base = raw_rate
        rate, steady = n / run["router_s"], n / run["router_steady_s"]
        label = str(i + 1) if i < len(raws) else "—"
        lines.append(
            f"| {label} | router (`loopwise serve router`, LOOPWISE_STREAM_WORKERS="
            f"{run['workers']}) | {run['router_s']:.2f} | {rate:,.0f} | {rate / base:.0%} | "
            f"{run['router_steady_s']:.2f} ({run['startup_s']:.1f}) | {steady:,.0f} | "
            f"{steady / base:.0%} | {run['router_cpu_share']} |"
        )
    single = runs[-1] if len(runs) > len(raws) else None
    lines += [
        "",
        f"Router / raw loop, from process start, with {head['workers']} stream worker(s) on "
        f"{os.cpu_count()} cores (a worker waits on Redis for part of each batch, so one "
        f"more than the cores keeps them busy), per round: "
        + ", ".join(f"{r:.0%}" for r in ratios)
        + f"; median **{ratio:.0%}**. Goal ≥ {ROUTING_GOAL:.0%}: "
        f"{_ratio_line(ratio >= ROUTING_GOAL)}. "
        + (f"One process (against the median raw loop): "
           f"{n / single['router_s'] / raw_rate:.0%}. " if single else "")
        + "Router times run from starting the process (imports included) until its consumer "
        "group has lag 0 and nothing pending; the router's state is reset between runs. "
        "Checked in each run: "
        + ", ".join(f"{r['auto_labels']:,} auto labels + {r['queued']:,} tasks"
                    f"{'' if r['correct'] else ' (NOT as expected)'}" for r in runs)
        + (" (all as expected)." if all(r["correct"] for r in runs) else "."),
        "",
        f"### Reviewer API: {cfg['clients']} concurrent clients, next task + submit, "
        f"{len(loads)} rounds of {cfg['seconds']:.0f} s a server",
        "",
        "Each client is its own labeler with its own token, on one keep-alive connection over "
        "loopback; one asyncio load generator (minimal HTTP/1.1 client) for both servers, "
        f"{cfg['warmup']:.0f} s warm-up not counted. The bare endpoint is `bench/bare_app.py` "
        "(the same two routes returning/accepting small JSON, no auth, no Redis) under the same "
        f"uvicorn ({_server_stack()}). Rounds alternate the two servers; the router "
        "serves with one process (its stream drained).",
        "",
        "| round | server | requests/s | p50 ms | p99 ms | next p50/p99 ms | submit p50/p99 ms | "
        "submits | errors | server CPU | generator CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in ((i, r) for i, pair in enumerate(loads, 1) for r in pair):
        cpu = f"{r.server_cpu:.0%}" if r.server_cpu is not None else "n/a"
        lines.append(
            f"| {i} | {r.name} | {r.rps:,.0f} | {r.pct(50):.1f} | {r.pct(99):.1f} | "
            f"{r.pct(50, 'next'):.1f} / {r.pct(99, 'next'):.1f} | "
            f"{r.pct(50, 'submit'):.1f} / {r.pct(99, 'submit'):.1f} | {r.submitted:,} | "
            f"{r.errors + r.empty} | {cpu} | {r.generator_cpu:.0%} |"
        )
    lines += [
        "",
        "Router / bare, per round: requests/s "
        + ", ".join(f"{r.rps / b.rps:.0%}" for r, b in loads) + "; p99 "
        + ", ".join(f"{r.pct(99) / b.pct(99):.2f}×" for r, b in loads) + ". Medians: "
        f"requests/s **{rps_ratio:.0%}** (goal ≥ {API_RPS_GOAL:.0%}: "
        f"{_ratio_line(rps_ratio >= API_RPS_GOAL)}), p99 **{p99_ratio:.2f}×** (goal ≤ "
        f"{API_P99_GOAL:.0f}×: {_ratio_line(p99_ratio <= API_P99_GOAL)}).",
        "",
        "Reading the figures: both sides use redis-py with its "
        f"{'hiredis (C)' if HIREDIS_AVAILABLE else 'pure-Python'} reply parser, so the raw loop "
        "is close to the cost of moving bytes, while the router validates each prediction "
        "(pydantic), decides, and writes tasks and auto labels. The load is a closed loop of "
        "64 clients, so mean latency is about 64 / requests per second on both sides "
        "(Little's law): a p99 within 2× of the bare endpoint's needs roughly half its "
        "throughput, not just a tighter tail.",
    ]
    return "\n".join(lines) + "\n"


def _server_stack() -> str:
    """What uvicorn's "auto" picks here, for both servers alike."""
    from importlib.util import find_spec

    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    return f"event loop {loop}, HTTP parser {http}"


def write_section(text: str) -> None:
    report.write_section(SECTION, text)


# --------------------------------------------------------------------------- main


def main(
    redis_url: str = "redis://127.0.0.1:6379/9",
    database_url: str | None = None,
    predictions: int = 200_000,
    projects: int = 5,
    auto_share: float = 0.4,
    clients: int = 64,
    seconds: float = 20.0,
    warmup: float = 3.0,
    router_port: int = 29002,
    bare_port: int = 29010,
    seed: int = 7,
    workers: int = 3,
    rounds: int = 3,
    routing_rounds: int = 3,
    command: str = "loopwise bench router",
) -> str:
    """Run both benchmarks and return the markdown report (progress goes to stderr)."""
    from loopwise.processes import ServiceGroup
    from shared.db import upgrade
    from shared.settings import Settings

    load_start = loadavg()
    names = [f"bench-{chr(ord('a') + i)}" for i in range(projects)]
    tmp = Path(tempfile.mkdtemp(prefix="loopwise-bench-router-"))
    db_url = database_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    settings = Settings(redis_url=redis_url, database_url=db_url, router_port=router_port)
    sync = redis.Redis.from_url(redis_url)
    say(f"FLUSHDB {redis_url}")
    sync.flushdb(asynchronous=True)  # big leftovers: no timeout
    say(f"generating {predictions:,} predictions over {projects} projects")
    texts, expected = prediction_entries(predictions, names, auto_share, seed)
    fill_stream(sync, texts)
    del texts
    sync.xgroup_create(streams.PREDICTIONS, RAW_GROUP, id="0")
    sync.xgroup_create(streams.PREDICTIONS, streams.GROUP_ROUTER, id="0")
    say(
        f"stream filled: {sync.xlen(streams.PREDICTIONS):,} entries; "
        f"expected auto {expected['auto']:,}, review {expected['review']:,}"
    )

    upgrade(db_url)
    say("creating labeler tokens")
    tokens = asyncio.run(make_tokens(db_url, clients, names))
    env = {
        "LOOPWISE_REDIS_URL": redis_url,
        "LOOPWISE_DATABASE_URL": settings.database_url,
        "LOOPWISE_ROUTER_PORT": str(router_port),
        "LOOPWISE_HOST": HOST,
        "LOOPWISE_LOG_LEVEL": "WARNING",
    }
    runs: list[dict[str, Any]] = []
    group = None
    watch = None
    try:
        # Rounds of raw loop then router with stream workers (the headline, paired so that a
        # slow spell of this shared machine falls on both); then one run of a single
        # process, which then serves (b).
        raws: list[tuple[int, float]] = []
        plan = [workers] * routing_rounds + ([1] if workers != 1 else [])
        for i, n_workers in enumerate(plan):
            if runs:
                group.stop()
                reset_router_state(sync)
            if i < routing_rounds:
                if i:
                    sync.xgroup_destroy(streams.PREDICTIONS, RAW_GROUP)
                    sync.xgroup_create(streams.PREDICTIONS, RAW_GROUP, id="0")
                say(f"(a) round {i + 1}/{routing_rounds}: raw redis-py loop")
                raw_n, raw_s = asyncio.run(raw_loop(redis_url))
                raws.append((raw_n, raw_s))
                say(f"raw loop: {raw_n:,} in {raw_s:.2f}s = {raw_n / raw_s:,.0f}/s")
            group = ServiceGroup(settings, services=("router",),
                                 env={**env, "LOOPWISE_STREAM_WORKERS": str(n_workers)},
                                 log_dir=tmp)
            watch = GroupWatch(redis_url, streams.GROUP_ROUTER, predictions)
            watch.pid = lambda g=group: g.procs["router"].pid if "router" in g.procs else None
            thread = threading.Thread(target=watch.run, daemon=True)
            say(f"(a) starting the router process, {n_workers} stream worker(s)")
            watch.started = time.perf_counter()
            thread.start()
            group.start(timeout=120)
            thread.join(timeout=1800)
            watch.stop.set()
            if watch.drained is None:
                raise TimeoutError("the router did not drain the stream within 30 minutes")
            router_s = watch.drained - watch.started
            first = watch.first_read or watch.started
            share = "n/a"
            if watch.cpu_first is not None and watch.cpu_drained is not None:
                used = watch.cpu_drained - watch.cpu_first
                share = (f"{used / (watch.drained - first):.0%} of a core, "
                         f"{used / predictions * 1e6:.0f} µs per entry")
            auto_labels = sum(int(sync.xlen(name)) for name in sharding.every_stream(
                streams.LABELS, settings.shards))  # the router writes to the shards
            queued = expected_queued(sync, names)
            runs.append({
                "workers": n_workers,
                "router_s": router_s,
                "router_steady_s": watch.drained - first,
                "startup_s": first - watch.started,
                "auto_labels": auto_labels,
                "queued": queued,
                "correct": auto_labels == expected["auto"] and queued == expected["review"],
                "router_cpu_share": share,
            })
            say(
                f"router, {n_workers} worker(s): {predictions:,} in {router_s:.2f}s = "
                f"{predictions / router_s:,.0f}/s (start-up {first - watch.started:.1f}s); "
                f"auto labels {auto_labels:,}, queued {queued:,}"
            )
        pid = group.procs["router"].pid
        routing = {
            "n": predictions,
            "raws": raws,
            "expected": expected,
            "runs": runs,
            "redis_version": sync.info("server")["redis_version"],
        }

        say("(b) starting the bare endpoint")
        bare = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", HOST,
             "--port", str(bare_port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp / "bare.log").open("ab"),
        )
        try:
            wait_http(bare_port, bare)
            # Rounds alternate router and bare, so that a slow spell of this shared
            # machine falls on both sides rather than on one.
            loads: list[tuple[LoadResult, LoadResult]] = []
            for i in range(rounds):
                say(f"(b) round {i + 1}/{rounds}: router, then bare endpoint")
                router_load = asyncio.run(run_load(
                    "router (loopwise serve router)", router_port, tokens, seconds, warmup, pid))
                bare_load = asyncio.run(run_load(
                    "bare FastAPI endpoint (bench/bare_app.py)", bare_port,
                    [(p, None) for p, _ in tokens], seconds, warmup, bare.pid))
                loads.append((router_load, bare_load))
                for r in (router_load, bare_load):
                    say(f"{r.name}: {r.rps:,.0f} req/s, p50 {r.pct(50):.1f} ms, "
                        f"p99 {r.pct(99):.1f} ms, statuses {dict(r.statuses)}")
        finally:
            bare.terminate()
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()
                bare.wait()
    finally:
        if watch is not None:
            watch.stop.set()
        if group is not None:
            group.stop()
    sync.close()
    cfg = {
        "load_start": load_start,
        "load_end": loadavg(),
        "command": command,
        "redis_url": redis_url,
        "sqlite": database_url is None,
        "projects": names,
        "clients": clients,
        "seconds": seconds,
        "warmup": warmup,
        "workers": workers,
    }
    return render(cfg, routing, loads)


if __name__ == "__main__":
    print(main())

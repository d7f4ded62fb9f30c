"""Labels store benchmark: stream ingest vs COPY, and a 1,000,000-label streamed export.

(a) Label events published to a Redis stream are read with XREADGROUP in
    batches, validated, and stored by the labels service's own handler
    (``LabelsService.on_labels``: schema check, COPY in a savepoint with an
    INSERT ... ON CONFLICT DO NOTHING fallback for redeliveries, under the
    write lock, one audit row per batch),
    then acknowledged. In the same run the same rows go through asyncpg's
    ``copy_records_to_table`` into a table with the same columns and indexes.
(b) A version of 1,000,000 current labels is exported to JSONL by the CLI's
    export path (server-side cursor, chunks) in a fresh subprocess, whose
    peak resident memory is read from the kernel (``ru_maxrss``).

Everything runs in a throw-away PostgreSQL database created next to the one
in ``LOOPWISE_DATABASE_URL`` and dropped afterwards (the event tables are
append-only, so the bench could not clean up after itself otherwise).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import numpy as np

from bench import report
from shared.redisconn import connect
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Labels store (loopwise bench labels)"
BATCH = 500
MiB = 1 << 20
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def _event_json(project: str, i: int) -> str:
    return json.dumps({
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{project}/{i}")),
        "project": project, "item_id": f"item-{i // 2:08d}", "label": str(i % 10),
        "labeler_id": f"labeler-{i % 37}", "source": "human", "mode": "blind",
        "model_version": "m1", "guideline_version": "g1", "task_id": f"t{i}",
        "batch_id": f"b{i // 1000}", "duration_ms": 1200 + i % 500,
        "created_at": (T0 + timedelta(seconds=i)).isoformat(),
    })  # fmt: skip


async def _ingest(url: str, redis_url: str, n: int) -> dict[str, float]:
    from services.labels.service import LabelsService
    from services.labels.store import event_row
    from shared.bus import Delivery
    from shared.db import make_engine
    from shared.events import LabelEvent

    project = "bench-ingest"
    stream, group = f"loopwise:bench:labels:{os.getpid()}", "bench"
    client = connect(redis_url)
    engine = make_engine(url)
    try:
        await client.delete(stream)
        for start in range(0, n, 5000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(n, start + 5000)):
                pipe.xadd(stream, {"data": _event_json(project, i)})
            await pipe.execute()
        await client.xgroup_create(stream, group, id="0")
        service = LabelsService(SimpleNamespace(engine=engine, bus=None))  # type: ignore[arg-type]
        started = time.perf_counter()
        stored = 0
        while stored < n:
            reply = await client.xreadgroup(group, "c1", {stream: ">"}, count=BATCH)
            entries = reply[0][1]
            batch = [
                Delivery(entry_id.decode(), LabelEvent.model_validate_json(fields[b"data"]))
                for entry_id, fields in entries
            ]
            await service.on_labels(batch)
            await client.xack(stream, group, *[e for e, _ in entries])
            stored += len(batch)
        stream_seconds = time.perf_counter() - started

        # The same rows through COPY, into a table with the same columns and indexes.
        now = datetime.now(UTC)
        rows = [
            event_row(LabelEvent.model_validate_json(_event_json(project, i)), now)
            for i in range(n)
        ]
        columns = list(rows[0])
        records = [tuple(r[c] for c in columns) for r in rows]
        conn = await asyncpg.connect(_pg_dsn(url))
        try:
            await conn.execute("CREATE TABLE label_events_copy (LIKE label_events INCLUDING ALL)")
            started = time.perf_counter()
            for start in range(0, n, BATCH):
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "label_events_copy", records=records[start : start + BATCH],
                        columns=columns,
                    )  # fmt: skip
            copy_batched = time.perf_counter() - started
            await conn.execute("TRUNCATE label_events_copy")
            started = time.perf_counter()
            await conn.copy_records_to_table("label_events_copy", records=records, columns=columns)
            copy_once = time.perf_counter() - started
        finally:
            await conn.close()
        return {
            "events": n,
            "stream_per_s": n / stream_seconds,
            "copy_batched_per_s": n / copy_batched,
            "copy_once_per_s": n / copy_once,
        }
    finally:
        await client.delete(stream)
        await client.aclose()
        await engine.dispose()


async def _fill_export(url: str, n: int) -> str:
    """n current labels (one event per item) via COPY, then a snapshot version of them."""
    from services.labels.store import create_snapshot
    from shared.db import make_engine

    project = "bench-export"
    conn = await asyncpg.connect(_pg_dsn(url))
    columns = ["event_id", "project", "item_id", "label", "labeler_id", "source", "mode",
               "revised_after_reveal", "model_version", "guideline_version", "batch_id",
               "created_at", "duration_ms", "stored_at", "planted_prelabel", "audit_sample",
               "late_submit"]  # fmt: skip
    stored = datetime.now(UTC)
    try:
        for start in range(0, n, 100_000):
            records = [
                (str(uuid.uuid4()), project, f"item-{i:08d}", str(i % 10), f"labeler-{i % 37}",
                 "human", "blind", False, "m1", "g1", f"b{i // 1000}",
                 T0 + timedelta(seconds=i), 1500, stored, False, False, False)
                for i in range(start, min(n, start + 100_000))
            ]  # fmt: skip
            await conn.copy_records_to_table("label_events", records=records, columns=columns)
        await conn.execute("ANALYZE label_events")
    finally:
        await conn.close()
    engine = make_engine(url)
    try:
        async with engine.begin() as c:
            await create_snapshot(c, project, author="bench", message="1M labels", name="bench")
    finally:
        await engine.dispose()
    return project


def _measure_export(url: str, project: str, out: str) -> None:
    """Runs in a fresh subprocess: export, then print seconds, rows and peak RSS."""
    from services.labels.commands import export_version
    from shared.settings import get_settings

    settings = get_settings().model_copy(update={"database_url": url})
    started = time.perf_counter()
    with open(out, "wb") as sink:
        rows = asyncio.run(export_version(settings, project, sink, version="bench",
                                          fmt="jsonl"))
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_bytes": peak,
                      "file_bytes": os.path.getsize(out)}))  # fmt: skip


def _peak_rss() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent across fork and exec, so a child would report the bench process's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _baseline_rss() -> int:
    """Peak RSS of a process that only imports the export path (the interpreter's floor)."""
    code = "import services.labels.commands, bench.labels as b; print(b._peak_rss())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)  # fmt: skip
    return int(done.stdout.strip())


INGEST_ROUNDS = 3


def _median_round(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Median of each rate over the rounds, and every round's ratio to COPY: one round on
    a shared 2-core machine moves the ratio by several points."""
    ratios = [r["stream_per_s"] / r["copy_batched_per_s"] for r in rounds]
    out: dict[str, Any] = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    out["events"] = int(rounds[0]["events"])
    out["ratios"] = ratios
    out["ratio"] = float(np.median(ratios))
    return out


def run(settings: Settings, *, events: int, export_labels: int, write: bool = True) -> str:
    from shared.db import upgrade
    from shared.service import tune_gc

    if not settings.database_url.startswith("postgresql"):
        raise SystemExit("bench labels needs PostgreSQL: set LOOPWISE_DATABASE_URL")
    name = f"loopwise_bench_{os.getpid()}"
    admin_dsn = _pg_dsn(settings.database_url)

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    url = _with_database(settings.database_url, name)
    rounds = []
    for round_ in range(INGEST_ROUNDS):  # each round in a fresh database: same starting point
        print(f"[bench labels] ingest round {round_ + 1}/{INGEST_ROUNDS}", file=sys.stderr)
        asyncio.run(create())
        try:
            upgrade(url)
            tune_gc()  # the collector settings of a `loopwise serve labels` process
            rounds.append(asyncio.run(_ingest(url, settings.redis_url, events)))
        finally:
            asyncio.run(drop())
    ingest = _median_round(rounds)
    asyncio.run(create())
    try:
        upgrade(url)
        project = asyncio.run(_fill_export(url, export_labels))
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "export.jsonl")
            done = subprocess.run(
                [sys.executable, "-c",
                 f"from bench.labels import _measure_export; _measure_export({url!r}, "
                 f"{project!r}, {out!r})"],
                capture_output=True, text=True, cwd=ROOT, check=True,
            )  # fmt: skip
            exported = json.loads(done.stdout.strip().splitlines()[-1])
        baseline = _baseline_rss()
    finally:
        asyncio.run(drop())
    text = _render(ingest, exported, baseline)
    if write:
        _write_section(text)
    return text


def _render(ingest: dict[str, float], exported: dict[str, Any], baseline: int) -> str:
    ratio = ingest["ratio"]
    ratio_once = ingest["stream_per_s"] / ingest["copy_once_per_s"]
    return "\n".join([
        SECTION,
        "",
        *report.header("loopwise bench labels",
                       "PostgreSQL on the same machine, in throw-away databases."),
        "",
        f"### (a) Ingest: {ingest['events']:,} label events from a Redis stream",
        "",
        "| path | events/s | stream ingest as % of it |",
        "|---|---:|---:|",
        f"| stream → `LabelsService.on_labels` (XREADGROUP {BATCH}, validate, schema check, "
        f"COPY in a savepoint (duplicates: staging + ON CONFLICT DO NOTHING), audit row, XACK) | "
        f"{ingest['stream_per_s']:,.0f} | — |",
        f"| asyncpg COPY, same rows, {BATCH} per transaction | "
        f"{ingest['copy_batched_per_s']:,.0f} | {ratio:.0%} |",
        f"| asyncpg COPY, same rows, one transaction | {ingest['copy_once_per_s']:,.0f} | "
        f"{ratio_once:.0%} |",
        "",
        f"Medians of {len(ingest['ratios'])} rounds, each in a fresh database, the stream and "
        "COPY measured in the same round, in one process with a labels service's garbage "
        "collector settings (`shared.service.tune_gc`); per-round stream/COPY ratios: "
        + ", ".join(f"{r:.1%}" for r in ingest["ratios"]) + ".",
        "",
        f"Goal: at least 25% of COPY — {'met' if ratio >= 0.25 else 'NOT met'} against COPY "
        f"in the same batches ({ratio:.1%}, median of the per-round ratios); "
        f"{ratio_once:.0%} of a single bulk COPY.",
        "",
        f"### (b) Export of a {exported['rows']:,}-label version to JSONL",
        "",
        "| labels | time (s) | rows/s | file (MiB) | peak RSS (MiB) | RSS, imports only (MiB) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {exported['rows']:,} | {exported['seconds']:.1f} | "
        f"{exported['rows'] / exported['seconds']:,.0f} | {exported['file_bytes'] / MiB:,.0f} | "
        f"{exported['peak_bytes'] / MiB:,.0f} | {baseline / MiB:,.0f} |",
        "",
        "Streamed through a server-side cursor in chunks of 5,000 rows and written in 256 KiB "
        f"pieces: goal under 300 MiB — {'met' if exported['peak_bytes'] < 300 * MiB else 'NOT'}.",
        "",
    ])  # fmt: skip


def _write_section(text: str) -> None:
    report.write_section(SECTION, text)

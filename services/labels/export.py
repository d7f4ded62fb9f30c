"""Export formats of a label-set version: JSONL, CSV and Label Studio JSON, streamed.

Each writer turns an async iterator of rows into an async iterator of bytes,
so an HTTP response or a file grows chunk by chunk and memory stays flat
whatever the size of the version.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from shared.events import LabelEvent, Preference

from .labelstudio import ANNOTATOR_DOMAIN, AnnotationRef, to_export
from .versions import utc

FORMATS = ("jsonl", "csv", "labelstudio", "trl")
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "trl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "labelstudio": "application/json",
}
COLUMNS = (
    "item_id", "label", "event_id", "labeler_id", "source", "mode", "shown_prelabel",
    "agreed_with_prelabel", "revised_after_reveal", "model_version", "guideline_version",
    "task_id", "batch_id", "confidence", "created_at", "stored_at", "duration_ms",
)  # fmt: skip
FLUSH_BYTES = 256 * 1024


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value).isoformat()
    return value


def record(row: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(row.get(key)) for key in COLUMNS}


async def _jsonl_chunks(objects: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """JSON lines in chunks of about FLUSH_BYTES: a streamed response neither holds the
    whole export nor sends one line a write."""
    buffer: list[str] = []
    size = 0
    async for obj in objects:
        line = json.dumps(obj, ensure_ascii=False) + "\n"
        buffer.append(line)
        size += len(line)
        if size >= FLUSH_BYTES:
            yield "".join(buffer).encode()
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode()


async def jsonl(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async def records() -> AsyncIterator[dict[str, Any]]:
        async for row in rows:
            yield record(row)

    async for chunk in _jsonl_chunks(records()):
        yield chunk


async def csv_rows(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    async for row in rows:
        writer.writerow(record(row))
        if out.tell() >= FLUSH_BYTES:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue().encode()


def preference_pairs(row: dict[str, Any]) -> list[dict[str, str]]:
    """The (prompt, chosen, rejected) rows one stored preference gives, in the explicit-prompt
    preference format TRL's ``RewardTrainer`` reads: the better candidate over each other
    one, every ordered pair of a ranking; none for a tie or "both bad" (nothing to learn
    which is better), nor for a label that is no preference."""
    stored = row.get("preference")
    if not stored:
        return []
    preference = Preference.model_validate(stored)
    return [{"prompt": preference.prompt, "chosen": preference.texts[chosen],
             "rejected": preference.texts[rejected]}
            for chosen, rejected in preference.pairs()]


async def trl(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Every counted preference of a version as chosen/rejected JSONL: each reviewer's
    judgment is a training pair (a reverted one is not counted, so it is not exported)."""
    async def pairs() -> AsyncIterator[dict[str, Any]]:
        async for row in rows:
            for pair in preference_pairs(row):
                yield pair

    async for chunk in _jsonl_chunks(pairs()):
        yield chunk


def _event(row: dict[str, Any]) -> LabelEvent:
    return LabelEvent.model_validate(
        {k: v for k, v in row.items() if k in LabelEvent.model_fields and v is not None}
    )


async def labelstudio(
    events: AsyncIterator[dict[str, Any]],
    payloads: Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]],
    refs: Callable[[list[str]], Awaitable[dict[str, AnnotationRef]]],
    *,
    from_name: str = "label",
    to_name: str = "text",
    item_key: str | None = None,
    annotator_domain: str = ANNOTATOR_DOMAIN,
    items_per_chunk: int = 500,
) -> AsyncIterator[bytes]:
    """A Label Studio JSON export (a list of tasks), written a few hundred tasks at a time.

    ``events`` must arrive grouped by item (the store orders them so);
    ``payloads`` and ``refs`` look up item data and import references per chunk.
    """
    first = True
    group: dict[str, list[dict[str, Any]]] = {}

    async def flush() -> bytes:
        nonlocal first
        ids = list(group)
        data = await payloads(ids)
        known = await refs([str(e["event_id"]) for rows in group.values() for e in rows])
        labels = [_event(e) for rows in group.values() for e in rows]
        tasks = to_export(
            labels,
            {i: data.get(i, {}) for i in ids},
            from_name=from_name,
            to_name=to_name,
            item_key=item_key,
            annotator_domain=annotator_domain,
            refs={
                label.event_id: known[str(label.event_id)]
                for label in labels
                if str(label.event_id) in known
            },
        )
        body = ",\n".join(json.dumps(t, ensure_ascii=False) for t in tasks)
        prefix = "[\n" if first else ",\n"
        first = False
        group.clear()
        return (prefix + body).encode()

    async for row in events:
        item = row["item_id"]
        if item not in group and len(group) >= items_per_chunk:
            yield await flush()
        group.setdefault(item, []).append(row)
    if group:
        yield await flush()
    yield b"\n]\n" if not first else b"[]\n"

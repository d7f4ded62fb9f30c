"""The append-only label store and its current-label view.

Precedence of the current label of an item: adjudicated over consensus over
human (and imported) over auto; the newest within a kind. History is never
rewritten: the view is a query, not an update.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import insert_ignoring_duplicates
from shared.events import LabelEvent, LabelSource
from shared.tables import label_events

SOURCE_PRECEDENCE: dict[str, int] = {
    LabelSource.adjudicated: 4,
    LabelSource.consensus: 3,
    LabelSource.human: 2,
    LabelSource.imported: 2,
    LabelSource.auto: 1,
}


def event_row(event: LabelEvent, stored_at: datetime) -> dict[str, Any]:
    row = event.model_dump(exclude={"schema_version"})
    row["event_id"] = str(event.event_id)
    row["source"] = event.source.value
    row["mode"] = event.mode.value if event.mode else None
    row["stored_at"] = stored_at
    return row


async def append_events(conn: AsyncConnection, events: Sequence[LabelEvent]) -> int:
    """Append label events; an event id seen before is ignored. Returns rows inserted."""
    now = datetime.now(UTC)
    return await insert_ignoring_duplicates(conn, label_events, [event_row(e, now) for e in events])


def _precedence():
    return case(
        *(
            (label_events.c.source == source.value, rank)
            for source, rank in SOURCE_PRECEDENCE.items()
        ),
        else_=0,
    )


async def current_labels(
    conn: AsyncConnection,
    project: str,
    *,
    include_auto: bool = True,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One row per item: the event that currently decides its label."""
    ranked = select(
        label_events,
        func.row_number()
        .over(
            partition_by=label_events.c.item_id,
            order_by=(
                _precedence().desc(),
                label_events.c.created_at.desc(),
                label_events.c.stored_at.desc(),
                label_events.c.event_id.desc(),
            ),
        )
        .label("rank"),
    ).where(label_events.c.project == project)
    if not include_auto:
        ranked = ranked.where(label_events.c.source != LabelSource.auto.value)
    sub = ranked.subquery()
    query = (
        select(*(c for c in sub.c if c.name != "rank"))
        .where(sub.c.rank == 1)
        .order_by(sub.c.item_id)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return [dict(r._mapping) for r in (await conn.execute(query)).all()]


async def count_events(conn: AsyncConnection, project: str) -> dict[str, int]:
    rows = await conn.execute(
        select(label_events.c.source, func.count())
        .where(label_events.c.project == project)
        .group_by(label_events.c.source)
    )
    return {source: n for source, n in rows.all()}

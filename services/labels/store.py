"""SQL of the label store: append-only events, views (head, version, as-of), versions, trace.

Decisions live in pure modules (``versions``, ``revert``, ``trace``); this
module only reads and writes. History is never rewritten: the current label is
a query, a rollback is a new version, and database triggers refuse UPDATE and
DELETE on the event, version and audit tables.

Why a write lock: a version's cutoff must not let an event stored earlier but
committed later slip in afterwards. On PostgreSQL every label insert takes a
shared advisory lock and reads the database clock for ``stored_at``; creating
a version takes the lock exclusively, so all earlier inserts have committed
and all later ones get a later clock. SQLite has one writer at a time; taking
the write lock before reading the clock gives the same order.

Every query names its project: the event tables are partitioned by project on
PostgreSQL (``tables``), an event id is unique within its project only, and a
redelivered event is ignored on the (project, event_id) key.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import (
    Select,
    and_,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import insert_ignoring_duplicates
from shared.events import LabelEvent, LabelSource

from .labelstudio import AnnotationRef
from .revert import RevertSelector, effect_of, revert_changes, unrevert_changes
from .tables import (
    import_refs,
    item_payloads,
    label_events,
    label_version_changes,
    label_versions,
    projects,
)
from .trace import trace_item
from .versions import (
    EXCLUDE,
    SOURCE_PRECEDENCE,
    diff_labels,
    excluded_ids,
    utc,
)

__all__ = ["SOURCE_PRECEDENCE", "append_events", "count_events", "current_labels"]
WRITE_LOCK_KEY = 4242005
JSON_COLUMNS = frozenset({"preference"})
CHUNK = 1000


class NotFound(LookupError):
    """A project, version or item the caller named does not exist (404)."""


class Conflict(ValueError):
    """The request is well formed but cannot apply to the current state (409)."""


@dataclass(frozen=True)
class View:
    """Which events count: stored by ``cutoff`` (None: now), minus those excluded in ``version``."""

    cutoff: datetime | None
    version: int | None
    description: str = "head"


# --- the write clock -------------------------------------------------------------------------


async def write_clock(conn: AsyncConnection, *, exclusive: bool) -> datetime:
    """Take the label write lock (shared for inserts, exclusive for versions); return now."""
    if conn.dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        row = (
            await conn.execute(
                text(f"SELECT {lock}(:key), clock_timestamp()"), {"key": WRITE_LOCK_KEY}
            )
        ).one()
        return utc(row[1])
    # SQLite: a write statement takes the database write lock for the whole transaction.
    await conn.execute(update(projects).where(text("0")).values(name=projects.c.name))
    return datetime.now(UTC)


# --- events ----------------------------------------------------------------------------------


def event_row(event: LabelEvent, stored_at: datetime) -> dict[str, Any]:
    row = event.model_dump(exclude={"schema_version"})
    row["event_id"] = str(event.event_id)
    row["source"] = event.source.value
    row["mode"] = event.mode.value if event.mode else None
    row["preference"] = event.preference.model_dump(mode="json") if event.preference else None
    row["stored_at"] = stored_at
    return row


async def append_events(conn: AsyncConnection, events: Sequence[LabelEvent]) -> int:
    """Append label events; an event id seen before is ignored. Returns rows inserted."""
    return sum((await append_events_counted(conn, events)).values())


async def append_events_counted(conn: AsyncConnection, events: Sequence[LabelEvent]
                                ) -> Counter[tuple[str, str]]:
    """``append_events``, telling what was new by (project, source): a batch that mixes
    new events with redelivered ones counts only the new (the stored-labels metric)."""
    if not events:
        return Counter()
    now = await write_clock(conn, exclusive=False)
    rows = [event_row(e, now) for e in events]
    if conn.dialect.name == "postgresql":
        return await _insert_via_copy(conn, rows)
    statement = (sqlite_insert(label_events).on_conflict_do_nothing()
                 .returning(label_events.c.project, label_events.c.source))
    return Counter((p, src) for p, src in (await conn.execute(statement, rows)).all())


async def _insert_via_copy(conn: AsyncConnection, rows: list[dict[str, Any]]
                           ) -> Counter[tuple[str, str]]:
    """COPY the batch straight into the table; a batch holding an event seen before (a
    redelivery, rare) rolls back to a savepoint and goes through a staging table and one
    INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING instead. COPY's binary encoding
    is several times cheaper than binding the batch as parameters. Same transaction as
    the caller.
    """
    columns = list(rows[0])
    # asyncpg's COPY takes a json column's value as its text.
    records = [tuple(json.dumps(r[c]) if c in JSON_COLUMNS and r[c] is not None else r[c]
                     for c in columns) for r in rows]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None, "COPY needs asyncpg's connection"
    await driver.execute("SAVEPOINT label_copy")
    try:
        await driver.copy_records_to_table("label_events", records=records, columns=columns)
    except asyncpg.UniqueViolationError:
        await driver.execute("ROLLBACK TO SAVEPOINT label_copy")
    else:
        await driver.execute("RELEASE SAVEPOINT label_copy")
        return Counter((r["project"], r["source"]) for r in rows)
    await driver.execute(
        "CREATE TEMP TABLE IF NOT EXISTS label_events_staging "
        "(LIKE label_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await driver.copy_records_to_table("label_events_staging", records=records, columns=columns)
    names = ", ".join(columns)
    inserted = await driver.fetch(
        f"INSERT INTO label_events ({names}) SELECT {names} FROM label_events_staging "
        "ON CONFLICT DO NOTHING RETURNING project, source"
    )
    await driver.execute("TRUNCATE label_events_staging")
    return Counter((r["project"], r["source"]) for r in inserted)


async def count_events(conn: AsyncConnection, project: str) -> dict[str, int]:
    rows = await conn.execute(
        select(label_events.c.source, func.count())
        .where(label_events.c.project == project)
        .group_by(label_events.c.source)
    )
    return {source: n for source, n in rows.all()}


# --- views -----------------------------------------------------------------------------------


async def head_version(conn: AsyncConnection, project: str) -> int | None:
    return (
        await conn.execute(
            select(func.max(label_versions.c.number)).where(label_versions.c.project == project)
        )
    ).scalar()


async def head_view(conn: AsyncConnection, project: str) -> View:
    return View(None, await head_version(conn, project), "head")


async def version_row(conn: AsyncConnection, project: str, ref: str | int) -> dict[str, Any]:
    """A version by number or by name; NotFound otherwise."""
    query = select(label_versions).where(label_versions.c.project == project)
    ref_text = str(ref)
    if ref_text.isdigit():
        query = query.where(label_versions.c.number == int(ref_text))
    else:
        query = query.where(label_versions.c.name == ref_text)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"project {project!r} has no label-set version {ref_text!r}")
    return _version_dict(row._mapping)


async def resolve_view(
    conn: AsyncConnection,
    project: str,
    version: str | None = None,
    as_of: datetime | None = None,
) -> View:
    """The view a request names: a version, a moment, or (neither) the head."""
    if version is not None and as_of is not None:
        raise ValueError("give either version or as_of, not both")
    if version is not None:
        row = await version_row(conn, project, version)
        return View(row["cutoff"], row["number"], f"version {row['number']}")
    if as_of is not None:
        moment = utc(as_of)
        number = (
            await conn.execute(
                select(func.max(label_versions.c.number)).where(
                    label_versions.c.project == project, label_versions.c.created_at <= moment
                )
            )
        ).scalar()
        return View(moment, number, f"as of {moment.isoformat()}")
    return await head_view(conn, project)


def _excluded_in(project: str, version: int) -> Select:
    c = label_version_changes.c
    return (
        select(c.event_id)
        .where(c.project == project, c.version <= version)
        .group_by(c.event_id)
        .having(func.sum(c.delta) > 0)
    )


def counting(project: str, view: View) -> list[Any]:
    """WHERE clauses selecting the label events that count in ``view``."""
    where: list[Any] = [label_events.c.project == project]
    if view.cutoff is not None:
        where.append(label_events.c.stored_at <= utc(view.cutoff))
    if view.version is not None:
        where.append(label_events.c.event_id.not_in(_excluded_in(project, view.version)))
    return where


def _precedence():
    return case(
        *((label_events.c.source == source, rank) for source, rank in SOURCE_PRECEDENCE.items()),
        else_=0,
    )


def current_query(project: str, view: View, *, include_auto: bool = True) -> Select:
    """One row per item: the event that decides its label in ``view``, ordered by item."""
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
    ).where(*counting(project, view))
    if not include_auto:
        ranked = ranked.where(label_events.c.source != LabelSource.auto.value)
    sub = ranked.subquery()
    return (
        select(*(c for c in sub.c if c.name != "rank"))
        .where(sub.c.rank == 1)
        .order_by(sub.c.item_id)
    )


async def current_labels(
    conn: AsyncConnection,
    project: str,
    *,
    include_auto: bool = True,
    limit: int | None = None,
    offset: int = 0,
    view: View | None = None,
) -> list[dict[str, Any]]:
    """One row per item: the event that currently decides its label (reverts respected)."""
    view = view or await head_view(conn, project)
    query = current_query(project, view, include_auto=include_auto).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [dict(r._mapping) for r in (await conn.execute(query)).all()]


# What a labeler may read of their own labels: never the model's guess, the gold answer,
# whether a task was gold, planted or an audit (those would tell which tasks are gold or
# what the model thinks of an item someone else holds blind).
OWN_LABEL_FIELDS = ("event_id", "item_id", "label", "labeler_id", "source", "mode",
                    "revised_after_reveal", "supersedes", "late_submit", "guideline_version",
                    "task_id", "batch_id", "duration_ms", "created_at", "stored_at")


async def own_labels(
    conn: AsyncConnection, project: str, labeler_id: str, view: View, *,
    limit: int | None = None, offset: int = 0,
) -> list[dict[str, Any]]:
    """One row per item the labeler labelled: their newest label counting in ``view``,
    with :data:`OWN_LABEL_FIELDS` only."""
    c = label_events.c
    ranked = select(
        *(c[name] for name in OWN_LABEL_FIELDS),
        func.row_number().over(
            partition_by=c.item_id,
            order_by=(c.created_at.desc(), c.stored_at.desc(), c.event_id.desc()),
        ).label("rank"),
    ).where(*counting(project, view), c.labeler_id == labeler_id)
    sub = ranked.subquery()
    query = (select(*(sub.c[name] for name in OWN_LABEL_FIELDS)).where(sub.c.rank == 1)
             .order_by(sub.c.item_id).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    return [dict(r._mapping) for r in (await conn.execute(query)).all()]


async def count_current(conn: AsyncConnection, project: str, view: View) -> int:
    """How many items have a label in ``view`` (for export progress)."""
    return (
        await conn.execute(
            select(func.count(func.distinct(label_events.c.item_id))).where(
                *counting(project, view)
            )
        )
    ).scalar_one()


async def stream_current(
    conn: AsyncConnection, project: str, view: View, *, chunk: int = 5000
) -> AsyncIterator[dict[str, Any]]:
    """The current labels of ``view`` through a server-side cursor: flat memory for any size."""
    result = await conn.stream(current_query(project, view).execution_options(yield_per=chunk))
    async for partition in result.partitions(chunk):
        for row in partition:
            yield dict(row._mapping)


async def stream_counting_events(
    conn: AsyncConnection, project: str, view: View, *, chunk: int = 5000
) -> AsyncIterator[dict[str, Any]]:
    """Every event that counts in ``view``, ordered by item then time (Label Studio export)."""
    query = (
        select(label_events)
        .where(*counting(project, view))
        .order_by(label_events.c.item_id, label_events.c.created_at, label_events.c.event_id)
        .execution_options(yield_per=chunk)
    )
    result = await conn.stream(query)
    async for partition in result.partitions(chunk):
        for row in partition:
            yield dict(row._mapping)


async def history(conn: AsyncConnection, project: str, view: View, *, limit: int,
                  offset: int = 0) -> list[dict[str, Any]]:
    """A page of the label history: every event that counts in ``view``, in the order
    they were made (created_at, then event id), so that a reader can replay the loop."""
    query = (
        select(label_events)
        .where(*counting(project, view))
        .order_by(label_events.c.created_at, label_events.c.event_id)
        .limit(limit).offset(offset)
    )
    return [dict(r._mapping) for r in (await conn.execute(query)).all()]


# --- versions --------------------------------------------------------------------------------


def _version_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("created_at", "cutoff"):
        out[key] = utc(out[key])
    return out


async def list_versions(conn: AsyncConnection, project: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(label_versions)
        .where(label_versions.c.project == project)
        .order_by(label_versions.c.number)
    )
    return [_version_dict(r._mapping) for r in rows.all()]


async def _insert_version(
    conn: AsyncConnection,
    project: str,
    *,
    now: datetime,
    kind: str,
    author: str,
    message: str,
    name: str | None,
    changes: dict[str, int],
    selector: dict[str, Any] | None = None,
    reverts: int | None = None,
) -> dict[str, Any]:
    """Insert version head+1 with its changes; the caller holds the exclusive write lock."""
    parent = await head_version(conn, project)
    number = (parent or 0) + 1
    if name is not None:
        taken = (
            await conn.execute(
                select(label_versions.c.number).where(
                    label_versions.c.project == project, label_versions.c.name == name
                )
            )
        ).first()
        if taken is not None:
            raise Conflict(f"version name {name!r} is already version {taken[0]} of {project!r}")
    row = {
        "project": project,
        "number": number,
        "name": name,
        "parent": parent,
        "kind": kind,
        "author": author,
        "message": message,
        "created_at": now,
        "cutoff": now,
        "selector": selector,
        "reverts": reverts,
        "excluded": sum(1 for d in changes.values() if d == EXCLUDE),
        "included": sum(1 for d in changes.values() if d != EXCLUDE),
    }
    await conn.execute(insert(label_versions).values(row))
    change_rows = [
        {"project": project, "version": number, "event_id": e, "delta": d}
        for e, d in sorted(changes.items())
    ]
    for start in range(0, len(change_rows), CHUNK * 5):
        await conn.execute(insert(label_version_changes), change_rows[start : start + CHUNK * 5])
    return row


async def create_snapshot(
    conn: AsyncConnection, project: str, *, author: str, message: str, name: str | None
) -> dict[str, Any]:
    """A named version that freezes which events count now, changing nothing."""
    now = await write_clock(conn, exclusive=True)
    return await _insert_version(
        conn,
        project,
        now=now,
        kind="snapshot",
        author=author,
        message=message,
        name=name,
        changes={},
    )


def _selector_clauses(selector: RevertSelector) -> list[Any]:
    c = label_events.c
    where: list[Any] = []
    if selector.batch_id is not None:
        where.append(c.batch_id == selector.batch_id)
    if selector.labeler_id is not None:
        where.append(c.labeler_id == selector.labeler_id)
    if selector.guideline_version is not None:
        where.append(c.guideline_version == selector.guideline_version)
    if selector.created_from is not None:
        where.append(c.created_at >= utc(selector.created_from))
    if selector.created_to is not None:
        where.append(c.created_at < utc(selector.created_to))
    return where


async def _selected_events(
    conn: AsyncConnection, project: str, view: View, selector: RevertSelector
) -> list[str]:
    base = counting(project, view) + _selector_clauses(selector)
    if selector.event_ids is None:
        rows = await conn.execute(select(label_events.c.event_id).where(*base))
        return [r[0] for r in rows.all()]
    wanted = list(dict.fromkeys(selector.event_ids))
    found: list[str] = []
    for start in range(0, len(wanted), CHUNK):
        part = wanted[start : start + CHUNK]
        rows = await conn.execute(
            select(label_events.c.event_id).where(*base, label_events.c.event_id.in_(part))
        )
        found.extend(r[0] for r in rows.all())
    return found


async def _excluded_among(
    conn: AsyncConnection, project: str, version: int | None, event_ids: Iterable[str]
) -> tuple[set[str], dict[str, int]]:
    """Which of ``event_ids`` are excluded at ``version``, and the version that excluded each."""
    ids = list(event_ids)
    if version is None or not ids:
        return set(), {}
    c = label_version_changes.c
    changes: list[tuple[str, int, int]] = []
    for start in range(0, len(ids), CHUNK):
        rows = await conn.execute(
            select(c.event_id, c.delta, c.version)
            .where(
                c.project == project,
                c.version <= version,
                c.event_id.in_(ids[start : start + CHUNK]),
            )
            .order_by(c.version)
        )
        changes.extend((r[0], r[1], r[2]) for r in rows.all())
    excluded = excluded_ids((e, d) for e, d, _ in changes)
    by: dict[str, int] = {}
    for event_id, delta, number in changes:
        if delta == EXCLUDE:
            by[event_id] = number
    return excluded, {e: by[e] for e in excluded}


async def _events_of_items_touched(
    conn: AsyncConnection, project: str, event_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """All stored events of the items any of ``event_ids`` belongs to."""
    item_ids: set[str] = set()
    for start in range(0, len(event_ids), CHUNK):
        rows = await conn.execute(
            select(label_events.c.item_id).where(
                label_events.c.project == project,
                label_events.c.event_id.in_(event_ids[start : start + CHUNK]),
            )
        )
        item_ids.update(r[0] for r in rows.all())
    events: list[dict[str, Any]] = []
    ordered = sorted(item_ids)
    for start in range(0, len(ordered), CHUNK):
        rows = await conn.execute(
            select(label_events).where(
                label_events.c.project == project,
                label_events.c.item_id.in_(ordered[start : start + CHUNK]),
            )
        )
        events.extend(dict(r._mapping) for r in rows.all())
    return events


async def _apply(
    conn: AsyncConnection,
    project: str,
    changes: dict[str, int],
    *,
    dry_run: bool,
    now: datetime | None,
    version_fields: dict[str, Any],
) -> dict[str, Any]:
    head = await head_version(conn, project)
    events = await _events_of_items_touched(conn, project, list(changes))
    excluded_now, _ = await _excluded_among(
        conn, project, head, (str(e["event_id"]) for e in events)
    )
    effects = effect_of(events, excluded_now, changes)
    result: dict[str, Any] = {
        "dry_run": dry_run,
        "events": len(changes),
        "items": len(effects),
        "effects": [e.as_dict() for e in effects],
        "version": None,
    }
    if not dry_run:
        assert now is not None
        result["version"] = await _insert_version(
            conn, project, now=now, changes=changes, **version_fields
        )
    return result


async def revert(
    conn: AsyncConnection,
    project: str,
    selector: RevertSelector,
    *,
    author: str,
    message: str,
    name: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make a version in which the selected counting events no longer count (or preview it)."""
    now = None if dry_run else await write_clock(conn, exclusive=True)
    view = await head_view(conn, project)
    selected = await _selected_events(conn, project, view, selector)
    if selector.event_ids is not None:
        missing = sorted(set(selector.event_ids) - set(selected))
        if missing:
            raise ValueError(
                f"{len(missing)} event id(s) are not counting label events of {project!r}: "
                f"{missing[:10]}"
            )
    if not selected and not dry_run:
        raise Conflict("no counting label event matches; nothing to revert")
    return await _apply(
        conn,
        project,
        revert_changes(selected),
        dry_run=dry_run,
        now=now,
        version_fields={
            "kind": "revert",
            "author": author,
            "message": message,
            "name": name,
            "selector": selector.model_dump(mode="json", exclude_none=True),
        },
    )


async def unrevert(
    conn: AsyncConnection,
    project: str,
    number: str | int,
    *,
    author: str,
    message: str,
    name: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Revert a revert: a version in which what version ``number`` changed is undone."""
    now = None if dry_run else await write_clock(conn, exclusive=True)
    target = await version_row(conn, project, number)
    if target["kind"] == "snapshot":
        raise Conflict(f"version {target['number']} is a snapshot; it changed nothing to revert")
    c = label_version_changes.c
    rows = await conn.execute(
        select(c.event_id, c.delta).where(c.project == project, c.version == target["number"])
    )
    reverted = {r[0]: r[1] for r in rows.all()}
    head = await head_version(conn, project)
    excluded_now, _ = await _excluded_among(conn, project, head, reverted)
    changes = unrevert_changes(reverted, excluded_now)
    if not changes and not dry_run:
        raise Conflict(f"nothing of version {target['number']} is left to undo")
    return await _apply(
        conn,
        project,
        changes,
        dry_run=dry_run,
        now=now,
        version_fields={
            "kind": "unrevert",
            "author": author,
            "message": message,
            "name": name,
            "selector": {"version": target["number"]},
            "reverts": target["number"],
        },
    )


async def diff(conn: AsyncConnection, project: str, before: View, after: View) -> dict[str, Any]:
    a = {r["item_id"]: r for r in await current_labels(conn, project, view=before)}
    b = {r["item_id"]: r for r in await current_labels(conn, project, view=after)}
    return {"from": before.description, "to": after.description, **diff_labels(a, b).as_dict()}


async def trace(conn: AsyncConnection, project: str, item_id: str, view: View) -> dict[str, Any]:
    """Which event, labeler, batch, guideline and pre-label gave the item its label."""
    where = [label_events.c.project == project, label_events.c.item_id == item_id]
    if view.cutoff is not None:
        where.append(label_events.c.stored_at <= utc(view.cutoff))
    events = [
        dict(r._mapping) for r in (await conn.execute(select(label_events).where(*where))).all()
    ]
    if not events:
        if await item_known(conn, project, item_id):
            return {
                "item_id": item_id,
                "label": None,
                "decided_by": None,
                "history": [],
                "view": view.description,
            }
        raise NotFound(f"project {project!r} has no item {item_id!r}")
    excluded, by = await _excluded_among(
        conn, project, view.version, (str(e["event_id"]) for e in events)
    )
    counted = {str(e["event_id"]) for e in events} - excluded
    return {"view": view.description, **trace_item(item_id, events, counted, by)}


async def item_known(conn: AsyncConnection, project: str, item_id: str) -> bool:
    """Whether this service knows the item: an import brought it, or it has a label. (The
    scorer's items are asked of the scorer: see ``actions``.)"""
    for table in (item_payloads, label_events):
        found = (
            await conn.execute(
                select(table.c.item_id)
                .where(and_(table.c.project == project, table.c.item_id == item_id))
                .limit(1)
            )
        ).first()
        if found is not None:
            return True
    return False


# --- projects --------------------------------------------------------------------------------


async def get_project(conn: AsyncConnection, name: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(projects).where(projects.c.name == name))).first()
    return dict(row._mapping) if row else None


async def all_projects(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every declared project's row, by name."""
    rows = await conn.execute(select(projects).order_by(projects.c.name))
    return [dict(row._mapping) for row in rows]


async def put_project(
    conn: AsyncConnection,
    name: str,
    *,
    label_options: list[str] | None,
    sensitive: bool,
    settings: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Create or replace a project's settings; returns (new, old or None)."""
    old = await get_project(conn, name)
    now = datetime.now(UTC)
    values = {
        "label_options": label_options,
        "sensitive": sensitive,
        "settings": settings,
        "updated_at": now,
    }
    if old is None:
        await conn.execute(insert(projects).values(name=name, created_at=now, **values))
    else:
        await conn.execute(update(projects).where(projects.c.name == name).values(**values))
    return (await get_project(conn, name)) or {}, old


async def has_project(conn: AsyncConnection, project: str) -> bool:
    """Declared (a settings row) or holding labels: what makes a project known."""
    for query in (select(projects.c.name).where(projects.c.name == project),
                  select(label_events.c.project).where(label_events.c.project == project)):
        if (await conn.execute(query.limit(1))).first() is not None:
            return True
    return False


async def is_sensitive(conn: AsyncConnection, project: str) -> bool:
    """Whether only the project's members may see its payloads."""
    row = (await conn.execute(select(projects.c.sensitive).where(projects.c.name == project))
           ).first()
    return bool(row and row.sensitive)


async def label_options_of(
    conn: AsyncConnection, names: Iterable[str]
) -> dict[str, list[str] | None]:
    """Each named project's label schema (None: no schema, any label accepted)."""
    wanted = sorted(set(names))
    rows = await conn.execute(
        select(projects.c.name, projects.c.label_options).where(projects.c.name.in_(wanted))
    )
    found = {name: options for name, options in rows.all()}
    return {name: found.get(name) for name in wanted}


async def store_item_payloads(
    conn: AsyncConnection, project: str, payloads: dict[str, dict[str, Any]]
) -> int:
    now = datetime.now(UTC)
    return await insert_ignoring_duplicates(
        conn,
        item_payloads,
        [
            {"project": project, "item_id": i, "payload": p, "stored_at": now}
            for i, p in payloads.items()
        ],
    )


async def payloads_of(
    conn: AsyncConnection, project: str, item_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The payloads imports brought (the scorer's items are asked of the scorer)."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(item_ids), CHUNK):
        part = list(item_ids[start : start + CHUNK])
        rows = await conn.execute(
            select(item_payloads.c.item_id, item_payloads.c.payload).where(
                item_payloads.c.project == project, item_payloads.c.item_id.in_(part)
            )
        )
        for item_id, payload in rows.all():
            found[item_id] = dict(payload)
    return found


async def import_refs_of(
    conn: AsyncConnection, project: str, event_ids: list[str]
) -> dict[str, AnnotationRef]:
    """Where imported events sat in Label Studio, so an export writes them back in place.
    Keyed by (project, event id): an event id is unique within its project only."""
    found: dict[str, AnnotationRef] = {}
    for start in range(0, len(event_ids), CHUNK):
        rows = await conn.execute(
            select(import_refs).where(
                import_refs.c.project == project,
                import_refs.c.event_id.in_(event_ids[start : start + CHUNK]),
            )
        )
        found.update({r.event_id: AnnotationRef(**r.ref) for r in rows.all()})
    return found

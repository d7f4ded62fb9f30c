"""The label store partitioned by project: the migration keeps every label, an event id is
unique per project, and a project's queries read its partition only."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from services.labels import store
from services.labels.revert import RevertSelector
from services.labels.tables import label_events, label_version_changes
from shared.db import make_engine, upgrade, upgrade_async
from shared.events import LabelEvent

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BEFORE = "0011_preference_learning"  # the last schema with a global UNIQUE(event_id)


def label(project: str, item: str, value: str, minutes: int, **kw: Any) -> LabelEvent:
    kw.setdefault("labeler_id", "alice")
    kw.setdefault("source", "human")
    kw.setdefault("mode", "blind" if kw["source"] == "human" else None)
    return LabelEvent(project=project, item_id=item, label=value,
                      created_at=T0 + timedelta(minutes=minutes), **kw)


@pytest.fixture(params=["postgresql", "sqlite"])
async def empty_database(request, settings, tmp_path) -> AsyncIterator[str]:
    """A database of its own, with no schema yet (the migration test starts from 0005)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/migrate.db"
        return
    url = make_url(settings.database_url)
    name = f"{url.database}_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                  password=url.password, database=url.database)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _rows(engine: AsyncEngine, table: Any, key: tuple[str, ...]) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(table))).all()
    out = [dict(r._mapping) for r in rows]
    for row in out:  # SQLite hands back naive datetimes; compare the instants
        for name, value in row.items():
            if isinstance(value, datetime) and value.tzinfo is None:
                row[name] = value.replace(tzinfo=UTC)
    return sorted(out, key=lambda r: tuple(str(r[k]) for k in key))


async def _labels(engine: AsyncEngine, project: str, **view_args: Any) -> dict[str, str]:
    async with engine.connect() as conn:
        view = await store.resolve_view(conn, project, **view_args)
        return {r["item_id"]: r["label"] for r in await store.current_labels(conn, project,
                                                                              view=view)}


async def upgrade_async_to(url: str, revision: str) -> None:
    await asyncio.to_thread(upgrade, url, revision)


async def test_the_migration_keeps_every_label_version_and_import_ref(empty_database):
    await upgrade_async_to(empty_database, BEFORE)
    engine = make_engine(empty_database)
    projects = ["alpha", "beta", "gamma"]
    try:
        # Fill the old schema the way the service did: batches, a redelivery, a revert.
        for p_index, project in enumerate(projects):
            events = [label(project, f"i{n}", f"c{(n + p_index) % 3}", n,
                            labeler_id=("mallory" if n % 7 == 0 else "alice"),
                            batch_id=f"b{n % 4}") for n in range(120)]
            events += [label(project, f"i{n}", "auto", n, source="auto",
                             labeler_id="model:m1", model_version="m1") for n in range(0, 120, 5)]
            async with engine.begin() as conn:
                await store.append_events(conn, events[:100])
            async with engine.begin() as conn:  # a redelivered batch overlapping the first
                await store.append_events(conn, events[90:])
            async with engine.begin() as conn:
                await store.create_snapshot(conn, project, author="rev", message="v", name="v1")
                await store.revert(conn, project, RevertSelector(labeler_id="mallory"),
                                   author="admin", message="spam")
            async with engine.begin() as conn:
                await store.append_events(conn, [label(project, "late", "c1", 500)])
        async with engine.begin() as conn:
            first = (await conn.execute(select(label_events.c.project, label_events.c.event_id)
                                        .where(label_events.c.project == "alpha")
                                        .order_by(label_events.c.event_id).limit(3))).all()
            ref = '{{"task_id": {n}, "annotation_id": {n}, "result_id": null, ' \
                  '"from_name": null, "to_name": null}}'
            await conn.execute(
                text("INSERT INTO label_import_refs (event_id, ref) VALUES (:e, :r)"),
                [{"e": e, "r": ref.format(n=n)} for n, (_, e) in enumerate(first)])
        events_before = await _rows(engine, label_events, ("project", "event_id"))
        changes_before = await _rows(engine, label_version_changes,
                                     ("project", "version", "event_id"))
        views_before = {p: (await _labels(engine, p), await _labels(engine, p, version="v1"))
                        for p in projects}
        assert len(events_before) == 3 * (120 + 24 + 1)
        assert changes_before and "i7" in views_before["alpha"][1]
        await engine.dispose()

        await upgrade_async(empty_database)

        engine = make_engine(empty_database)
        assert await _rows(engine, label_events, ("project", "event_id")) == events_before
        assert await _rows(engine, label_version_changes,
                           ("project", "version", "event_id")) == changes_before
        for project in projects:
            head, v1 = views_before[project]
            assert await _labels(engine, project) == head
            assert await _labels(engine, project, version="v1") == v1
            assert "i7" not in head  # mallory's label of i7 stays reverted
        async with engine.connect() as conn:
            refs = await store.import_refs_of(conn, "alpha", [e for _, e in first])
            assert {r.task_id for r in refs.values()} == {0, 1, 2}
            assert await store.import_refs_of(conn, "beta", [e for _, e in first]) == {}
        # Redelivery is still harmless on the new keys, and the history still refuses UPDATE.
        async with engine.begin() as conn:
            assert await store.append_events(conn, [label("alpha", "i3", "c0", 3,
                                                          batch_id="b3")]) == 0
        with pytest.raises(Exception, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE label_events SET label = 'x' "
                                        "WHERE project = 'alpha'"))
    finally:
        await engine.dispose()


async def test_an_event_id_is_unique_within_its_project_not_across_projects(
    store_engine, project
):
    other = f"{project}-b"
    shared_id = uuid.uuid4()
    mine = label(project, "i1", "cat", 0, event_id=shared_id)
    theirs = label(other, "i1", "dog", 0, event_id=shared_id)
    async with store_engine.begin() as conn:
        assert await store.append_events(conn, [mine]) == 1
    async with store_engine.begin() as conn:
        # The same id in another project is another label; a redelivery of either is nothing.
        assert await store.append_events(conn, [theirs, mine]) == 1
    async with store_engine.begin() as conn:
        assert await store.append_events(conn, [theirs]) == 0
        await conn.execute(insert(label_version_changes).values(
            project=other, version=1, event_id=str(shared_id), delta=1))
    assert await _labels(store_engine, project) == {"i1": "cat"}
    assert await _labels(store_engine, other) == {"i1": "dog"}
    async with store_engine.begin() as conn:
        # Reverting it in one project leaves the other project's event counting.
        await store.revert(conn, project, RevertSelector(event_ids=[str(shared_id)]),
                           author="admin", message="m")
    assert await _labels(store_engine, project) == {}
    assert await _labels(store_engine, other) == {"i1": "dog"}


PARTITION = re.compile(r"\b(label_events|label_version_changes)_p\d\d\b")


async def test_postgres_partitions_the_event_tables_and_a_project_reads_one_partition(
    engine, project
):
    async with engine.begin() as conn:
        kinds = dict((await conn.execute(text(
            "SELECT c.relname, p.partstrat::text FROM pg_partitioned_table p "
            "JOIN pg_class c ON c.oid = p.partrelid"))).all())
        assert kinds["label_events"] == "h" and kinds["label_version_changes"] == "h"
        await store.append_events(conn, [label(project, "i1", "cat", 0)])
        await store.revert(conn, project, RevertSelector(labeler_id="alice"),
                           author="admin", message="m")
    queries = {
        "current labels at a version": store.current_query(project, store.View(None, 1)),
        "export of counted events": select(label_events).where(
            *store.counting(project, store.View(None, 1))),
        "trace": select(label_events).where(label_events.c.project == project,
                                            label_events.c.item_id == "i1"),
    }
    async with engine.connect() as conn:
        for what, query in queries.items():
            sql = str(query.compile(conn.sync_connection, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in (await conn.execute(text("EXPLAIN " + sql))).all())
            scanned: dict[str, set[str]] = {}
            for found in PARTITION.finditer(plan):
                scanned.setdefault(found.group(1), set()).add(found.group(0))
            assert len(scanned["label_events"]) == 1, f"{what}:\n{plan}"
            if "version" in what or "export" in what:
                assert len(scanned["label_version_changes"]) == 1, f"{what}:\n{plan}"


async def test_the_migration_carries_over_columns_a_later_migration_added(empty_database):
    """0008 runs after ``0007_preferences`` (a nullable JSON ``preference`` on
    label_events) and ``0011_preference_learning``: the rebuild reads the columns from the
    database, so a column added before it keeps its data, its nullability and its default
    (``review_round`` stands for any later column)."""
    await upgrade_async_to(empty_database, "0011_preference_learning")
    engine = make_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE label_events ADD COLUMN review_round "
                                    "INTEGER NOT NULL DEFAULT 7"))
            wide = await conn.run_sync(
                lambda sync: sa.Table("label_events", sa.MetaData(), autoload_with=sync))
            events = [label("alpha", f"i{n}", "cat", n) for n in range(5)]
            stored = datetime(2026, 2, 1, tzinfo=UTC)
            await conn.execute(insert(wide), [
                {**store.event_row(e, stored), "review_round": n,
                 "preference": {"chosen": f"a{n}", "rejected": ["b"]} if n % 2 else None}
                for n, e in enumerate(events)])
        await engine.dispose()

        await upgrade_async(empty_database)

        engine = make_engine(empty_database)
        async with engine.begin() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"]: c for c in sa.inspect(sync).get_columns("label_events")})
            assert columns["preference"]["nullable"] and not columns["review_round"]["nullable"]
            rows = (await conn.execute(text(
                "SELECT event_id, preference, review_round FROM label_events "
                "WHERE project = 'alpha'"))).all()
            # The new table's default still fills the column a writer does not name.
            await store.append_events(conn, [label("alpha", "late", "dog", 50)])
            late = (await conn.execute(text(
                "SELECT review_round, preference FROM label_events WHERE item_id = 'late'"
            ))).one()
        kept = {r.event_id: (r.preference if not isinstance(r.preference, str)
                             else json.loads(r.preference), r.review_round) for r in rows}
        assert kept == {str(e.event_id): ({"chosen": f"a{n}", "rejected": ["b"]} if n % 2
                                          else None, n) for n, e in enumerate(events)}
        assert tuple(late) == (7, None)
    finally:
        await engine.dispose()

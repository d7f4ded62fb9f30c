"""Versions, as-of, diff, revert, revert of a revert and trace, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from services.labels import audit, store
from services.labels.revert import RevertSelector
from shared.events import LabelEvent

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def label(project, item, value, minutes, *, labeler="alice", source="human", **kw):
    if source == "auto":
        labeler = f"model:{kw.get('model_version', 'm1')}"
    kw.setdefault("mode", "blind" if source == "human" else None)
    return LabelEvent(
        project=project,
        item_id=item,
        label=value,
        labeler_id=labeler,
        source=source,
        created_at=T0 + timedelta(minutes=minutes),
        **kw,
    )


async def add(engine, *events):
    async with engine.begin() as conn:
        await store.append_events(conn, list(events))


async def labels_of(engine, project, **view_args) -> dict[str, str]:
    async with engine.connect() as conn:
        view = await store.resolve_view(conn, project, **view_args)
        return {
            r["item_id"]: r["label"] for r in await store.current_labels(conn, project, view=view)
        }


async def snapshot(engine, project, name=None):
    async with engine.begin() as conn:
        return await store.create_snapshot(conn, project, author="rev", message="m", name=name)


async def test_a_version_keeps_exactly_the_labels_that_counted_when_it_was_made(
    store_engine, project
):
    await add(store_engine, label(project, "i1", "cat", 0), label(project, "i2", "dog", 1))
    v1 = await snapshot(store_engine, project, name="first")
    await add(
        store_engine, label(project, "i1", "dog", 5, labeler="bob"), label(project, "i3", "bird", 6)
    )

    assert await labels_of(store_engine, project, version="1") == {"i1": "cat", "i2": "dog"}
    assert await labels_of(store_engine, project, version="first") == {"i1": "cat", "i2": "dog"}
    assert await labels_of(store_engine, project) == {"i1": "dog", "i2": "dog", "i3": "bird"}
    assert await labels_of(store_engine, project, as_of=v1["created_at"]) == {
        "i1": "cat",
        "i2": "dog",
    }
    assert await labels_of(store_engine, project, as_of=v1["created_at"] - timedelta(days=1)) == {}
    async with store_engine.connect() as conn:
        with pytest.raises(store.NotFound, match="no label-set version '9'"):
            await store.resolve_view(conn, project, version="9")
        d = await store.diff(
            conn,
            project,
            await store.resolve_view(conn, project, version="1"),
            await store.head_view(conn, project),
        )
    assert d["counts"] == {"added": 1, "removed": 0, "changed": 1}
    assert [(c["item_id"], c["before"], c["after"]) for c in d["changed"]] == [("i1", "cat", "dog")]
    assert [c["item_id"] for c in d["added"]] == ["i3"]


async def test_revert_by_labeler_then_revert_the_revert(store_engine, project):
    await add(
        store_engine,
        label(project, "i1", "cat", 0, labeler="alice"),
        label(project, "i1", "dog", 1, labeler="mallory", batch_id="b9"),
        label(project, "i2", "dog", 2, labeler="mallory", batch_id="b9"),
        label(project, "i3", "cat", 3, source="auto"),
    )
    async with store_engine.begin() as conn:
        preview = await store.revert(
            conn,
            project,
            RevertSelector(labeler_id="mallory"),
            author="admin",
            message="spam",
            dry_run=True,
        )
    assert preview["version"] is None
    assert [(e["item_id"], e["before"], e["after"]) for e in preview["effects"]] == [
        ("i1", "dog", "cat"),
        ("i2", "dog", None),
    ]
    assert await labels_of(store_engine, project) == {"i1": "dog", "i2": "dog", "i3": "cat"}

    async with store_engine.begin() as conn:
        done = await store.revert(
            conn, project, RevertSelector(labeler_id="mallory"), author="admin", message="spam"
        )
    assert done["version"]["number"] == 1 and done["version"]["excluded"] == 2
    after_revert = await labels_of(store_engine, project)
    assert after_revert == {"i1": "cat", "i3": "cat"}
    async with store_engine.begin() as conn:
        with pytest.raises(store.Conflict, match="nothing to revert"):
            await store.revert(conn, project, RevertSelector(batch_id="b9"), author="a", message="")

    async with store_engine.begin() as conn:
        undone = await store.unrevert(conn, project, 1, author="admin", message="was fine")
    assert undone["version"]["kind"] == "unrevert" and undone["version"]["reverts"] == 1
    assert await labels_of(store_engine, project) == {"i1": "dog", "i2": "dog", "i3": "cat"}
    async with store_engine.begin() as conn:
        with pytest.raises(store.Conflict, match="nothing of version 1"):
            await store.unrevert(conn, project, 1, author="admin", message="")
        again = await store.unrevert(conn, project, 2, author="admin", message="no, spam")
    assert again["version"]["number"] == 3
    assert await labels_of(store_engine, project) == after_revert
    # every version still answers as it was
    assert await labels_of(store_engine, project, version="1") == after_revert
    assert await labels_of(store_engine, project, version="2") == {
        "i1": "dog",
        "i2": "dog",
        "i3": "cat",
    }
    async with store_engine.connect() as conn:
        assert sum((await store.count_events(conn, project)).values()) == 4  # nothing erased


@pytest.mark.parametrize(
    ("selector", "reverted_items"),
    [
        (RevertSelector(batch_id="b1"), {"i1"}),
        (RevertSelector(guideline_version="g2"), {"i2"}),
        (
            RevertSelector(
                created_from=T0 + timedelta(minutes=10), created_to=T0 + timedelta(minutes=20)
            ),
            {"i3"},
        ),
    ],
)
async def test_revert_selects_by_batch_guideline_or_time_window(
    store_engine, project, selector, reverted_items
):
    await add(
        store_engine,
        label(project, "i1", "a", 0, batch_id="b1", guideline_version="g1"),
        label(project, "i2", "a", 5, batch_id="b2", guideline_version="g2"),
        label(project, "i3", "a", 15, batch_id="b2", guideline_version="g1"),
    )
    async with store_engine.begin() as conn:
        result = await store.revert(conn, project, selector, author="admin", message="")
    assert {e["item_id"] for e in result["effects"]} == reverted_items
    assert set(await labels_of(store_engine, project)) == {"i1", "i2", "i3"} - reverted_items


async def test_revert_by_explicit_events_refuses_unknown_ids_and_writes_nothing(
    store_engine, project
):
    e1 = label(project, "i1", "a", 0)
    await add(store_engine, e1)
    async with store_engine.begin() as conn:
        with pytest.raises(ValueError, match="not counting label events"):
            await store.revert(
                conn,
                project,
                RevertSelector(event_ids=[str(e1.event_id), "nope"]),
                author="admin",
                message="",
            )
    async with store_engine.connect() as conn:
        assert await store.list_versions(conn, project) == []
    async with store_engine.begin() as conn:
        await store.revert(
            conn, project, RevertSelector(event_ids=[str(e1.event_id)]), author="admin", message=""
        )
    assert await labels_of(store_engine, project) == {}


async def test_trace_names_the_event_labeler_batch_guideline_and_prelabel(store_engine, project):
    auto = label(project, "i1", "cat", 0, source="auto", model_version="m7")
    human = label(
        project,
        "i1",
        "dog",
        1,
        labeler="bob",
        mode="prelabel",
        batch_id="b3",
        guideline_version="g2",
        shown_prelabel="cat",
        agreed_with_prelabel=False,
        model_version="m7",
    )
    await add(store_engine, auto, human)
    async with store_engine.begin() as conn:
        await store.revert(
            conn, project, RevertSelector(labeler_id="bob"), author="admin", message=""
        )
    async with store_engine.connect() as conn:
        head = await store.trace(conn, project, "i1", await store.head_view(conn, project))
        before = await store.trace(
            conn,
            project,
            "i1",
            await store.resolve_view(conn, project, as_of=datetime.now(UTC) - timedelta(days=1)),
        )
        with pytest.raises(store.NotFound, match="no item 'ghost'"):
            await store.trace(conn, project, "ghost", await store.head_view(conn, project))
    assert head["label"] == "cat" and head["labeler_id"] == "model:m7"
    # history in precedence order: bob's reverted human label, then the model's
    assert [(h["labeler_id"], h["counts"]) for h in head["history"]] == [
        ("bob", False),
        ("model:m7", True),
    ]
    assert head["history"][0]["excluded_by_version"] == 1
    assert before["label"] is None and before["history"] == []
    # in the view before the revert bob's label decided, with its whole provenance
    async with store_engine.connect() as conn:
        v0 = store.View(None, None, "no reverts")
        t = await store.trace(conn, project, "i1", v0)
    assert (t["label"], t["labeler_id"], t["batch_id"], t["guideline_version"]) == (
        "dog",
        "bob",
        "b3",
        "g2",
    )
    assert t["model_prelabel"] == {
        "shown_prelabel": "cat",
        "model_version": "m7",
        "agreed_with_prelabel": False,
    }
    assert "outranks auto" in t["reason"]


async def test_history_tables_refuse_update_and_delete(store_engine, project):
    await add(store_engine, label(project, "i1", "cat", 0))
    await snapshot(store_engine, project)
    async with store_engine.begin() as conn:
        await audit.record(
            conn, audit.Actor("alice", "admin", "test"), "test.entry", project=project
        )
    for statement in (
        f"UPDATE label_events SET label = 'dog' WHERE project = '{project}'",
        f"DELETE FROM label_events WHERE project = '{project}'",
        f"DELETE FROM label_versions WHERE project = '{project}'",
        f"UPDATE audit_log SET actor = 'eve' WHERE project = '{project}'",
        f"DELETE FROM audit_log WHERE project = '{project}'",
    ):
        with pytest.raises(Exception, match="append-only"):
            async with store_engine.begin() as conn:
                await conn.execute(text(statement))


async def test_an_insert_racing_a_version_lands_before_or_after_it_never_inside(
    store_engine, project
):
    """The cutoff is immutable: an event is in a version iff it had committed before it."""
    for round_ in range(5):
        event = label(project, f"r{round_}", "a", round_)

        async def insert(event=event):
            async with store_engine.begin() as conn:
                await store.append_events(conn, [event])

        async def version():
            async with store_engine.begin() as conn:
                return await store.create_snapshot(conn, project, author="x", message="", name=None)

        _, row = await asyncio.gather(insert(), version())
        first = await labels_of(store_engine, project, version=str(row["number"]))
        await asyncio.sleep(0.05)
        assert await labels_of(store_engine, project, version=str(row["number"])) == first

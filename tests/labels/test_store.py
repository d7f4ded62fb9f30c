"""The append-only store and the current-label view, on PostgreSQL and on SQLite."""

from datetime import UTC, datetime, timedelta

import pytest

from services.labels.store import append_events, count_events, current_labels
from shared.events import LabelEvent

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _label(project, item, label, source, minutes, labeler="alice", **kw):
    if source == "auto":
        labeler = "model:m1"
    mode = "blind" if source == "human" else None
    return LabelEvent(project=project, item_id=item, label=label, labeler_id=labeler,
                      source=source, mode=mode, created_at=T0 + timedelta(minutes=minutes), **kw)


async def test_redelivered_event_is_stored_once(store_engine, project):
    e = _label(project, "i1", "cat", "human", 0)
    async with store_engine.begin() as conn:
        assert await append_events(conn, [e, e]) == 1
    async with store_engine.begin() as conn:
        assert await append_events(conn, [e]) == 0
        assert await count_events(conn, project) == {"human": 1}


async def test_current_label_precedence_keeps_history(store_engine, project):
    events = [
        _label(project, "i1", "cat", "auto", 0),
        _label(project, "i1", "dog", "human", 1),
        _label(project, "i1", "cat", "human", 2, labeler="bob"),       # newest human wins
        _label(project, "i2", "dog", "human", 5),
        _label(project, "i2", "cat", "consensus", 1, labeler="quality"),  # consensus > human
        _label(project, "i2", "bird", "adjudicated", 0, labeler="rev"),   # adjudicated > all
        _label(project, "i3", "cat", "auto", 0),
    ]
    async with store_engine.begin() as conn:
        await append_events(conn, events)
    async with store_engine.connect() as conn:
        current = {r["item_id"]: r for r in await current_labels(conn, project)}
        without_auto = await current_labels(conn, project, include_auto=False)
        counts = await count_events(conn, project)
    assert {k: v["label"] for k, v in current.items()} == {"i1": "cat", "i2": "bird", "i3": "cat"}
    assert current["i1"]["labeler_id"] == "bob" and current["i1"]["source"] == "human"
    assert {r["item_id"] for r in without_auto} == {"i1", "i2"}
    assert sum(counts.values()) == len(events)  # nothing overwritten

"""The label consumer sends the database a bounded set of SQL texts, whatever the sizes of
its batches (issue 13): the asyncpg dialect keeps a prepared statement per text on every
pooled connection (the last 100), and a multi-row INSERT and an IN list sized by the
batch made the quality service's memory grow with each batch size it had not had yet."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from uuid import uuid4

import pytest
from sqlalchemy import event

from services.quality.service import QualityService
from shared.consumer import Delivery
from shared.events import LabelEvent
from shared.supervisor import Supervisor

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def auto_labels(project: str, first: int, count: int) -> list[Delivery[LabelEvent]]:
    return [Delivery(f"{n}-0", LabelEvent(
        event_id=uuid4(), project=project, item_id=f"i{n}", labeler_id="model:m1",
        label="cat", source="auto", model_version="m1", model_label="cat", confidence=0.95,
        created_at=T0)) for n in range(first, first + count)]


async def test_batches_of_every_size_use_a_few_statements_and_count_each_label_once(
        engine, project):
    service = QualityService(SimpleNamespace(  # type: ignore[arg-type]
        engine=engine, bus=SimpleNamespace(), supervisor=Supervisor("quality")))
    texts: set[str] = set()

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        texts.add(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        batches, n = [], 0
        for size in range(1, 151):
            batches.append(auto_labels(project, n, size))
            n += size
        for batch in batches:
            await service.on_labels(batch)
        await service.on_labels(batches[-1])  # redelivered: stored already, not counted
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert service.summary(project)["label_events"] == {"auto": n}
    # One INSERT text per power of two up to 128 (a size-keyed one: 150 texts, and more).
    assert len(texts) <= 8, sorted(texts, key=len)[:3]

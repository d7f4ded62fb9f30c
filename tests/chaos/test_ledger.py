"""The chaos tests' accounting finds what was lost or duplicated, and says which."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from services.labels.store import append_events
from services.router.queue import routed_task_id, task_key_of
from shared import streams
from shared.events import LabelEvent, stable_key
from shared.settings import Settings
from tests.chaos.ledger import account, predictions

pytestmark = pytest.mark.integration


async def test_the_accounting_names_lost_doubled_and_pending_predictions(
        private_redis, engine):
    project = f"ledger-{uuid.uuid4().hex[:8]}"
    fine_auto, fine_task, lost, both, misrouted = predictions(5, auto_share=0.0, seed=1)
    redis = aioredis.from_url(private_redis.url)

    def auto_label(p, labeler: str = "model:m1") -> LabelEvent:
        return LabelEvent(event_id=stable_key("auto", p.event_id), project=project,
                          item_id=p.item_id, label="a", labeler_id=labeler, source="auto",
                          created_at=datetime.now(UTC))
    try:
        async with engine.begin() as conn:
            await append_events(conn, [auto_label(fine_auto), auto_label(both),
                                       auto_label(misrouted)])
        for p in (fine_task, both):
            await redis.hset(task_key_of(routed_task_id(p.event_id, project, Settings().shards)),
                             "state", "open")
        await redis.xadd(streams.PREDICTIONS, {"data": "{}"})
        await redis.xgroup_create(streams.PREDICTIONS, streams.GROUP_ROUTER, id="0")
        items = [p.__class__(p.event_id, p.item_id, auto=p is fine_auto)
                 for p in (fine_auto, fine_task, lost, both, misrouted)]
        acct = await account(redis, engine, project, items,
                             submitted={"task-x": "rev0"},
                             groups=((streams.PREDICTIONS, streams.GROUP_ROUTER),))
        assert acct.lost == [lost.item_id]
        assert acct.both == [both.item_id]
        assert acct.wrong_route == [misrouted.item_id]
        assert acct.submits_missing == ["task-x"]
        assert acct.pending == [f"{streams.PREDICTIONS}/{streams.GROUP_ROUTER}: 0 pending, "
                                "lag 1"]
        report = acct.report()
        for line in ("lost: 1", "both: 1", "wrong_route: 1", "submits_missing: 1", "pending: 1"):
            assert line in report, report
    finally:
        await redis.aclose()

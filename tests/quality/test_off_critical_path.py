"""Consensus never waits for the agreement statistics: the bootstrap intervals run in a
loop and on a schedule of their own (issue 16 item 1)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from services.quality import service as quality_service
from services.quality.service import QualityService
from shared.events import LabelEvent
from shared.supervisor import Supervisor

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_consensus_is_published_while_the_agreement_bootstrap_is_still_running(
        engine, project, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def stuck_report(*args, **kwargs):  # a bootstrap on a huge project, still running
        started.set()
        release.wait(60)
        return {}

    monkeypatch.setattr(quality_service, "sampled_report", stuck_report)
    said: list = []

    async def publish(stream: str, events: list) -> list[str]:
        said.extend(events)
        return []

    service = QualityService(SimpleNamespace(  # type: ignore[arg-type]
        engine=engine, bus=SimpleNamespace(publish=publish), supervisor=Supervisor("quality")))
    for i in range(10):
        for who in ("ann", "ben", "cid"):
            event = LabelEvent(project=project, item_id=f"i{i}", labeler_id=who,
                               label=("cat", "dog")[i % 2], source="human", mode="blind",
                               created_at=T0 + timedelta(seconds=i))
            service.state(project).apply(service._row(event))
    service._touch(project, 0.0)

    statistics = asyncio.create_task(service._statistics_due())
    try:
        await asyncio.to_thread(started.wait, 30)
        assert started.is_set() and not statistics.done()
        await asyncio.wait_for(service._settle_due(), 30)  # not behind the statistics
        consensus = [e for e in said if getattr(e, "source", None) == "consensus"]
        assert len(consensus) == 10
        assert service.summary(project)["consensus"]["items_with_consensus"] == 10
        assert not statistics.done()  # the bootstrap was still running all along
    finally:
        release.set()
        await asyncio.wait_for(statistics, 30)
    assert service.summary(project)["agreement"]["windows"] == {}

"""The quality service on a project above ``full_refit_max_votes``: a settle updates the
items the new votes touched, a background refit is adopted by a later settle, and the
consensus it publishes agrees with a full refit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from services.quality.config import QualityConfig
from services.quality.service import QualityService
from tests.quality.test_incremental import arriving

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def vote(project: str, n: int, item: str, who: str, label: str) -> dict:
    return {"event_id": f"e{n}", "project": project, "item_id": item, "labeler_id": who,
            "label": label, "source": "human", "mode": "blind",
            "created_at": T0 + timedelta(seconds=n), "guideline_version": "g1"}


def quality_service(engine, config: QualityConfig) -> tuple[QualityService, list]:
    """A quality service on the real database whose published events are collected."""
    said: list = []

    async def publish(stream: str, events: list) -> list[str]:
        said.extend(events)
        return []

    service = QualityService(
        SimpleNamespace(engine=engine, bus=SimpleNamespace(publish=publish)),  # type: ignore[arg-type]
        config)
    return service, said


async def test_large_projects_are_settled_from_the_touched_items(engine, project):
    service, said = quality_service(engine, QualityConfig(full_refit_max_votes=1000))
    state = service.state(project)
    votes = arriving(9000, seed=4)
    for n, (item, who, label) in enumerate(votes[:6000]):
        state.apply(vote(project, n, item, who, label))
    await service.settle(project)  # never fitted: a full fit
    assert state.engine.refits == 1
    published_first = len(state.published)

    for start in range(6000, 9000, 500):
        said.clear()
        for n in range(start, start + 500):
            state.apply(vote(project, n, *votes[n]))
        await service.settle(project)
        await asyncio.gather(*service.refits.values())
        assert not state.touched
        fresh = {e.item_id for e in said if getattr(e, "source", None) == "consensus"}
        touched = {votes[n][0] for n in range(start, start + 500)}
        newly_settled = {i for i in touched if len(state.table.votes_on(
            state.table.items.index[i])) >= 2 and i not in state.requested}
        # Every item the burst brought to two votes has its consensus now, or an
        # adjudication request.
        assert newly_settled - set(state.published) == set()
        assert fresh <= set(state.published)
    await service.settle(project)  # adopts the last background refit, if one finished
    assert state.engine.refits > 1  # background refits were adopted
    assert len(state.published) > published_first

    incremental = {i: label for i, (label, _) in state.published.items()}
    await service.settle(project, full=True)
    differ = sum(1 for i, (label, _) in state.published.items() if incremental.get(i) != label)
    assert differ <= 0.01 * len(state.published)
    summary = service.summary(project)
    assert summary["consensus"]["items_with_consensus"] == sum(
        1 for i in range(state.table.n_items) if state.table.item_size[i] >= 2)
    assert set(summary["labelers"]) == set(state.table.labelers.names)
    assert all(e["confusion"] is not None for e in summary["labelers"].values())


async def test_a_project_with_auto_labels_only_settles_to_nothing(engine, project):
    """Auto labels are not votes: a project that has only them (every confident prediction
    accepted, nobody reviewing yet) settles without fitting a zero-class model."""
    service, said = quality_service(engine, QualityConfig())
    state = service.state(project)
    for n in range(50):
        state.apply({**vote(project, n, f"i{n}", "router", "cat"), "source": "auto"})
    await service.settle(project)
    await service.settle(project, full=True)
    assert said == [] and state.published == {}
    assert service.summary(project)["consensus"]["items_with_consensus"] == 0

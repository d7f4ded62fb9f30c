"""A restart from a checkpoint: the quality service loads its state as of a stored
batch and replays only the votes stored after it; the consensus is the one it would
have reached without a restart, and a batch stored but never acknowledged (the process
died first, before or after a checkpoint) is neither lost nor counted twice."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import NAMESPACE_URL, uuid5

import numpy as np
import pytest
from sqlalchemy import func, select

from services.quality.config import QualityConfig
from services.quality.service import QualityService
from services.quality.tables import quality_checkpoints, quality_label_votes
from shared.consumer import Delivery
from shared.events import LabelEvent
from tests.quality.test_incremental import arriving

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 500


def batches(project: str, n_votes: int) -> list[list[Delivery[LabelEvent]]]:
    """The crowd's votes as the consumer gets them: batches of 500 label events."""
    events = [Delivery(f"{n}-0", LabelEvent(
        event_id=uuid5(NAMESPACE_URL, f"{project}/{n}"), project=project, item_id=item,
        labeler_id=who, label=label, source="human", mode="blind",
        created_at=T0 + timedelta(seconds=n), guideline_version="g1"))
        for n, (item, who, label) in enumerate(arriving(n_votes, seed=9))]
    return [events[i:i + BATCH] for i in range(0, len(events), BATCH)]


class Said:
    def __init__(self) -> None:
        self.events: list = []

    async def publish(self, stream: str, events: list) -> list[str]:
        self.events.extend(events)
        return []


def service(engine, said: Said) -> QualityService:
    """A quality service on the real database; the bus only records what is said.
    Incremental from 1,000 votes on, and with no background refit (their timing is the
    scheduler's), so that runs with and without a restart take the same path."""
    made = QualityService(
        SimpleNamespace(engine=engine, bus=SimpleNamespace(publish=said.publish)),  # type: ignore[arg-type]
        QualityConfig(full_refit_max_votes=1000))
    return made


def no_background_refits(made: QualityService, project: str) -> None:
    made.state(project).engine.drift = math.inf
    made.state(project).engine.refit_growth = math.inf


def consensus(made: QualityService, project: str) -> dict[str, str]:
    state = made.state(project)
    table, engine = state.table, state.engine
    labels = engine.labels(np.arange(table.n_items))
    return {table.items.names[i]: table.classes.names[labels[i]]
            for i in range(table.n_items) if table.item_size[i] >= 2}


async def test_a_restart_from_a_checkpoint_reaches_the_consensus_of_no_restart(engine, project):
    said = Said()
    first = service(engine, said)
    arriving_batches = batches(project, 9000)
    await first._load()
    for n, batch in enumerate(arriving_batches[:8]):
        await first.on_labels(batch)
        if n == 2:
            await first.settle(project)  # the first fit: in full
            no_background_refits(first, project)
    await first.settle(project)
    await first.write_checkpoint(project)
    for batch in arriving_batches[8:]:
        await first.on_labels(batch)
    await first.settle(project)
    published = len(said.events)

    again = Said()
    restarted = service(engine, again)
    await restarted._load()
    state = restarted.state(project)
    assert state.table.n_rows == first.state(project).table.n_rows == 9000
    assert restarted.checkpointed[project] == first.checkpointed[project]
    await restarted.settle(project)

    assert consensus(restarted, project) == consensus(first, project)
    before = first.state(project)
    order = [before.table.items.index[name] for name in state.table.items.names]
    assert sorted(order) == list(range(before.table.n_items))  # the same items
    np.testing.assert_allclose(state.engine.posteriors[: state.table.n_items],
                               before.engine.posteriors[order], atol=1e-12)
    assert state.published == first.state(project).published
    assert again.events == []  # everything it would say was said before the restart
    assert published > 0
    assert restarted.summary(project)["label_events"] == first.summary(project)["label_events"]


async def test_a_crash_around_a_checkpoint_loses_and_duplicates_nothing(engine, project):
    arriving_batches = batches(project, 6000)
    # Without a crash: every batch once.
    reference = service(engine, Said())
    await reference._load()
    for batch in arriving_batches:
        await reference.on_labels(batch)
    await reference.settle(project, full=True)
    expected = reference.summary(project)

    other = f"{project}-crash"
    crashing = batches(other, 6000)
    first = service(engine, Said())
    await first._load()
    for batch in crashing[:8]:
        await first.on_labels(batch)
    await first.write_checkpoint(other)
    await first.on_labels(crashing[8])
    # The process dies here: batches 7 and 8 were stored but never acknowledged (7 is in
    # the checkpoint, 8 is not), so the stream delivers both again after the restart.
    restarted = service(engine, Said())
    await restarted._load()
    assert restarted.state(other).table.n_rows == 9 * BATCH
    for batch in crashing[7:]:
        await restarted.on_labels(batch)
    await restarted.settle(other, full=True)
    summary = restarted.summary(other)

    async with engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).where(
            quality_label_votes.c.project == other))).scalar()
        checkpoints = (await conn.execute(select(quality_checkpoints.c.votes).where(
            quality_checkpoints.c.project == other))).scalars().all()
    assert stored == 6000
    assert checkpoints == [8 * BATCH]
    for key in ("label_events", "items_with_human_labels", "items_with_overlap",
                "human_labels_by_labeler", "agreeing_pairs", "total_pairs"):
        assert summary[key] == expected[key], key
    assert summary["consensus"]["items_with_consensus"] == \
        expected["consensus"]["items_with_consensus"]
    assert consensus(restarted, other) == consensus(reference, project)


async def test_an_unreadable_checkpoint_falls_back_to_replaying_every_vote(engine, project):
    first = service(engine, Said())
    await first._load()
    for batch in batches(project, 2000):
        await first.on_labels(batch)
    await first.write_checkpoint(project)
    async with engine.begin() as conn:
        await conn.execute(quality_checkpoints.update().where(
            quality_checkpoints.c.project == project).values(state=b"not a checkpoint"))
    restarted = service(engine, Said())
    await restarted._load()
    assert project not in restarted.checkpointed
    assert restarted.state(project).table.n_rows == 2000

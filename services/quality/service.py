"""Quality service: consumes label events, keeps votes, measures agreement."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select

from shared import metrics, streams
from shared.bus import Delivery
from shared.db import insert_ignoring_duplicates
from shared.events import LabelEvent, LabelSource
from shared.service import Runtime
from shared.tables import quality_votes

from .running import RunningAgreement

# Sources that are independent human judgements, the ones agreement is about.
HUMAN_SOURCES = {LabelSource.human.value, LabelSource.imported.value}


class QualityService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.agreement: dict[str, RunningAgreement] = defaultdict(RunningAgreement)
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)

    async def start(self) -> None:
        await self._load()
        self.runtime.bus.consume(streams.LABELS, streams.GROUP_QUALITY, LabelEvent, self.on_labels)

    async def stop(self) -> None:
        return None

    async def _load(self) -> None:
        """Rebuild the running state from the stored votes (a restart loses nothing)."""
        query = select(
            quality_votes.c.project,
            quality_votes.c.item_id,
            quality_votes.c.labeler_id,
            quality_votes.c.label,
            quality_votes.c.source,
        ).order_by(quality_votes.c.created_at, quality_votes.c.event_id)
        async with self.runtime.engine.connect() as conn:
            for row in (await conn.execute(query)).all():
                self._apply(row.project, row.item_id, row.labeler_id, row.label, row.source)

    def _apply(self, project: str, item_id: str, labeler_id: str, label: str, source: str) -> None:
        self.counts[project][source] += 1
        if source in HUMAN_SOURCES:
            self.agreement[project].add(item_id, labeler_id, label)

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        rows = [
            {
                "event_id": str(d.event.event_id),
                "project": d.event.project,
                "item_id": d.event.item_id,
                "labeler_id": d.event.labeler_id,
                "label": d.event.label,
                "source": d.event.source.value,
                "created_at": d.event.created_at,
            }
            for d in batch
        ]
        # Keep only rows not seen before so that a redelivery does not count twice.
        async with self.runtime.engine.begin() as conn:
            ids = [r["event_id"] for r in rows]
            seen = set(
                (
                    await conn.execute(
                        select(quality_votes.c.event_id).where(quality_votes.c.event_id.in_(ids))
                    )
                ).scalars()
            )
            fresh = [r for r in rows if r["event_id"] not in seen]
            fresh = list({r["event_id"]: r for r in fresh}.values())
            await insert_ignoring_duplicates(conn, quality_votes, fresh)
        for r in sorted(fresh, key=lambda r: r["created_at"]):
            self._apply(r["project"], r["item_id"], r["labeler_id"], r["label"], r["source"])
        for project in {r["project"] for r in fresh}:
            value = self.agreement[project].agreement
            if value is not None:
                metrics.AGREEMENT.labels(project).set(value)

    def summary(self, project: str) -> dict[str, Any]:
        running = self.agreement.get(project, RunningAgreement())
        return {
            "project": project,
            "label_events": dict(self.counts.get(project, Counter())),
            "items_with_human_labels": len(running.votes),
            "items_with_overlap": running.items_with_overlap,
            "human_labels_by_labeler": dict(running.labelers()),
            "pairwise_agreement": running.agreement,
            "agreeing_pairs": running.agreeing_pairs,
            "total_pairs": running.total_pairs,
        }

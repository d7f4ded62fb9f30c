"""Labels service: persists every label event from the stream, append-only."""

from __future__ import annotations

from collections import Counter

from shared import metrics, streams
from shared.bus import Delivery
from shared.events import LabelEvent
from shared.service import Runtime

from .store import append_events


class LabelsService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self) -> None:
        self.runtime.bus.consume(streams.LABELS, streams.GROUP_LABELS, LabelEvent, self.on_labels)

    async def stop(self) -> None:
        return None

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        """Commit the whole batch before returning: the entries are acked only after that."""
        events = [d.event for d in batch]
        async with self.runtime.engine.begin() as conn:
            inserted = await append_events(conn, events)
        if inserted:
            for (project, source), n in Counter(
                (e.project, e.source.value) for e in events
            ).items():
                metrics.LABELS_STORED.labels(project, source).inc(n)

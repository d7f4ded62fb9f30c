"""Labels service: persists every label event from the stream, append-only.

A label outside its project's declared schema is dead-lettered with the
reason instead of stored; each stored batch leaves one audit entry per
project (the events themselves carry who labeled what and when).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from shared import metrics, streams
from shared.bus import Delivery
from shared.events import LabelEvent
from shared.logs import get_logger
from shared.projects import label_problems
from shared.service import Runtime

from . import audit
from .store import append_events, label_options_of

log = get_logger(__name__)
STREAM_ACTOR = audit.Actor("service:labels", "service", f"stream:{streams.LABELS}")


SCHEMA_CACHE_SECONDS = 2.0


class LabelsService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._schemas: dict[str, tuple[float, list[str] | None]] = {}

    def forget_schema(self, project: str) -> None:
        """Called when this process changes a project's schema; others see it within 2 s."""
        self._schemas.pop(project, None)

    async def _label_options(self, conn: Any, projects: set[str]) -> dict[str, list[str] | None]:
        """Projects' label schemas, cached briefly: one query less per ingested batch."""
        now = time.monotonic()
        stale = {p for p in projects
                 if p not in self._schemas or now - self._schemas[p][0] > SCHEMA_CACHE_SECONDS}
        if stale:
            for project, options in (await label_options_of(conn, stale)).items():
                self._schemas[project] = (now, options)
        return {p: self._schemas[p][1] for p in projects}

    async def start(self) -> None:
        self.runtime.bus.consume(streams.LABELS, streams.GROUP_LABELS, LabelEvent, self.on_labels)

    async def stop(self) -> None:
        return None

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        """Commit the whole batch before returning: the entries are acked only after that.
        A label outside its project's schema is dead-lettered (the rule every door uses)."""
        accepted: list[LabelEvent] = []
        refused: list[tuple[Delivery[LabelEvent], str]] = []
        async with self.runtime.engine.begin() as conn:
            options = await self._label_options(conn, {d.event.project for d in batch})
            for d in batch:
                event = d.event
                problems = label_problems(event.project, options[event.project], [event.label])
                if problems:
                    refused.append((d, problems[0]))
                else:
                    accepted.append(event)
            inserted = await append_events(conn, accepted)
            by_project: dict[str, list[str]] = defaultdict(list)
            for event in accepted:
                by_project[event.project].append(str(event.event_id))
            for project, ids in by_project.items():
                await audit.record(
                    conn, STREAM_ACTOR, "labels.ingest", project=project,
                    detail={"events": len(ids), "first": ids[0], "last": ids[-1]},
                )  # fmt: skip
        # After the commit: a crash in between redelivers, and the stable ids dedupe.
        if refused:
            await self.runtime.bus.refuse(streams.LABELS, streams.GROUP_LABELS, refused)
        if inserted:
            for (project, source), n in Counter(
                (e.project, e.source.value) for e in accepted
            ).items():
                metrics.LABELS_STORED.labels(project, source).inc(n)

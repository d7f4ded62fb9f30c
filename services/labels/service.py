"""Labels service: persists every label event from the stream, append-only.

A label outside its project's declared schema is dead-lettered with the
reason instead of stored; each stored batch leaves one audit entry per
project (the events themselves carry who labeled what and when).
"""

from __future__ import annotations

from collections import defaultdict

from shared import metrics, streams
from shared.bus import Delivery
from shared.cache import RefreshingCache
from shared.events import LabelEvent
from shared.logs import get_logger
from shared.projects import label_problems
from shared.service import Runtime

from . import actions, audit
from .store import append_events_counted, has_project, label_options_of

log = get_logger(__name__)
STREAM_ACTOR = audit.Actor("service:labels", "service", f"stream:{streams.LABELS}")


SCHEMA_CACHE_SECONDS = 2.0
# Project settings live here; the router, scorer and quality service keep copies in Redis,
# fed by loopwise:projects. This key says the Redis has been given every project's
# settings; a Redis without it (new, flushed, failed over to an empty replica) gets them
# again within SETTINGS_CHECK_SECONDS.
SETTINGS_MARK = "loopwise:labels:settings-published"
SETTINGS_CHECK_SECONDS = 5.0


class LabelsService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Projects' label schemas, cached briefly: one query less per ingested batch. Never
        # answered stale: a batch after the 2 s waits for the schema in force.
        self._schemas = RefreshingCache.batched(self._load_schemas, SCHEMA_CACHE_SECONDS,
                                                stale_seconds=SCHEMA_CACHE_SECONDS)

    def forget_schema(self, project: str) -> None:
        """Called when this process changes a project's schema; others see it within 2 s."""
        self._schemas.drop(project)

    async def _load_schemas(self, projects: set[str]) -> dict[str, list[str] | None]:
        async with self.runtime.engine.connect() as conn:
            return await label_options_of(conn, projects)

    async def start(self) -> None:
        self.runtime.bus.consume(streams.LABELS, streams.GROUP_LABELS, LabelEvent, self.on_labels)
        self.runtime.supervisor.every("settings republish", SETTINGS_CHECK_SECONDS,
                                      self.republish_if_lost, immediately=True)

    async def republish_if_lost(self) -> None:
        """Publish every project's settings again when this Redis does not hold them. The
        mark is set first: a flush after it removes it, so the settings go out again on
        the next check."""
        redis = self.runtime.bus.redis
        if not await redis.set(SETTINGS_MARK, "1", nx=True):
            return
        try:
            count = await actions.republish_settings(actions.Context(
                engine=self.runtime.engine, publish=self.runtime.bus.publish))
        except Exception:
            await redis.delete(SETTINGS_MARK)  # the next check tries again
            raise
        log.info("project settings published to a Redis that did not hold them",
                 projects=count)

    async def stop(self) -> None:
        await self._schemas.aclose()

    async def knows_project(self, project: str) -> bool:
        """Declared here (its settings: this service owns them) or with labels stored."""
        async with self.runtime.engine.connect() as conn:
            return await has_project(conn, project)

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        """Commit the whole batch before returning: the entries are acked only after that.
        A label outside its project's schema is dead-lettered (the rule every door uses)."""
        accepted: list[LabelEvent] = []
        refused: list[tuple[Delivery[LabelEvent], str]] = []
        options = await self._schemas.get_many({d.event.project for d in batch})
        async with self.runtime.engine.begin() as conn:
            for d in batch:
                event = d.event
                # A preference's label names candidates, not label options: its own model
                # checked it against the verdict.
                problems = [] if event.preference is not None else label_problems(
                    event.project, options[event.project], [event.label])
                if problems:
                    refused.append((d, problems[0]))
                else:
                    accepted.append(event)
            inserted = await append_events_counted(conn, accepted)
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
        for (project, source), n in inserted.items():  # what was new, not what came again
            metrics.LABELS_STORED.labels(project, source).inc(n)

"""Quality service: consumes label events, keeps votes, says what it finds.

The consumer stores each batch of labels (``quality_label_votes``), updates the
per-project counters and deference monitors, and publishes a ``labeler_flag`` the
moment a monitor crosses its threshold. Consensus (Dawid-Skene) and adjudication
requests run on a debounced schedule (see :mod:`services.quality.scheduling`), never
per batch; on a large project a settle updates only the items the new votes touched
(:mod:`services.quality.incremental`) and full refits run in a worker thread in the
background. Agreement with its bootstrap intervals and guideline alerts run on a
schedule of their own, slower and in another loop: a long bootstrap never holds back
a consensus.

Everything said on a stream is recorded in ``quality_consensus`` /
``quality_findings`` after it is published, under a deterministic event id: a
crash between the two republishes the same event, which consumers ignore.

Each stored batch of votes gets the next number (``stored_seq``); every
``checkpoint_interval_seconds`` a project that changed is checkpointed
(:mod:`services.quality.checkpoint`: its state as of the last batch applied), and on
stop every changed one is. A restart loads the checkpoints and replays only the votes
stored after them. A batch stored but not acknowledged when the process died is in
the table, so the replay applies it and its redelivery finds it stored and skips it:
nothing is lost or counted twice, whether the crash came before or after a checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics, streams
from shared.bus import Delivery
from shared.db import insert_ignoring_duplicates, insert_new, upsert
from shared.events import (
    AdjudicationRequestEvent,
    FlagSummary,
    GuidelineAlertEvent,
    LabelerFlagClearedEvent,
    LabelerFlagEvent,
    LabelEvent,
    LabelSource,
    stable_id,
    utcnow,
)
from shared.logs import get_logger
from shared.peers import PeerError, Peers
from shared.projects import (
    KEEP_NEWEST,
    ProjectSettings,
    ProjectSettingsChanged,
    label_problems,
)
from shared.service import Runtime

from . import checkpoint
from .alerts import GuidelineWatch
from .config import QualityConfig
from .detection import DeferenceTest
from .evaluation import evaluate_review
from .incremental import IncrementalDawidSkene, Refit
from .scheduling import RecomputeSchedule
from .settlement import (
    CONSENSUS_VERSION,
    Settlement,
    confusion_of,
    settle_changes,
)
from .state import NewFlag, ProjectState
from .tables import (
    quality_checkpoints,
    quality_consensus,
    quality_findings,
    quality_label_votes,
)
from .votes import grown
from .windows import DEFAULT_WINDOWS, class_agreement_of_counts, sampled_report

log = get_logger(__name__)
CONSENSUS_LABELER = "quality:dawid-skene"
SETTINGS_PREFIX = "loopwise:quality:settings:"  # the projects' settings, as kept here
RECOMPUTE_TICK_SECONDS = 0.5  # how often the schedule is asked which projects are due
COMPARISON_TIMEOUT_SECONDS = 300.0  # the scorer refits a few dozen models to answer


async def evaluation_of(engine: AsyncEngine, project: str,
                        peers: Peers | None = None) -> dict[str, Any]:
    """Does the project's review pay? Label error by stage from the stored label events
    (:mod:`services.quality.evaluation`), and the model trained on the loop's labels
    against its baselines, which the scorer refits on the items it owns (asked over
    HTTP; without ``peers``, or when the scorer cannot answer, the reason is given in
    its place). What the HTTP route and ``loopwise evaluate`` both answer."""
    async def review() -> dict[str, Any]:
        async with engine.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(
                select(quality_label_votes).where(quality_label_votes.c.project == project)))]
        for r in rows:
            r["created_at"] = _aware(r["created_at"])
        return {"label_events": len(rows), **await asyncio.to_thread(evaluate_review, rows)}

    result, comparison = await asyncio.gather(review(), model_comparison(peers, project))
    return {"project": project, **result, "model_comparison": comparison}


async def model_comparison(peers: Peers | None, project: str) -> dict[str, Any]:
    """The scorer's comparison of the loop's model with its baselines, or why there is none."""
    if peers is None:
        return {"available": False, "reason": "no scorer was asked"}
    try:
        answer: dict[str, Any] = await peers.get(
            "scorer", f"/v1/projects/{project}/comparison", timeout=COMPARISON_TIMEOUT_SECONDS)
    except PeerError as exc:
        return {"available": False, "reason": str(exc)}
    return answer


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class QualityService:
    def __init__(self, runtime: Runtime, config: QualityConfig | None = None) -> None:
        self.runtime = runtime
        self.config = config or QualityConfig()
        self.projects: dict[str, ProjectState] = {}
        self.schedule = RecomputeSchedule(  # consensus and adjudication requests
            quiet_seconds=self.config.quiet_seconds,
            max_delay_seconds=self.config.max_delay_seconds,
        )
        self.stats_schedule = RecomputeSchedule(  # agreement report and guideline alerts
            quiet_seconds=self.config.quiet_seconds,
            max_delay_seconds=self.config.stats_max_delay_seconds,
            min_interval_seconds=self.config.stats_min_interval_seconds,
        )
        self.settings: dict[str, ProjectSettingsChanged] = {}  # the newest of each project
        self.refits: dict[str, asyncio.Task[None]] = {}  # background full refits, by project
        self.stored_seq = 0  # the number of the last batch of votes stored
        self.applied_seq = 0  # ... and of the last one applied to the state
        self.checkpointed: dict[str, int] = {}  # project -> applied_seq of its checkpoint
        self.dirty: set[str] = set()  # projects changed since their last checkpoint
        self.settling: set[str] = set()  # mid-settle: not checkpointed (half of it done)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._load_settings()
        await self._load()
        self.runtime.bus.consume(streams.LABELS, streams.GROUP_QUALITY, LabelEvent, self.on_labels)
        self.runtime.bus.consume(streams.PROJECTS, streams.GROUP_QUALITY, ProjectSettingsChanged,
                                 self.on_settings)
        self.runtime.supervisor.every("quality recompute", RECOMPUTE_TICK_SECONDS,
                                      self._settle_due, immediately=True)
        self.runtime.supervisor.every("quality statistics", RECOMPUTE_TICK_SECONDS,
                                      self._statistics_due, immediately=True)
        self.runtime.supervisor.every("quality checkpoint",
                                      self.config.checkpoint_interval_seconds,
                                      self.checkpoint_changed)

    async def stop(self) -> None:
        """A clean stop leaves a checkpoint of every changed project: the next start
        replays nothing."""
        for task in list(self.refits.values()):
            task.cancel()
        await self.checkpoint_changed()

    async def knows_project(self, project: str) -> bool:
        """Declared (settings kept from ``loopwise:projects``) or with votes here."""
        if await self.runtime.bus.redis.exists(f"{SETTINGS_PREFIX}{project}"):
            return True
        async with self.runtime.engine.connect() as conn:
            vote = await conn.execute(select(quality_label_votes.c.project).where(
                quality_label_votes.c.project == project).limit(1))
            return vote.first() is not None

    # ------------------------------------------------------------------ settings

    def project_settings(self, project: str) -> ProjectSettings:
        """The project's settings as the labels service last published them."""
        kept = self.settings.get(project)
        return kept.settings if kept is not None else ProjectSettings()

    async def _load_settings(self) -> None:
        redis = self.runtime.bus.redis
        async for key in redis.scan_iter(match=f"{SETTINGS_PREFIX}*", count=500):
            raw = await redis.hget(key, "settings")  # the event, as KEEP_NEWEST keeps it
            if raw:
                kept = ProjectSettingsChanged.model_validate_json(raw)
                self.settings[kept.project] = kept

    async def on_settings(self, batch: list[Delivery[ProjectSettingsChanged]]) -> None:
        """Keep each project's newest settings (here and in this service's own keys, for a
        restart); a new guideline threshold applies to the project's watch at once."""
        for d in batch:
            event = d.event
            await self.runtime.bus.redis.eval(KEEP_NEWEST, 1, f"{SETTINGS_PREFIX}{event.project}",
                                              event.revision, event.to_json())
            kept = self.settings.get(event.project)
            if kept is None or kept.revision < event.revision:
                self.settings[event.project] = event
                if event.project in self.projects:
                    self.projects[event.project].watch.threshold = (
                        self.config.guideline_threshold_of(event.settings.quality))

    def state(self, project: str) -> ProjectState:
        state = self.projects.get(project)
        if state is None:
            state = self.projects[project] = ProjectState(
                test=DeferenceTest(threshold=self.config.cusum_threshold,
                                   partial_threshold=self.config.partial_cusum_threshold),
                watch=GuidelineWatch(
                    threshold=self.config.guideline_threshold_of(
                        self.project_settings(project).quality),
                    min_items=self.config.guideline_min_items,
                ),
                engine=IncrementalDawidSkene(min_votes=self.config.min_votes),
            )
        return state

    async def _load(self) -> None:
        """Rebuild the state: each project's checkpoint, then the votes stored after it
        (every stored vote where there is none), and the findings (a restart loses
        nothing)."""
        taken_at = await self._load_checkpoints()
        async with self.runtime.engine.connect() as conn:
            # Numbers go on from the highest used (votes may have been deleted since).
            self.stored_seq = self.applied_seq = max([*self.checkpointed.values(), int(
                (await conn.execute(select(func.max(quality_label_votes.c.stored_seq)))
                 ).scalar() or 0)])
            # Findings first: the flags cleared by a review are re-cleared at the same
            # point of the replay below, so that old evidence does not flag anyone again.
            findings = list((await conn.execute(select(quality_findings))).mappings())
            for project in taken_at:  # what a checkpoint holds of these, the table has
                self.projects[project].flags.clear()
                self.projects[project].alerts.clear()
                self.projects[project].watch.active.clear()
            for row in sorted(findings, key=lambda r: r["created_at"]):
                state = self.state(row["project"])
                if row["kind"] == "adjudication_request":
                    state.mark_requested(row["key"])
                elif row["kind"] == "labeler_flag" and row["resolved_at"] is None:
                    state.flags[row["key"]] = dict(row["detail"])
                elif row["kind"] == "labeler_flag_cleared":
                    since = taken_at.get(row["project"])
                    if since is not None and _aware(row["created_at"]) < since:
                        continue  # the checkpoint's monitor was cleared already
                    detail = row["detail"]
                    state.clears_due.setdefault(detail["labeler_id"], []).append(
                        int(detail["tasks_seen"]))
                    if "comparisons_seen" in detail:
                        state.position_clears_due.setdefault(detail["labeler_id"], []).append(
                            int(detail["comparisons_seen"]))
                elif row["kind"] == "guideline_alert" and row["resolved_at"] is None:
                    detail = dict(row["detail"])
                    key = (detail["class"], detail["guideline_version"])
                    state.alerts[key] = detail
                    state.watch.active.add(key)
            for state in self.projects.values():
                for who, due in state.clears_due.items():
                    due.sort()
                    monitor = state.monitors.get(who)
                    while due and monitor is not None and monitor.tasks >= due[0]:
                        due.pop(0)  # cleared after the checkpoint, before any new task
                        monitor.clear()
            for stored in (await conn.execute(self._replay_query(self.checkpointed))
                           ).mappings():
                vote = dict(stored)
                vote["created_at"] = _aware(vote["created_at"])
                self.state(vote["project"]).apply(vote)
                self.dirty.add(vote["project"])  # replayed: the next start need not
            for row in (await conn.execute(select(quality_consensus))).mappings():
                self.state(row["project"]).mark_published(row["item_id"], row["label"],
                                                          row["revision"])
        for state in self.projects.values():
            state.finish_replay()
        # A flag raised before a crash but never published is published now.
        missing = [(p, NewFlag(who, monitor)) for p, st in self.projects.items()
                   for who, monitor in st.monitors.items()
                   if monitor.flagged and who not in st.flags]
        if missing:
            await self._publish_flags(missing)
        for project, state in self.projects.items():
            unsaid = [w for w in state.take_position_flags() if w not in state.flags]
            if unsaid:
                await self._publish_position_flags(project, unsaid)
        for project in self.projects:
            self._touch(project, time.monotonic(), backlog=True)
            self._export_metrics(project)

    @staticmethod
    def _replay_query(checkpointed: dict[str, int]) -> Any:
        """The votes a restart must apply: those stored after their project's checkpoint,
        and every vote of a project without one; in the order they were given."""
        votes = quality_label_votes.c
        query = select(quality_label_votes)
        if checkpointed:
            query = query.where(or_(votes.project.not_in(list(checkpointed)), *(
                (votes.project == p) & (votes.stored_seq > seq)
                for p, seq in checkpointed.items())))
        return query.order_by(votes.created_at, votes.event_id)

    async def _load_checkpoints(self) -> dict[str, datetime]:
        """Every usable checkpoint into ``projects``; returns when each was taken. One
        that cannot be read (another format, damaged) is skipped: its project's votes
        are replayed in full."""
        taken_at: dict[str, datetime] = {}
        async with self.runtime.engine.connect() as conn:
            rows = (await conn.execute(select(
                quality_checkpoints.c.project, quality_checkpoints.c.stored_seq,
                quality_checkpoints.c.taken_at).where(
                quality_checkpoints.c.format == checkpoint.FORMAT))).all()
            for project, seq, at in rows:
                blob = (await conn.execute(select(quality_checkpoints.c.state).where(
                    quality_checkpoints.c.project == project))).scalar_one()
                try:
                    state = await asyncio.to_thread(checkpoint.load, blob)
                except Exception as exc:  # any unreadable checkpoint: replay instead
                    log.warning("quality checkpoint unreadable, replaying its votes",
                                project=project, error=repr(exc))
                    continue
                state.watch.threshold = self.config.guideline_threshold_of(
                    self.project_settings(project).quality)
                self.projects[project] = state
                self.checkpointed[project] = int(seq)
                taken_at[project] = _aware(at)
        return taken_at

    async def checkpoint_changed(self) -> None:
        """Checkpoint every project changed since its last checkpoint (one mid-settle
        waits for the next round: its state is half updated)."""
        for project in sorted(self.dirty - self.settling):
            with self.runtime.supervisor.guard("quality checkpoint", project=project):
                await self.write_checkpoint(project)

    async def write_checkpoint(self, project: str) -> None:
        """The project's state as of the last applied batch, in its row.

        Pickled here, between two mutations (the consumer and the settles run in this
        event loop), compressed and written off it. A crash before the write leaves the
        older checkpoint, and the votes after it are still in the table."""
        state = self.state(project)
        seq, taken_at, votes = self.applied_seq, utcnow(), state.table.n_rows
        raw = checkpoint.dump(state)
        self.dirty.discard(project)  # a change from now on needs another checkpoint
        try:
            blob = await asyncio.to_thread(checkpoint.pack, raw)
            del raw
            await self._store_checkpoint({
                "project": project, "stored_seq": seq, "format": checkpoint.FORMAT,
                "votes": votes, "taken_at": taken_at, "state": blob})
        except BaseException:
            self.dirty.add(project)
            raise
        self.checkpointed[project] = seq
        log.info("quality checkpoint written", project=project, votes=votes,
                 bytes=len(blob), stored_seq=seq)

    async def _store_checkpoint(self, row: dict[str, Any]) -> None:
        project = row["project"]
        async with self.runtime.engine.begin() as conn:
            await conn.execute(quality_checkpoints.delete().where(
                quality_checkpoints.c.project == project))
            await conn.execute(quality_checkpoints.insert(), [row])

    # ------------------------------------------------------------------ consumer

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        """Count each label once as a vote; a label its project's schema refuses (the
        labels service refuses it too) is dead-lettered, never counted."""
        refused = [(d, problems[0]) for d in batch if d.event.preference is None and (
            problems := label_problems(
                d.event.project, self.project_settings(d.event.project).label_options,
                [d.event.label]))]
        if refused:
            await self.runtime.bus.refuse(streams.LABELS, streams.GROUP_QUALITY, refused)
            batch = [d for d in batch if all(d is not r for r, _ in refused)]
            if not batch:
                return
        rows = [self._row(d.event) for d in batch]
        rows = list({r["event_id"]: r for r in rows}.values())
        self.stored_seq += 1
        seq = self.stored_seq
        for r in rows:
            r["stored_seq"] = seq
        async with self.runtime.engine.begin() as conn:  # a redelivered vote is not new
            stored = set(await insert_new(conn, quality_label_votes, rows))
        fresh = [r for r in rows if r["event_id"] in stored]
        flags: list[tuple[str, NewFlag]] = []
        for r in sorted(fresh, key=lambda r: r["created_at"]):
            flag = self.state(r["project"]).apply(r)
            if flag is not None:
                flags.append((r["project"], flag))
        self.applied_seq = seq  # every batch up to this one is in the state
        self.dirty.update(r["project"] for r in fresh)
        if flags:
            await self._publish_flags(flags)
        for project in {r["project"] for r in fresh}:
            biased = self.state(project).take_position_flags()
            if biased:
                await self._publish_position_flags(project, biased)
        now = time.monotonic()
        for project in {r["project"] for r in fresh}:
            self._export_metrics(project)
            if any(r["project"] == project and r["source"] != "consensus" for r in fresh):
                self._touch(project, now)
        for r in fresh:
            if r["source"] == LabelSource.adjudicated.value:
                await self._resolve(r["project"], "adjudication_request", r["item_id"])

    @staticmethod
    def _row(event: LabelEvent) -> dict[str, Any]:
        pref = event.preference
        return {
            "event_id": str(event.event_id),
            "project": event.project,
            "item_id": event.item_id,
            "labeler_id": event.labeler_id,
            "label": event.label,
            "source": event.source.value,
            "mode": event.mode.value if event.mode else None,
            "shown_prelabel": event.shown_prelabel,
            "model_label": event.model_label,
            "gold_label": event.gold_label,
            "planted_prelabel": event.planted_prelabel,
            "revised_after_reveal": event.revised_after_reveal,
            "guideline_version": event.guideline_version,
            "supersedes": event.supersedes,
            "created_at": _aware(event.created_at),
            "audit_sample": event.audit_sample,
            "duration_ms": event.duration_ms,
            "model_version": event.model_version,
            "confidence": event.confidence,
            "first_shown_chosen": pref.first_shown_chosen() if pref else None,
            "candidates_shown": len(pref.shown_order) if pref and pref.ranking else None,
        }

    # ------------------------------------------------------------------ findings

    async def _publish_flags(self, flags: list[tuple[str, NewFlag]]) -> None:
        events, records = [], []
        for project, flag in flags:
            state = self.state(project)
            monitor, who = flag.monitor, flag.labeler_id
            crossed = monitor.flagged_by or monitor.full
            since = monitor.evidence_since
            gold = state.gold[who]
            event_id = stable_id("labeler_flag", project, who, since.isoformat() if since else "")
            event = LabelerFlagEvent(
                event_id=event_id, project=project, labeler_id=who,
                pause=self.config.auto_pause_of(self.project_settings(project).quality),
                evidence_since=since,
                flagged_at=monitor.flagged_at, statistic=round(crossed.statistic, 4),
                threshold=round(crossed.threshold, 4), tasks_in_evidence=crossed.run_tasks,
                gold_catch_rate=gold.gold_catch_rate, correction_rate=gold.correction_rate,
                model_error_rate=state.cautious_error_rate(),
                re_review_items=state.items_since(who, since))
            events.append(event)
            detail = event.finding()
            records.append(self._finding(project, "labeler_flag", who, detail, event_id))
            state.flags[who] = detail
            log.warning("labeler flagged", project=project, labeler=who,
                        tasks=monitor.run_tasks)
        await self.runtime.bus.publish(streams.QUALITY, events)
        await self._replace(records)  # a labeler flagged again after a review cleared them

    async def _publish_position_flags(self, project: str, reviewers: list[str]) -> None:
        """Flag reviewers who pick the first-shown candidate more often than chance, as
        deference is flagged: a ``labeler_flag`` (the router pauses them when the
        project's quality settings say so) and a finding a review clears."""
        state = self.state(project)
        test = state.position_test
        events, records = [], []
        for who in reviewers:
            monitor = state.positions[who]
            since = monitor.evidence_since
            event = LabelerFlagEvent(
                event_id=stable_id("position_flag", project, who,
                                   since.isoformat() if since else ""),
                project=project, labeler_id=who,
                pause=self.config.auto_pause_of(self.project_settings(project).quality),
                evidence_since=since, flagged_at=monitor.flagged_at,
                statistic=round(monitor.cusum.statistic, 4),
                threshold=round(monitor.cusum.threshold, 4),
                test=(f"position bias (cusum-sprt): picks the first-shown candidate more often "
                      f"than chance; first-shown share {monitor.first_share:.3f} over "
                      f"{monitor.comparisons} comparisons; false flags <= "
                      f"{test.false_positive_rate:.0%} over {test.horizon} comparisons"),
                tasks_in_evidence=monitor.cusum.run_tasks,
                re_review_items=state.items_since(who, since))
            events.append(event)
            detail = event.finding()
            records.append(self._finding(project, "labeler_flag", who, detail, event.event_id))
            state.flags[who] = detail
            log.warning("reviewer flagged for position bias", project=project, labeler=who,
                        comparisons=monitor.comparisons)
        await self.runtime.bus.publish(streams.QUALITY, events)
        await self._replace(records)

    async def clear_flag(self, project: str, labeler_id: str, by: str,
                         note: str | None) -> dict[str, Any]:
        """A reviewer looked at the evidence and cleared the labeler: unpause them and
        start collecting evidence afresh. Raises LookupError if they are not flagged."""
        state = self.state(project)
        flag = state.flags.get(labeler_id)
        if flag is None:
            raise LookupError(f"{labeler_id!r} is not flagged in project {project!r}")
        now = utcnow()
        position = state.positions.get(labeler_id)
        comparisons_seen = position.comparisons if position else None
        tasks_seen = state.clear_flag(labeler_id)
        self.dirty.add(project)
        event_id = stable_id("labeler_flag_cleared", project, labeler_id, now.isoformat())
        event = LabelerFlagClearedEvent(
            event_id=event_id, project=project, labeler_id=labeler_id, cleared_by=by,
            note=note, cleared_at=now, tasks_seen=tasks_seen,
            flag=FlagSummary.model_validate({k: flag.get(k) for k in FlagSummary.model_fields}))
        detail = event.finding()
        if comparisons_seen is not None:  # where a replay clears the position monitor
            detail["comparisons_seen"] = comparisons_seen
        # Said before it is recorded: a crash in between leaves the flag standing (and
        # the clear to be done again), never a recorded clear the router did not hear.
        await self.runtime.bus.publish(streams.QUALITY, [event])
        async with self.runtime.engine.begin() as conn:
            await conn.execute(update(quality_findings).where(
                quality_findings.c.project == project,
                quality_findings.c.kind == "labeler_flag",
                quality_findings.c.key == labeler_id).values(resolved_at=now))
            await insert_ignoring_duplicates(conn, quality_findings, [self._finding(
                project, "labeler_flag_cleared", f"{labeler_id}\x1f{now.isoformat()}",
                detail, event_id)])
        self._export_metrics(project)
        log.info("labeler flag cleared", project=project, labeler=labeler_id, by=by)
        return detail

    @staticmethod
    def _finding(project: str, kind: str, key: str, detail: dict[str, Any],
                 event_id: Any) -> dict[str, Any]:
        return {"project": project, "kind": kind, "key": key, "detail": detail,
                "event_id": str(event_id), "created_at": utcnow(), "resolved_at": None}

    async def _record(self, records: list[dict[str, Any]]) -> None:
        async with self.runtime.engine.begin() as conn:
            await insert_ignoring_duplicates(conn, quality_findings, records)

    async def _replace(self, records: list[dict[str, Any]]) -> None:
        """Record findings that replace an earlier (resolved) row of the same kind and key."""
        async with self.runtime.engine.begin() as conn:
            for r in records:
                await conn.execute(quality_findings.delete().where(
                    quality_findings.c.project == r["project"],
                    quality_findings.c.kind == r["kind"], quality_findings.c.key == r["key"]))
            await insert_ignoring_duplicates(conn, quality_findings, records)

    async def _resolve(self, project: str, kind: str, key: str) -> None:
        async with self.runtime.engine.begin() as conn:
            await conn.execute(
                update(quality_findings)
                .where(quality_findings.c.project == project, quality_findings.c.kind == kind,
                       quality_findings.c.key == key, quality_findings.c.resolved_at.is_(None))
                .values(resolved_at=utcnow())
            )

    # ------------------------------------------------------------------ recompute

    def _touch(self, project: str, now: float, backlog: bool = False) -> None:
        self.schedule.touch(project, now, backlog)
        self.stats_schedule.touch(project, now, backlog)

    async def _settle_due(self) -> None:
        await self._run_due(self.schedule, "quality recompute", self.settle)

    async def _statistics_due(self) -> None:
        await self._run_due(self.stats_schedule, "quality statistics", self.statistics)

    async def _run_due(self, schedule: RecomputeSchedule, name: str,
                       run: Callable[[str], Awaitable[None]]) -> None:
        """Run every project that is due, then wait for the next tick."""
        while due := schedule.due(time.monotonic()):
            # One project at a time, asking again after each: a project that gets new
            # votes meanwhile goes ahead of what is left of a start-up backlog.
            project, started = due[0], time.monotonic()
            with self.runtime.supervisor.guard(name, project=project):
                await run(project)  # a failure: the next change retries
            schedule.ran(project, started)

    async def recompute(self, project: str) -> None:
        """Everything at once (tests, tools): consensus, then the statistics."""
        await self.settle(project)
        await self.statistics(project)

    async def settle(self, project: str, full: bool = False) -> None:
        """Consensus and adjudication requests: what labelling waits for.

        A large project is updated from the items its new votes touched
        (:mod:`services.quality.incremental`), at a cost set by those votes; its full
        refit runs in the background when the parameters drift or the project has grown,
        and is adopted by the next settle. A small one (``full_refit_max_votes``), a
        project never fitted, or one with a new class, is refitted in full, warm started,
        in a worker thread. ``full``: refit in full now (tools, tests).
        """
        self.settling.add(project)
        try:
            await self._settle(project, full)
        finally:
            self.settling.discard(project)
            self.dirty.add(project)

    async def _settle(self, project: str, full: bool) -> None:
        state = self.state(project)
        table, engine = state.table, state.engine
        if not len(table.classes):  # no human vote yet (auto labels only): nothing to fit
            state.consensus = _consensus_summary(Settlement(), engine.refits)
            return
        changed = [np.zeros(0, dtype=np.intp)]
        if state.pending_refit is not None:  # a background refit finished: take it
            (refit, since), state.pending_refit = state.pending_refit, None
            if refit.job.n_classes == len(table.classes):
                changed.append(self._adopt(state, refit, since))
        if full or engine.needs_full_fit(table) or \
                table.n_rows <= self.config.full_refit_max_votes:
            job = engine.refit_job(table)
            covered, state.touched = state.touched, set()  # the copy has their votes
            since = state.follow()
            try:
                refit = await asyncio.to_thread(job.run)
            except BaseException:
                state.touched |= covered
                raise
            finally:
                state.unfollow(since)
            changed.append(self._adopt(state, refit, since))
        changed.append(engine.update(table, state.take_touched()))
        if engine.refit_due() and project not in self.refits and \
                table.n_rows > self.config.full_refit_max_votes:
            self._start_refit(project, state)
        config = self.config
        state.published_code = grown(state.published_code, table.n_items, -1)
        state.requested_mask = grown(state.requested_mask, table.n_items, False)
        settlement = settle_changes(
            table, engine, np.concatenate(changed), published=state.published,
            published_code=state.published_code, requested_mask=state.requested_mask,
            min_votes=config.min_votes, min_confidence=config.min_confidence)
        await self._publish_consensus(project, settlement)
        await self._publish_adjudication(project, settlement)
        state.consensus = _consensus_summary(settlement, engine.refits)

    @staticmethod
    def _adopt(state: ProjectState, refit: Refit, since: set[int]) -> npt.NDArray[np.intp]:
        """Take a full refit; ``since``: the items touched after it copied the votes, which
        the settle that adopts it updates again."""
        state.refresh_adjudicated()
        changed = state.engine.adopt(refit, state.table)
        state.touched |= since
        return changed

    def _start_refit(self, project: str, state: ProjectState) -> None:
        """A full refit of a large project in a worker thread, off the consensus path."""
        job = state.engine.refit_job(state.table)
        since = state.follow()

        async def run() -> None:
            try:
                refit = await asyncio.to_thread(job.run)
            finally:
                state.unfollow(since)
            state.pending_refit = (refit, since)
            self.schedule.touch(project, time.monotonic())

        task = asyncio.get_running_loop().create_task(run())
        self.refits[project] = task

        def done(finished: asyncio.Task[None]) -> None:
            self.refits.pop(project, None)
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("quality refit failed", project=project,
                            error=repr(finished.exception()))

        task.add_done_callback(done)

    async def statistics(self, project: str) -> None:
        """Agreement with bootstrap intervals, and guideline alerts: off the critical path,
        from bounded state. The bootstrap reads each window's votes on at most
        ``stats_max_items`` items drawn at random (:meth:`VoteTable.sample`, the effect on
        the interval in :class:`~services.quality.windows.WindowSample`); the guideline
        alerts, per (item, version) class counts of the whole project (exact)."""
        state = self.state(project)
        table, config = state.table, self.config
        now = time.time()
        samples = {name: table.sample(config.stats_max_items,
                                      None if span is None else now - span)
                   for name, span in DEFAULT_WINDOWS.items()}
        version_of_key, counts = table.counts_by_item_version()
        versions, classes = list(table.guidelines.names), list(table.classes.names)
        schema = self.project_settings(project).quality

        def compute() -> tuple[dict[str, Any], list[Any]]:
            report = sampled_report(samples, level=schema.level,
                                    categories=schema.categories, n_boot=config.n_boot)
            return report, class_agreement_of_counts(version_of_key, counts, versions,
                                                     classes)

        report, per_class = await asyncio.to_thread(compute)
        await self._publish_alerts(project, per_class)
        state.report = {"computed_at": utcnow().isoformat(), "windows": report}

    async def _publish_consensus(self, project: str, settlement: Settlement) -> None:
        if not settlement.publish:
            return
        now = utcnow()
        batch_id = f"consensus:{now:%Y-%m-%dT%H:%M:%S.%fZ}"  # this recompute's labels
        events, rows = [], []
        for c in settlement.publish:
            event_id = stable_id("consensus", project, c.item_id, str(c.revision), c.label)
            events.append(LabelEvent(
                event_id=event_id, project=project, item_id=c.item_id, label=c.label,
                labeler_id=CONSENSUS_LABELER, source=LabelSource.consensus,
                confidence=c.confidence, model_version=CONSENSUS_VERSION, created_at=now,
                batch_id=batch_id))
            rows.append({"project": project, "item_id": c.item_id, "label": c.label,
                         "confidence": c.confidence, "revision": c.revision,
                         "event_id": str(event_id), "updated_at": now})
        await self.runtime.bus.publish(streams.LABELS, events)
        async with self.runtime.engine.begin() as conn:
            await upsert(conn, quality_consensus, rows)
        state = self.state(project)
        for c in settlement.publish:
            state.mark_published(c.item_id, c.label, c.revision)

    async def _publish_adjudication(self, project: str, settlement: Settlement) -> None:
        if not settlement.adjudicate:
            return
        events, records = [], []
        for request in settlement.adjudicate:
            event_id = stable_id("adjudication_request", project, request.item_id)
            event = AdjudicationRequestEvent(
                event_id=event_id, project=project, item_id=request.item_id,
                labels=request.labels, consensus=request.consensus,
                confidence=request.confidence, reason=request.reason)
            events.append(event)
            records.append(self._finding(project, "adjudication_request", request.item_id,
                                         event.finding(), event_id))
        await self.runtime.bus.publish(streams.QUALITY, events)
        await self._record(records)
        state = self.state(project)
        for r in settlement.adjudicate:
            state.mark_requested(r.item_id)

    async def _publish_alerts(self, project: str, per_class: list[Any]) -> None:
        state = self.state(project)
        before = set(state.watch.active)
        raised = state.watch.update(per_class)
        for key in before - state.watch.active:
            state.alerts.pop(key, None)
            await self._resolve(project, "guideline_alert", "\x1f".join(key))
        if not raised:
            return
        events, records = [], []
        for alert in raised:
            alert_key = "\x1f".join((alert.label_class, alert.guideline_version))
            event_id = stable_id("guideline_alert", project, alert_key, utcnow().isoformat())
            event = GuidelineAlertEvent(
                event_id=event_id, project=project, label_class=alert.label_class,
                guideline_version=alert.guideline_version, agreement=alert.agreement,
                threshold=alert.threshold, items=alert.items)
            events.append(event)
            detail = event.finding()
            records.append(self._finding(project, "guideline_alert", alert_key, detail, event_id))
            state.alerts[(alert.label_class, alert.guideline_version)] = detail
        await self.runtime.bus.publish(streams.QUALITY, events)
        await self._replace(records)  # a re-raised alert replaces the resolved row

    # ------------------------------------------------------------------ read side

    def _export_metrics(self, project: str) -> None:
        state = self.state(project)
        if state.running.agreement is not None:
            metrics.AGREEMENT.labels(project).set(state.running.agreement)
        for who, gold in state.gold.items():
            if gold.gold_catch_rate is not None:
                metrics.GOLD_CATCH_RATE.labels(project, who).set(gold.gold_catch_rate)
            if gold.correction_rate is not None:
                metrics.CORRECTION_RATE.labels(project, who).set(gold.correction_rate)
        metrics.FLAGGED_LABELERS.labels(project).set(len(state.flags))

    def summary(self, project: str) -> dict[str, Any]:
        state = self.projects.get(project)
        if state is None:
            state = ProjectState(test=DeferenceTest(), watch=GuidelineWatch())
        running = state.running
        error_rate = state.cautious_error_rate()
        labelers: dict[str, Any] = {}
        consensus_by_labeler = state.consensus.get("labelers", {})
        for who in sorted(set(state.gold) | set(consensus_by_labeler)):
            gold = state.gold.get(who)
            entry = gold.summary(error_rate) if gold else {}
            monitor = state.monitors.get(who)
            entry["deference_statistic"] = round(monitor.statistic, 4) if monitor else 0.0
            position = state.positions.get(who)
            if position is not None:
                entry["position_bias"] = {
                    "comparisons": position.comparisons,
                    "first_shown_share": position.first_share,
                    "statistic": round(position.cusum.statistic / position.cusum.threshold, 4),
                    "flagged": position.flagged}
            entry["flagged"] = who in state.flags
            entry["paused"] = bool(state.flags.get(who, {}).get("pause"))
            entry.update(consensus_by_labeler.get(who, {}))
            entry["confusion"] = confusion_of(state.table, state.engine, who) \
                if state.consensus else None
            labelers[who] = entry
        return {
            "project": project,
            "label_events": dict(state.counts),
            "items_with_human_labels": state.items_with_votes,
            "items_with_overlap": state.items_with_overlap,
            "human_labels_by_labeler": state.votes_by_labeler(),
            "pairwise_agreement": running.agreement,
            "agreeing_pairs": running.agreeing_pairs,
            "total_pairs": running.total_pairs,
            "agreement": state.report,
            "consensus": {k: v for k, v in state.consensus.items() if k != "labelers"}
            | {"published": len(state.published)},
            "model_error_rate": {"mean": state.model_errors.mean, "cautious": error_rate,
                                 "gold_checked": state.model_errors.checked},
            "labelers": labelers,
            "flags": [{"labeler_id": who, **detail} for who, detail in state.flags.items()],
            "adjudication": {
                "requested": len(state.requested),
                "adjudicated": len(state.adjudicated),
                "open": list(state.open_requests),
                "labels": dict(state.adjudicated),
            },
            "guideline_alerts": list(state.alerts.values()),
            "settings": self.project_settings(project).quality.model_dump(),
            "thresholds": {
                "guideline_agreement": self.config.guideline_threshold_of(
                    self.project_settings(project).quality),
                "adjudication_min_confidence": self.config.min_confidence,
                "cusum": self.config.cusum_threshold,
                "cusum_partial": self.config.partial_cusum_threshold,
            },
        }


def _consensus_summary(settlement: Settlement, refits: int) -> dict[str, Any]:
    """The summary's consensus section (an empty settlement: nothing fitted yet)."""
    return {
        "method": CONSENSUS_VERSION,
        "computed_at": utcnow().isoformat(),
        "items_with_consensus": settlement.items_with_consensus,
        "mean_confidence": settlement.mean_confidence,
        "classes": settlement.classes,
        "labelers": settlement.labeler_agreement,
        "refits": refits,
    }

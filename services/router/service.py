"""Router service: routes predictions, hands out review, gold and adjudication tasks,
records submitted labels with provenance, and calibrates the auto-accept threshold."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from redis.exceptions import RedisError

from shared import metrics, streams
from shared.auth import Principal
from shared.bus import Delivery, validation_reason
from shared.cache import RefreshingCache
from shared.events import (
    NONE_OF_THESE,
    AdjudicationRequestEvent,
    ComparisonEvent,
    LabelerFlagClearedEvent,
    LabelerFlagEvent,
    LabelEvent,
    LabelSource,
    PredictionEvent,
    QualityEvent,
    ReviewMode,
    session_batch_id,
    stable_id,
    stable_key,
)
from shared.logs import get_logger
from shared.projects import (
    KEEP_NEWEST,
    ProjectSettings,
    ProjectSettingsChanged,
    RoutingPolicy,
    image_shape,
    label_problems,
)
from shared.service import Runtime
from shared.wire import text

from . import comparisons
from .comparisons import Answer, AnswerError, preference_of, presentation_order
from .gold import GoldItem, GoldPrediction, gold_showing, pick_gold, should_salt
from .progress import (
    Display,
    Progress,
    ReviewContext,
    day_start,
    days_between,
    labeled_since,
    waiting,
)
from .queue import NewTask, Paused, ProjectEvent, QueuedTask, ReviewQueue, routed_task_id
from .recalibration import (
    BLIND,
    CONFIDENCE,
    CORRECT,
    WEIGHT,
    decision_due,
    monitored_precision,
)
from .routing import label_order, present, route
from .tasks import ReviewTask
from .thresholds import (
    LEVEL,
    PROCEDURE,
    Observations,
    ThresholdEstimate,
    estimate_threshold,
)

log = get_logger(__name__)
SETTINGS_CACHE_SECONDS = 2.0
GOLD_CACHE_SECONDS = 5.0
DEPTH_REFRESH_SECONDS = 5.0
RECALIBRATE_SECONDS = 1.0
# How often the item index drops entries of expired tasks (task_retention_seconds).
ITEM_INDEX_SWEEP_SECONDS = 600.0
MAX_OBSERVATIONS = 50_000
OPTIONS_CACHE_SECONDS = 2.0
HANDED_CACHE = 20_000  # fields of the tasks this process handed out most recently
NOT_HANDED = "this task was not handed to you; take one with tasks/next"
SKIPPED = "you skipped this task: it is no longer yours to label; take one with tasks/next"
COMPARISON_ELSEWHERE = "this task is a comparison: submit it at /v1/comparisons/{task_id}/submit"
WRITE_CHUNK = 125  # predictions routed per script call; chunks overlap with routing

# Adopts a calibration decision if no other decision was adopted since the one its window
# started from. KEYS: calibration hash. ARGV: the window's start ("since", JSON), then
# field/value pairs. Returns 1 if adopted, 0 if another process decided first.
_ADOPT = """
local since = redis.call('HGET', KEYS[1], 'since') or '0'
if since ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


def _observation(task: ReviewTask, label: str) -> str:
    """A calibration observation: confidence|correct|weight|blind|audit. Weight is the
    inverse of the chance the prediction was reviewed, fixed when it was routed (audits
    1/audit_rate, the rest 1). Blind: the model's label was not shown (blind and choice
    tasks, and every audit); a shown label makes the verdict no evidence (automation
    bias), and the row only marks where evidence is missing."""
    weight = 1.0 / task.audit_rate if task.audit else 1.0
    correct = label == task.model_label and label != NONE_OF_THESE
    blind = task.prelabel is None and task.mode is not ReviewMode.prelabel
    return f"{task.confidence:.6f}|{int(correct)}|{weight:.6f}|{int(blind)}|{int(task.audit)}"


class ReviewError(Exception):
    """A request the router refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class LabelOptions:
    """A project's label options as routing uses them: the set, in order, as JSON."""

    names: frozenset[str]
    ordered: list[str]
    json: str

    @classmethod
    def of(cls, members: Iterable[bytes]) -> LabelOptions:
        names = frozenset(x.decode() for x in members)
        ordered = sorted(names, key=label_order)
        return cls(names, ordered, json.dumps(ordered))


@dataclass
class _ProjectBatch:
    """What routing one batch needs to know about a project, looked up once."""

    policy: RoutingPolicy
    threshold: float
    audit_rate: float
    audit_rate_text: str
    options: list[str]
    options_json: str
    now: datetime
    created_at: str
    batch_id: str
    gold: dict[str, GoldItem] = field(default_factory=dict)
    _templates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def auto_label(self, pred: PredictionEvent, event_id: str, label: str,
                   confidence: float) -> bytes:
        """The auto label's JSON. The fields a batch shares are validated once, as a
        LabelEvent template per model version; the per-item ones (id, item, label,
        confidence) come from a prediction that was validated on arrival."""
        template = self._templates.get(pred.model_version)
        if template is None:
            template = self._templates[pred.model_version] = LabelEvent(
                project=pred.project, item_id="-", label="-",
                labeler_id=f"model:{pred.model_version}", source=LabelSource.auto,
                model_version=pred.model_version, created_at=self.now,
                batch_id=self.batch_id,
                guideline_version=self.policy.guideline_version).model_dump(mode="json")
        return orjson.dumps({**template, "event_id": stable_key("auto", event_id),
                             "item_id": pred.item_id, "label": label, "model_label": label,
                             "confidence": confidence})


@dataclass
class SubmitResult:
    event_id: str
    status: str
    late: bool
    reveal: dict[str, Any]


class RouterService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.redis = runtime.bus.redis
        self.queue = ReviewQueue(
            self.redis, finished_ttl_ms=self.settings.task_retention_seconds * 1000,
            dropped_ttl_ms=self.settings.dropped_task_retention_seconds * 1000,
            shards=self.settings.shards)
        self.rng = random.Random()
        self._settings = RefreshingCache(self._load_settings, SETTINGS_CACHE_SECONDS)
        self._gold = RefreshingCache(self._load_gold, GOLD_CACHE_SECONDS)
        self._gold_pairs = RefreshingCache(self._load_gold_pairs, GOLD_CACHE_SECONDS)
        self._keep_newest = self.redis.register_script(KEEP_NEWEST)
        self._projects: set[str] = set()
        self._uncalibrated: set[str] = set()
        self._observations: dict[str, Observations] = {}
        self._calibrating: dict[str, asyncio.Lock] = {}  # one recalibration at a time
        self._pending: set[str] = set()  # projects whose open window is not yet decided
        self._adopt = self.redis.register_script(_ADOPT)
        self._handed: dict[str, dict[str, str]] = {}  # task id -> fields, of tasks handed out
        self._options = RefreshingCache.batched(self._load_options, OPTIONS_CACHE_SECONDS)
        self._model_written: dict[str, str] = {}  # project -> model version written

    async def start(self) -> None:
        bus = self.runtime.bus
        bus.consume(streams.PREDICTIONS, streams.GROUP_ROUTER, PredictionEvent, self.on_predictions)
        bus.consume(streams.QUALITY, streams.GROUP_ROUTER, QualityEvent, self.on_quality)
        bus.consume(streams.COMPARISONS, streams.GROUP_ROUTER, ComparisonEvent,
                    self.on_comparisons)
        bus.consume(streams.PROJECTS, streams.GROUP_ROUTER, ProjectSettingsChanged,
                    self.on_settings)

        supervisor = self.runtime.supervisor
        supervisor.every("queue depths", DEPTH_REFRESH_SECONDS, self._refresh_depths)
        supervisor.every("recalibration", RECALIBRATE_SECONDS, self._recalibrate)
        supervisor.every("item index sweep", ITEM_INDEX_SWEEP_SECONDS,
                         self._forget_expired_items)

    async def knows_project(self, project: str) -> bool:
        """Declared (settings kept from ``loopwise:projects``) or with data here: a label
        seen in its predictions, a task, gold items (shared.auth.require_known)."""
        names = ("settings", "options", "model", "gold", "gold-comparisons")
        keys = [self._key(name, project) for name in names] + [self.queue.items_key(project)]
        return bool(await self.redis.exists(*keys))

    async def stop(self) -> None:
        for cache in (self._settings, self._gold, self._gold_pairs, self._options):
            await cache.aclose()
        await self.queue.aclose()

    async def _refresh_depths(self) -> None:
        """Queue depth gauges, refreshed off the request path (in the process serving
        /metrics)."""
        for project in list(self._projects):
            with self.runtime.supervisor.guard("queue depths", project=project):
                metrics.QUEUE_DEPTH.labels(project).set(await self.queue.depth(project))

    async def _forget_expired_items(self) -> None:
        removed = await self.queue.forget_expired_items()
        if removed:
            log.info("item index: entries of expired tasks removed", removed=removed)

    async def _recalibrate(self) -> None:
        """Once a second, for projects with new reviews or a window awaiting its decision:
        take in observations, update the gauges, decide when due. Reviews are submitted
        over HTTP, so the process serving it is the one that knows."""
        projects, self._uncalibrated = self._uncalibrated | self._pending, set()
        for project in projects:
            with self.runtime.supervisor.guard("recalibration", project=project):
                await self.recalibrate(project)

    # --- keys -------------------------------------------------------------------
    def _key(self, name: str, project: str) -> str:
        """A router key of the project, in its shard's slot (``ReviewQueue.key``)."""
        return self.queue.key(name, project)

    # --- settings (owned by the labels service), policy and calibration -------------
    async def on_settings(self, batch: list[Delivery[ProjectSettingsChanged]]) -> None:
        """Keep the newest settings of each project (its revision decides, so an old event
        delivered late changes nothing); they take effect here at once, elsewhere in 2 s."""
        for d in batch:
            event = d.event
            await self._keep_newest(keys=[self._key("settings", event.project)],
                                    args=[event.revision, event.settings.model_dump_json()])
            if event.settings.label_options:
                # Declared labels are offered even before any model has predicted them
                # (items sent before the first training come with no probabilities).
                await self.redis.sadd(self._key("options", event.project),
                                      *event.settings.label_options)
            self._settings.drop(event.project)
            policy = await self.policy(event.project)
            metrics.AUTO_ACCEPT_THRESHOLD.labels(event.project).set(
                await self.threshold(event.project, policy))

    async def project_settings(self, project: str) -> ProjectSettings:
        """The project's settings as the labels service last published them (defaults, with
        the environment's threshold and overlap, before it has any)."""
        return await self._settings.get(project)

    async def _load_settings(self, project: str) -> ProjectSettings:
        raw = await self.redis.hget(self._key("settings", project), "settings")
        return ProjectSettings.model_validate_json(raw) if raw else ProjectSettings()

    async def policy(self, project: str) -> RoutingPolicy:
        return (await self._settings.get(project)).routing

    async def calibration(self, project: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(self._key("calibration", project))
        return {text(k): json.loads(v) for k, v in raw.items()}

    async def threshold(self, project: str, policy: RoutingPolicy | None = None) -> float:
        """The threshold in force: fixed, or calibrated (the conservative default until then)."""
        policy = policy or await self.policy(project)
        if policy.kind == "fixed":
            return policy.auto_accept_threshold
        return self._in_force(await self.calibration(project), policy)

    @staticmethod
    def _in_force(calibration: dict[str, Any], policy: RoutingPolicy) -> float:
        """The calibrated threshold if one was certified for the policy's target, else the
        conservative default (fixed policies never get here)."""
        if calibration.get("calibrated") and calibration.get("target") == policy.target_precision:
            return float(calibration["threshold"])
        return policy.default_threshold

    async def recalibrate(self, project: str, force: bool = False) -> ThresholdEstimate | None:
        """Take in new observations, update the precision gauges and, when a decision is
        due (or ``force``), decide the threshold from the window (see ``recalibration``).
        Returns the decision's estimate, None when none was due.

        One at a time per project: two overlapping calls would both fetch the rows after
        the same ``seen`` count and add them twice. Other processes keep their own copy;
        their decisions are adopted only if none was adopted since their window began.
        """
        lock = self._calibrating.setdefault(project, asyncio.Lock())
        async with lock:
            return await self._recalibrate_project(project, force)

    async def _recalibrate_project(self, project: str, force: bool) -> ThresholdEstimate | None:
        policy = await self.policy(project)
        if policy.kind == "fixed":  # nothing audited, nothing to estimate or to export
            for gauge in (metrics.AUTO_ACCEPT_PRECISION, metrics.AUTO_ACCEPT_PRECISION_LOWER):
                metrics.forget(gauge, project)
            metrics.AUTO_ACCEPT_THRESHOLD.labels(project).set(policy.auto_accept_threshold)
            return None
        key = self._key("observations", project)
        obs = self._observations.setdefault(project, Observations(MAX_OBSERVATIONS))
        total, fresh = await self.queue.observations_since(key, obs.seen, MAX_OBSERVATIONS)
        if total < obs.seen:  # the count went back (the data were reset): start over
            obs = self._observations[project] = Observations(MAX_OBSERVATIONS)
        obs.take(total, fresh)
        calibration_key = self._key("calibration", project)
        record = await self.calibration(project)
        since = int(record.get("since", 0))
        if since > obs.seen:  # decided on data since reset
            since = 0
        window = obs.since(since)
        now = time.time()
        opened_at = record.get("opened_at")
        if opened_at is None and len(window):  # the first window opens with its first row
            await self.redis.hsetnx(calibration_key, "opened_at", json.dumps(now))
            opened_at = json.loads(await self.redis.hget(calibration_key, "opened_at") or "null")
        in_force = self._in_force(record, policy)
        self._export_precision(project, obs.rows, in_force, policy)
        metrics.AUTO_ACCEPT_THRESHOLD.labels(project).set(in_force)
        due = decision_due(opened_at, now, policy.recalibration_seconds, force)
        (self._pending.add if len(window) and not due else self._pending.discard)(project)
        if not due:
            return None
        assert policy.target_precision is not None  # checked by the policy's validator
        # In a worker thread: with tens of thousands of observations it takes milliseconds
        # (and its first call imports scipy.special) that reviewers' requests would wait on.
        estimate = await asyncio.to_thread(
            estimate_threshold, window[:, CONFIDENCE], window[:, CORRECT], window[:, WEIGHT],
            target=policy.target_precision, default_threshold=policy.default_threshold,
            min_effective_n=policy.min_audits, blind=window[:, BLIND] > 0)
        if not estimate.tested:  # too little evidence to test: the window stays open
            self._pending.add(project)
            return estimate
        decided = {"threshold": estimate.threshold, "precision": estimate.precision,
                   "lower_bound": estimate.lower_bound, "effective_n": estimate.effective_n,
                   "calibrated": estimate.calibrated, "target": policy.target_precision,
                   "observations": len(window), "tested": estimate.tested,
                   "procedure": PROCEDURE, "level": LEVEL, "since": obs.seen,
                   "opened_at": now, "updated_at": datetime.now(UTC).isoformat()}
        flat = [x for k, v in decided.items() for x in (k, json.dumps(v))]
        if await self._adopt(keys=[calibration_key], args=[json.dumps(since), *flat]):
            in_force = self._in_force(decided, policy)
            self._export_precision(project, obs.rows, in_force, policy)
            metrics.AUTO_ACCEPT_THRESHOLD.labels(project).set(in_force)
        return estimate

    @staticmethod
    def _export_precision(project: str, rows: Any, threshold: float,
                          policy: RoutingPolicy) -> None:
        """Precision gauges of what is auto-accepted now, from blind reviews and audits at
        or above the threshold; none for a policy that audits nothing."""
        monitored = monitored_precision(rows, threshold) if policy.audit_rate > 0 else None
        if monitored is None:
            for gauge in (metrics.AUTO_ACCEPT_PRECISION, metrics.AUTO_ACCEPT_PRECISION_LOWER):
                metrics.forget(gauge, project)
            return
        metrics.AUTO_ACCEPT_PRECISION.labels(project).set(monitored.precision)
        metrics.AUTO_ACCEPT_PRECISION_LOWER.labels(project).set(monitored.lower_bound)

    async def _load_options(self, projects: set[str]) -> dict[str, LabelOptions]:
        pipe = self.redis.pipeline(transaction=False)
        for project in projects:
            pipe.smembers(self._key("options", project))
        return {project: LabelOptions.of(members)
                for project, members in zip(projects, await pipe.execute(), strict=True)}

    async def options(self, project: str) -> list[str]:
        labels = await self.redis.smembers(self._key("options", project))
        return sorted((text(x) for x in labels), key=label_order)

    # --- stream: predictions --------------------------------------------------------
    async def _batch_context(self, batch: list[Delivery[PredictionEvent]]
                             ) -> dict[str, _ProjectBatch]:
        """Per project in the batch: policy, threshold, label options (new ones recorded),
        and the auto-label template; one Redis round trip for all projects."""
        seen: dict[str, set[str]] = {}
        versions: dict[str, str] = {}
        for d in batch:
            seen.setdefault(d.event.project, set()).update(d.event.probs)
            versions[d.event.project] = d.event.model_version
        # Options and the serving model are written when they change, and options re-read
        # every few seconds (another worker may have added one), in the background: no
        # round trip otherwise. New options are written and the set re-read in one trip.
        pipe = self.redis.pipeline(transaction=False)
        asked: list[tuple[str, int]] = []
        for project, labels in seen.items():
            known = self._options.peek(project)
            fresh_labels = labels - known.names if known else labels
            if fresh_labels:
                pipe.sadd(self._key("options", project), *fresh_labels)
            if (not self._options.is_fresh(project)
                    or self._model_written.get(project) != versions[project]):
                pipe.set(self._key("model", project), versions[project])
                self._model_written[project] = versions[project]
            if fresh_labels:
                asked.append((project, len(pipe)))  # where its reply will be
                pipe.smembers(self._key("options", project))
        if len(pipe):
            replies = await pipe.execute()
            for project, at in asked:
                self._options.put(project, LabelOptions.of(replies[at]))
        known_options = await self._options.get_many(seen)
        now = datetime.now(UTC)
        batch_id = f"route:{batch[0].entry_id}"  # a routed batch: revertible as one
        out: dict[str, _ProjectBatch] = {}
        for project in seen:
            options, options_json = known_options[project].ordered, known_options[project].json
            policy = await self.policy(project)
            threshold = await self.threshold(project, policy)
            audit_rate = policy.audit_rate if policy.kind == "target_precision" else 0.0
            out[project] = _ProjectBatch(
                policy=policy, threshold=threshold,
                audit_rate=audit_rate, audit_rate_text=repr(audit_rate),
                options=options, options_json=options_json, now=now,
                created_at=now.isoformat(), batch_id=batch_id,
                gold=await self._gold_cache(project) if policy.gold_rate else {})
        return out

    async def on_predictions(self, batch: list[Delivery[PredictionEvent]]) -> None:
        """Auto labels are published and tasks enqueued (one script call, so both or
        neither) before the batch is acknowledged."""
        contexts = await self._batch_context(batch)
        caps = {p: c.policy.queue_cap for p, c in contexts.items()}
        auto_labels: list[ProjectEvent] = []
        tasks: list[QueuedTask] = []
        writes: list[asyncio.Future] = []
        decisions: Counter[tuple[str, str]] = Counter()
        gold_predictions: dict[str, dict[Any, bytes]] = {}
        for i, delivery in enumerate(batch, 1):
            pred = delivery.event
            ctx = contexts[pred.project]
            event_id = str(pred.event_id)
            if ctx.gold and pred.item_id in ctx.gold and pred.probs:
                gold_predictions.setdefault(pred.project, {})[pred.item_id] = orjson.dumps(
                    {"model_version": pred.model_version, "probs": pred.probs,
                     "payload": pred.payload})
            decision = route(pred, ctx.threshold, ctx.audit_rate)
            if decision.auto_accept and decision.label is not None:
                auto_labels.append((pred.project, ctx.auto_label(
                    pred, event_id, decision.label, decision.confidence)))
                decisions[(pred.project, "auto")] += 1
            else:
                shown = present(ctx.policy, pred.probs, ctx.options, decision.audit)
                body = orjson.dumps({
                    "payload": orjson.dumps(pred.payload).decode(),
                    "probs": orjson.dumps(pred.probs).decode(),
                    "model_version": pred.model_version,
                    "model_label": decision.label or "",
                    "confidence": repr(decision.confidence),
                    "prediction_event_id": event_id, "created_at": ctx.created_at,
                    "mode": shown.mode,
                    "options": ctx.options_json if shown.options is ctx.options
                    else json.dumps(shown.options),
                    "prelabel": shown.prelabel or "", "audit": "1" if decision.audit else "0",
                    "audit_rate": ctx.audit_rate_text,
                })
                tasks.append((routed_task_id(event_id, pred.project, self.queue.shards),
                              pred.project, pred.item_id,
                              decision.priority, ctx.policy.overlap, "review", body))
                decisions[(pred.project, "audit" if decision.audit else "review")] += 1
            if i % WRITE_CHUNK == 0 or i == len(batch):
                # Send this chunk's writes and go on routing while Redis runs them: the
                # two overlap on two cores. The batch is acknowledged after all of them.
                writes.append(asyncio.ensure_future(self.queue.enqueue_rows(
                    tasks, cap=caps, labels=(streams.LABELS, auto_labels))))
                auto_labels, tasks = [], []
                await asyncio.sleep(0)
        if gold_predictions:
            await self._keep_gold_predictions(gold_predictions)
        dropped: Counter[str] = Counter()
        for _, chunk_dropped in await asyncio.gather(*writes):
            dropped.update(chunk_dropped)
        for project, n in dropped.items():
            log.warning("review queue full; dropped the least uncertain tasks",
                        project=project, dropped=n)
            metrics.QUEUE_DROPPED.labels(project).inc(n)
        for (project, kind), n in decisions.items():
            metrics.ROUTED.labels(project, kind).inc(n)
        self._projects.update(contexts)

    # --- stream: quality findings ----------------------------------------------------
    async def on_quality(self, batch: list[Delivery[QualityEvent]]) -> None:
        """Adjudication requests become reviewer tasks; a pausing flag stops a labeler's tasks
        until a review clears it. Guideline alerts are for people, not for routing."""
        tasks: list[NewTask] = []
        now = datetime.now(UTC).isoformat()
        for d in batch:
            event = d.event.root
            if isinstance(event, LabelerFlagEvent | LabelerFlagClearedEvent):
                # A flag may pause the labeler; a review that clears it (pause is always
                # False there) unpauses, and so does a flag that does not pause.
                key = self._key("paused", event.project)
                if event.pause:
                    await self.redis.sadd(key, event.labeler_id)
                else:
                    await self.redis.srem(key, event.labeler_id)
            elif isinstance(event, AdjudicationRequestEvent):
                payload = await self._payload_of(event.project, event.item_id)
                task_id = self.queue.new_task_id(
                    event.project, str(stable_id("adjudication", str(event.event_id))))
                task = ReviewTask(
                    task_id=task_id, project=event.project, item_id=event.item_id,
                    kind="adjudication", mode=ReviewMode.adjudication,
                    options=await self.options(event.project),
                    payload_json=json.dumps(payload), created_at=now,
                    labels_given=event.labels, consensus=event.consensus, reason=event.reason)
                tasks.append(NewTask(task_id=task_id, project=event.project,
                                     item_id=event.item_id, priority=1.0 - event.confidence,
                                     needed=1, fields=task.fields()))
        await self.queue.enqueue_many(tasks, kind="adjudication")

    async def _payload_of(self, project: str, item_id: str) -> Any:
        task = await self.queue.task_of_item(project, item_id)
        return json.loads(task["payload"]) if task and task.get("payload") else None

    # --- gold ---------------------------------------------------------------------
    async def add_gold(self, project: str, items: list[GoldItem]) -> int:
        if not items:
            return 0
        await self.redis.hset(self._key("gold", project),
                              mapping={g.item_id: g.model_dump_json() for g in items})
        self._gold.drop(project)
        return len(items)

    async def gold_items(self, project: str) -> list[GoldItem]:
        """The gold set as salting sees it (with the model's prediction where one came)."""
        return sorted((await self._load_gold(project)).values(), key=lambda g: g.item_id)

    async def _sensitive(self, project: str) -> bool:
        """Whether the project's settings mark it sensitive (only members see payloads)."""
        return (await self._settings.get(project)).sensitive

    async def _gold_cache(self, project: str) -> dict[str, GoldItem]:
        """The project's gold set, read at most every few seconds (it changes rarely)."""
        return await self._gold.get(project)

    async def _load_gold(self, project: str) -> dict[str, GoldItem]:
        """The gold set with the model's newest prediction for each item, where one came."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self._key("gold", project))
        pipe.hgetall(self._key("gold-predictions", project))
        raw, predicted = await pipe.execute()
        items = {text(k): GoldItem.model_validate_json(v) for k, v in raw.items()}
        for k, v in predicted.items():
            item = items.get(text(k))
            if item is not None:
                seen = orjson.loads(v)
                items[item.item_id] = item.model_copy(update={
                    "prediction": GoldPrediction(model_version=seen["model_version"],
                                                 probs=seen["probs"]),
                    "payload": item.payload if seen["payload"] is None else seen["payload"]})
        return items

    async def _keep_gold_predictions(self, found: dict[str, dict[Any, bytes]]) -> None:
        """Keep the model's prediction for gold items, so a gold task shows and records
        the model's real guess, exactly like a task routed from that prediction."""
        pipe = self.redis.pipeline(transaction=False)
        for project, rows in found.items():
            pipe.hset(self._key("gold-predictions", project), mapping=rows)
        await pipe.execute()
        for project in found:
            self._gold.drop(project)

    def _gold_task(self, project: str, labeler: str, policy: RoutingPolicy,
                   fresh: list[GoldItem], options: list[str]) -> NewTask | None:
        """Maybe salt a gold task into this labeler's stream (at the policy's gold rate)."""
        if not should_salt(self.rng, policy.gold_rate, len(fresh)):
            return None
        item = pick_gold(self.rng, fresh)
        shown = gold_showing(item, policy, options, self.rng)
        nonce = f"{time.time_ns()}"
        task_id = self.queue.new_task_id(
            project, str(stable_id("task", "gold", project, item.item_id, labeler, nonce)))
        task = ReviewTask(
            task_id=task_id, project=project, item_id=item.item_id, kind="gold",
            mode=ReviewMode(shown.mode), options=shown.options,
            payload_json=orjson.dumps(item.payload).decode(), prelabel=shown.prelabel,
            model_version=shown.model_version, model_label=shown.model_label,
            confidence=shown.confidence, gold_label=item.label, planted=shown.planted,
            created_at=datetime.now(UTC).isoformat())
        return NewTask(task_id=task_id, project=project, item_id=item.item_id, priority=0.0,
                       needed=1, fields=task.fields())

    # --- review -------------------------------------------------------------------
    async def next_task(self, project: str, principal: Principal, kind: str = "review",
                        raw: bool = False) -> dict[str, Any] | None:
        """Lease the next task; blind tasks carry no model guess.

        A gold task takes the same path as any other: the same look-ups happen
        for every request, and one script either leases a queued task or creates
        and leases the gold one.
        """
        labeler = principal.user_id
        if not principal.sees_payloads(project, await self._sensitive(project)):
            raise ReviewError(403, "this project is sensitive: only its members take its tasks")
        policy = await self.policy(project)
        gold = await self._gold_cache(project) if kind == "review" and policy.gold_rate else {}
        seen_key = self._key(f"gold-seen:{labeler}", project)
        direct = None
        if gold:
            pipe = self.redis.pipeline(transaction=False)
            pipe.smembers(seen_key)
            pipe.smembers(self._key("options", project))
            seen, options = await pipe.execute()
            fresh = [g for item_id, g in gold.items() if item_id.encode() not in seen]
            direct = self._gold_task(project, labeler, policy, fresh,
                                     LabelOptions.of(options).ordered)
        try:
            leased = await self.queue.next(
                project, labeler, self.settings.lease_seconds, kind=kind, direct=direct,
                remember=(seen_key, direct.item_id) if direct else None,
                paused_key=self._key("paused", project))
        except Paused as exc:
            raise ReviewError(423, "you are paused pending a quality review of your recent "
                                   "labels; ask a project admin") from exc
        if leased is None:
            return None
        task_id, expires_ms, task = leased
        self._projects.add(project)
        self._remember_handed(task_id, task)
        # raw: payload and options stay the JSON they are stored as, for orjson to embed
        # (the hottest route; no decode and re-encode of the example a request).
        load = orjson.Fragment if raw else json.loads
        out = {
            "task_id": task_id, "project": project, "item_id": task["item_id"],
            "mode": task["mode"], "payload": load(task["payload"]),
            "options": load(task["options"]), "prelabel": task["prelabel"] or None,
            "lease_expires_at": datetime.fromtimestamp(expires_ms / 1000, UTC).isoformat(),
        }
        if kind == "adjudication":
            out["labels_given"] = json.loads(task.get("labels_given") or "{}")
            out["consensus"] = task.get("consensus") or None
            out["reason"] = task.get("reason") or None
        return out

    async def task_for(self, task_id: str, labeler: str
                       ) -> tuple[ReviewTask, str, str | None]:
        """The task and the labeler's standing on it (see ReviewQueue.task_with_state)."""
        task, standing, detail = await self.queue.task_with_state(task_id, labeler)
        if task is None:
            raise ReviewError(404, f"no task {task_id}")
        return ReviewTask.from_fields(task), standing, detail

    def handed_task(self, task_id: str) -> ReviewTask | None:
        """A task this process handed out (its fields never change after creation)."""
        fields = self._handed.get(task_id)
        return ReviewTask.from_fields(fields) if fields is not None else None

    def _remember_handed(self, task_id: str, task: dict[str, str]) -> None:
        if len(self._handed) >= HANDED_CACHE:
            for old in list(self._handed)[: HANDED_CACHE // 10]:  # the oldest tenth
                del self._handed[old]
        self._handed[task_id] = task

    async def _label_event(self, task: ReviewTask, principal: Principal, label: str, *,
                           event_id: uuid.UUID, duration_ms: int | None,
                           guideline_version: str | None,
                           supersedes: str | None = None) -> LabelEvent:
        """The label event of a submit or a revision: the one place that decides what a
        reviewed label records, and the door's checks: the task's options, the project's
        label schema, and what the label store can hold (a 422, never a later dead letter)."""
        if task.options and label not in task.options:
            raise ReviewError(422, f"label {label!r} is not one of {task.options}")
        settings = await self.project_settings(task.project)
        problems = label_problems(task.project, settings.label_options, [label])
        if problems:
            raise ReviewError(422, problems[0])
        door = "adjudication" if task.kind == "adjudication" else "review"
        try:
            return LabelEvent(
                event_id=event_id, project=task.project, item_id=task.item_id, label=label,
                labeler_id=principal.user_id,
                source=LabelSource.adjudicated if door == "adjudication" else LabelSource.human,
                mode=task.mode, shown_prelabel=task.prelabel,
                agreed_with_prelabel=(label == task.prelabel) if task.prelabel else None,
                revised_after_reveal=supersedes is not None, supersedes=supersedes,
                model_version=task.model_version, model_label=task.model_label,
                # the model's confidence in model_label (a Label Studio prediction's score)
                confidence=task.confidence if door == "review" and task.model_label else None,
                guideline_version=guideline_version or settings.routing.guideline_version,
                task_id=task.task_id, batch_id=session_batch_id(door, principal.user_id),
                created_at=datetime.now(UTC), duration_ms=duration_ms,
                gold_label=task.gold_label, planted_prelabel=task.planted,
                audit_sample=task.audit)
        except ValidationError as exc:
            raise ReviewError(422, validation_reason(exc)) from exc

    async def submit(self, task: ReviewTask, standing: str | None, detail: str | None,
                     principal: Principal, label: str, duration_ms: int | None,
                     guideline_version: str | None) -> SubmitResult:
        """Record a human (or adjudicated) label with provenance; a repeat returns the first.

        ``standing`` None: the caller holds the task's fields but not yet the labeler's
        standing. Either way the recording script decides it again, atomically.
        """
        project, task_id = task.project, task.task_id
        if task.kind == "comparison":
            raise ReviewError(409, COMPARISON_ELSEWHERE)
        reveal = task.reveal()
        if standing == "duplicate":
            return SubmitResult(detail or "", "duplicate", False, reveal)
        if standing in ("not_handed", "skipped"):
            raise ReviewError(409, NOT_HANDED if standing == "not_handed" else SKIPPED)
        event = await self._label_event(
            task, principal, label, event_id=stable_id("submit", task_id, principal.user_id),
            duration_ms=duration_ms, guideline_version=guideline_version)
        observation = None
        if task.kind == "review" and task.model_label and task.confidence is not None:
            observation = (self._key("observations", project), _observation(task, label),
                           MAX_OBSERVATIONS)
        # One atomic step decides the standing (on time or late: the script picks which
        # JSON to publish) and records the submission, the label event and the calibration
        # observation, or (a repeat) none of it.
        late_json = event.model_copy(update={"late_submit": True}).to_json()
        outcome, event_id, late = await self.queue.submit(
            project, task_id, principal.user_id, str(event.event_id), streams.LABELS,
            event.to_json(), late_json, kind=task.kind, observation=observation)
        if outcome in ("not_handed", "skipped"):
            raise ReviewError(409, NOT_HANDED if outcome == "not_handed" else SKIPPED)
        if outcome == "duplicate":
            return SubmitResult(event_id, "duplicate", False, reveal)
        if outcome == "recorded":
            if observation:
                self._uncalibrated.add(project)
            await self._count_submit(project, principal.user_id)
        return SubmitResult(event_id, outcome, late, reveal)

    async def _count_submit(self, project: str, labeler: str) -> None:
        """Count a recorded submit towards the labeler's "labeled today". A display
        counter: failing to count never turns a recorded label into an error."""
        try:
            await self.queue.count_submit(project, labeler, datetime.now(UTC))
        except RedisError as exc:
            log.warning("progress not counted", project=project, error=str(exc))

    async def review_context(self, project: str, principal: Principal,
                             since: datetime | None) -> ReviewContext:
        """What the reviewer page shows beside a task (see ``progress``): the guideline and
        its version, how to draw items, what the labeler did today and what is waiting."""
        settings = await self.project_settings(project)
        now = datetime.now(UTC)
        start = day_start(since, now)
        counts = await self.queue.submits_on(project, principal.user_id,
                                             days_between(start, now))
        shape = image_shape(settings.review.display)
        return ReviewContext(
            project=project, guideline_version=settings.routing.guideline_version,
            guideline=settings.review.guideline,
            display=Display(width=shape.width, height=shape.height) if shape else None,
            progress=Progress(labeled_today=labeled_since(counts, start), since=start),
            waiting=waiting(await self.queue.depth(project), settings.routing.gold_rate))

    async def revise(self, task: ReviewTask, principal: Principal, label: str,
                     duration_ms: int | None = None,
                     guideline_version: str | None = None) -> dict[str, Any]:
        """A change after the reveal: a separate event, marked, pointing at the first, built
        by the same rules as the submit (guideline version, duration, batch)."""
        if task.kind == "comparison":
            raise ReviewError(409, COMPARISON_ELSEWHERE)
        submitted = await self.redis.hget(self.queue.task_key(task.task_id) + ":submitted",
                                          principal.user_id)
        if submitted is None:
            raise ReviewError(409, "submit a label before revising it")
        event = await self._label_event(
            task, principal, label,
            event_id=stable_id("revise", task.task_id, principal.user_id, label),
            duration_ms=duration_ms, guideline_version=guideline_version,
            supersedes=text(submitted))
        await self.runtime.bus.publish(streams.LABELS, [event])
        return {"event_id": str(event.event_id), "status": "revised",
                "supersedes": text(submitted)}

    async def skip(self, task: ReviewTask, principal: Principal) -> str:
        outcome = await self.queue.skip(task.project, task.task_id, principal.user_id,
                                        kind=task.kind)
        if outcome == "not_leased":
            raise ReviewError(409, "you hold no lease on this task")
        return outcome

    # --- comparisons (preferences) ------------------------------------------------
    async def on_comparisons(self, batch: list[Delivery[ComparisonEvent]]) -> None:
        """Queue each comparison as a task for ``overlap`` distinct reviewers, highest
        ``priority`` first (the active pair selector's score; posting order otherwise).
        The task id is derived from the comparison id: a redelivery, or a repost of the
        same comparison while its task is kept, adds nothing.

        A gold pair (one with a ``gold_choice``) is not queued: it joins the project's
        gold pairs, salted into each reviewer's comparisons at the gold rate, once a
        reviewer, like gold items (:meth:`next_comparison`)."""
        tasks: list[NewTask] = []
        gold_pairs: dict[str, dict[Any, Any]] = {}
        for d in batch:
            event = d.event
            self._projects.add(event.project)
            if event.gold_choice is not None:
                gold_pairs.setdefault(event.project, {})[event.comparison_id] = \
                    event.model_dump_json()
                continue
            policy = await self.policy(event.project)
            task_id = self.queue.new_task_id(
                event.project, stable_key("comparison", event.project, event.comparison_id))
            tasks.append(self._comparison_task(event, task_id, policy.overlap))
        if gold_pairs:
            pipe = self.redis.pipeline(transaction=False)
            for project, rows in gold_pairs.items():
                pipe.hset(self._key("gold-comparisons", project), mapping=rows)
            await pipe.execute()
            for project in gold_pairs:
                self._gold_pairs.drop(project)
        await self.queue.enqueue_many(tasks, kind="comparison")

    @staticmethod
    def _comparison_task(event: ComparisonEvent, task_id: str, needed: int,
                         salted: bool = False) -> NewTask:
        """The task of a comparison: queued for ``needed`` reviewers, or (a gold pair)
        made for one reviewer; the two look alike to the reviewer."""
        task = ReviewTask(
            task_id=task_id, project=event.project, item_id=event.comparison_id,
            kind="comparison", mode=ReviewMode.comparison, options=[],
            payload_json=orjson.dumps(event.payload).decode(),
            created_at=datetime.now(UTC).isoformat(),
            gold_label=event.gold_choice, prompt=event.prompt,
            candidates_json=orjson.dumps(
                [c.model_dump(mode="json") for c in event.candidates]).decode())
        return NewTask(task_id=task_id, project=event.project, item_id=event.comparison_id,
                       priority=0.0 if event.priority is None else event.priority,
                       needed=needed, fields=task.fields(), salted=salted)

    async def _load_gold_pairs(self, project: str) -> dict[str, ComparisonEvent]:
        rows = await self.redis.hgetall(self._key("gold-comparisons", project))
        return {text(k): ComparisonEvent.model_validate_json(v) for k, v in rows.items()}

    async def gold_pairs(self, project: str) -> list[ComparisonEvent]:
        """The project's gold pairs, as salting sees them."""
        return sorted((await self._load_gold_pairs(project)).values(),
                      key=lambda e: e.comparison_id)

    async def _salted_pair(self, project: str, labeler: str, policy: RoutingPolicy
                           ) -> tuple[NewTask | None, tuple[str, str] | None]:
        """Maybe a gold pair for this reviewer (at the gold rate, one they have not had)."""
        pairs = await self._gold_pairs.get(project) if policy.gold_rate else {}
        if not pairs:
            return None, None
        seen_key = self._key(f"gold-seen-comparisons:{labeler}", project)
        seen = await self.redis.smembers(seen_key)
        fresh = [e for cid, e in sorted(pairs.items()) if cid.encode() not in seen]
        if not should_salt(self.rng, policy.gold_rate, len(fresh)):
            return None, None
        event = self.rng.choice(fresh)
        task_id = self.queue.new_task_id(project, str(stable_id(
            "task", "gold-comparison", project, event.comparison_id, labeler,
            f"{time.time_ns()}")))
        return (self._comparison_task(event, task_id, 1, salted=True),
                (seen_key, event.comparison_id))

    async def _shown_order(self, task: ReviewTask, labeler: str) -> list[str]:
        """The order this reviewer sees the task's candidates in: drawn at random when the
        task is first handed to them, kept (a lease that lapsed and came back shows the
        same order) and recorded on their preference event."""
        key = self.queue.order_key(task.task_id)
        order = presentation_order([c.candidate_id for c in task.candidates()], self.rng)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(key, labeler, json.dumps(order))
        pipe.hget(key, labeler)
        _, kept = await pipe.execute()
        return list(json.loads(kept))

    async def next_comparison(self, project: str, principal: Principal) -> dict[str, Any] | None:
        """Lease the next comparison: the prompt and the candidates by position, in this
        reviewer's order; no candidate id, no model name, no gold mark."""
        if not principal.sees_payloads(project, await self._sensitive(project)):
            raise ReviewError(403, "this project is sensitive: only its members take its tasks")
        direct, remember = await self._salted_pair(
            project, principal.user_id, await self.policy(project))
        try:
            leased = await self.queue.next(
                project, principal.user_id, self.settings.lease_seconds, kind="comparison",
                direct=direct, remember=remember, paused_key=self._key("paused", project))
        except Paused as exc:
            raise ReviewError(423, "you are paused pending a quality review of your recent "
                                   "labels; ask a project admin") from exc
        if leased is None:
            return None
        task_id, expires_ms, fields = leased
        task = ReviewTask.from_fields(fields)
        order = await self._shown_order(task, principal.user_id)
        return {
            "task_id": task_id, "project": project, "comparison_id": task.item_id,
            "prompt": task.prompt, "payload": json.loads(task.payload_json),
            "candidates": comparisons.shown(task.candidates(), order),
            "lease_expires_at": datetime.fromtimestamp(expires_ms / 1000, UTC).isoformat(),
        }

    async def submit_comparison(self, task: ReviewTask, standing: str, detail: str | None,
                                principal: Principal, answer: Answer,
                                duration_ms: int | None,
                                guideline_version: str | None) -> SubmitResult:
        """Record a preference as a label event (mode ``comparison``) with the order the
        reviewer saw, then reveal which candidate and model sat at each position. The
        same recording script as a label's submit: leases, overlap, late submits and
        idempotence behave alike."""
        if task.kind != "comparison":
            raise ReviewError(409, "this task is not a comparison; submit it at "
                                   "/v1/tasks/{task_id}/submit")
        if standing in ("not_handed", "skipped"):
            raise ReviewError(409, NOT_HANDED if standing == "not_handed" else SKIPPED)
        raw_order = await self.redis.hget(self.queue.order_key(task.task_id),
                                          principal.user_id)
        if raw_order is None:
            raise ReviewError(409, NOT_HANDED)
        order = list(json.loads(raw_order))
        candidates = task.candidates()
        reveal = {"candidates": comparisons.revealed(candidates, order)}
        if standing == "duplicate":
            return SubmitResult(detail or "", "duplicate", False, reveal)
        settings = await self.project_settings(task.project)
        try:
            preference = preference_of(answer, order, candidates, task.prompt or "",
                                       task.gold_label)
            event = LabelEvent(
                event_id=stable_id("submit", task.task_id, principal.user_id),
                project=task.project, item_id=task.item_id, label=preference.label(),
                labeler_id=principal.user_id, source=LabelSource.human,
                mode=ReviewMode.comparison, task_id=task.task_id,
                guideline_version=guideline_version or settings.routing.guideline_version,
                batch_id=session_batch_id("review", principal.user_id),
                created_at=datetime.now(UTC), duration_ms=duration_ms,
                gold_label=task.gold_label, preference=preference)
        except AnswerError as exc:
            raise ReviewError(422, str(exc)) from exc
        except ValidationError as exc:
            raise ReviewError(422, validation_reason(exc)) from exc
        late_json = event.model_copy(update={"late_submit": True}).to_json()
        outcome, event_id, late = await self.queue.submit(
            task.project, task.task_id, principal.user_id, str(event.event_id),
            streams.LABELS, event.to_json(), late_json, kind="comparison")
        if outcome in ("not_handed", "skipped"):
            raise ReviewError(409, NOT_HANDED if outcome == "not_handed" else SKIPPED)
        return SubmitResult(event_id, outcome, late, reveal)

    async def unpause(self, project: str, labeler: str) -> bool:
        return bool(await self.redis.srem(self._key("paused", project), labeler))

    async def paused(self, project: str) -> list[str]:
        return sorted(text(x) for x in await self.redis.smembers(self._key("paused", project)))

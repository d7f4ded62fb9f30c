"""Scorer service: scores items with the project's current model; retrains as labels arrive."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any, Literal

import numpy as np
from sklearn.model_selection import cross_val_score
from sqlalchemy import select

from shared import metrics, streams
from shared.bus import Delivery
from shared.events import (
    ItemEvent,
    LabelEvent,
    LabelSource,
    ModelTrainedEvent,
    PredictionEvent,
    stable_id,
)
from shared.logs import get_logger
from shared.projects import KEEP_NEWEST, ProjectSettingsChanged, SelectionSettings
from shared.service import Runtime
from shared.wire import text

from . import store
from .comparison import arms_of, compare
from .model import TrainedModel, build_pipeline, fit
from .pool import choose
from .store import reviewer_payload
from .strategies import COMMITTEE_STRATEGIES, get_strategy
from .tables import items

log = get_logger(__name__)
NO_MODEL = "none"
CONFIG_PREFIX = "loopwise:scorer:settings:"  # the selection settings kept here
SELECTED_PREFIX = "loopwise:scorer:selected:"
LABELS_PAGE = 100_000  # current labels read from the labels service per call
HISTORY_PAGE = 50_000  # label events read from the labels service per call
SCHEDULE_TICK_SECONDS = 5.0
# Replicas share the count of new labels towards a retrain (each sees a share of the
# labels), and a model one replica trained is served by the others within this long.
RETRAIN_PREFIX = "loopwise:scorer:new-labels:"
MODEL_CHECK_SECONDS = 5.0
TRAINING_PREFIX = "loopwise:scorer:training:"
TRAINING_LEASE_SECONDS = 600.0  # longer than any training; lapses if the trainer dies
COUNT_TOWARDS_RETRAIN = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], 0)
  return 1
end
return 0
"""


def holdout_accuracy(inputs: list, labels: list[str], kind: str) -> float | None:
    """3-fold cross-validated accuracy, when every class has at least three labels."""
    counts = Counter(labels)
    if len(counts) < 2 or min(counts.values()) < 3:
        return None
    x = inputs if kind == "text" else np.asarray(inputs, dtype=np.float64)
    return float(
        cross_val_score(build_pipeline(kind), x, np.asarray(labels, dtype=object), cv=3).mean()
    )


class NotEnoughLabels(ValueError):
    """The project has no labels of two classes on items this service knows."""


class ScorerService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.models: dict[str, TrainedModel | None] = {}
        self._model_checked: dict[str, float] = {}  # project -> when the store was asked
        self._count_towards_retrain = runtime.bus.redis.register_script(COUNT_TOWARDS_RETRAIN)
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.reward_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._keep_newest = runtime.bus.redis.register_script(KEEP_NEWEST)
        # Labels (labels service), gold and queue depth (router): through their APIs.
        self.peers = runtime.peers
        self._last_selection: dict[str, float] = {}  # project -> when scheduled last

    async def start(self) -> None:
        bus = self.runtime.bus
        bus.consume(streams.ITEMS, streams.GROUP_SCORER, ItemEvent, self.on_items)
        bus.consume(streams.LABELS, streams.GROUP_SCORER, LabelEvent, self.on_labels)
        bus.consume(streams.PREDICTIONS, streams.GROUP_SCORER, PredictionEvent,
                    self.on_predictions)
        bus.consume(streams.PROJECTS, streams.GROUP_SCORER, ProjectSettingsChanged,
                    self.on_settings)
        self.runtime.supervisor.every("scheduled selection", SCHEDULE_TICK_SECONDS,
                                      self._scheduled_selection)

    async def stop(self) -> None:
        return None

    async def knows_project(self, project: str) -> bool:
        """Declared (settings kept from ``loopwise:projects``) or with items here."""
        if await self.runtime.bus.redis.exists(self._config_key(project)):
            return True
        async with self.runtime.engine.connect() as conn:
            return await store.has_project(conn, project)

    async def current_labels(self, project: str, include_auto: bool
                             ) -> tuple[list[dict[str, Any]], int | None]:
        """The project's current labels and label-set version, from the labels service."""
        rows: list[dict[str, Any]] = []
        version = None
        while True:
            body = await self.peers.get(
                "labels", f"/v1/projects/{project}/labels",
                include_auto=str(include_auto).lower(), limit=LABELS_PAGE, offset=len(rows))
            rows.extend(body["labels"])
            version = body["version"]
            if len(body["labels"]) < LABELS_PAGE:
                return rows, version

    async def _scheduled_selection(self) -> None:
        """Select a batch for projects that asked for a schedule, when their queue runs low
        (one tick; a project that fails is tried again at its next turn)."""
        redis = self.runtime.bus.redis
        async for key in redis.scan_iter(match=f"{CONFIG_PREFIX}*", count=500):
            project = key.decode()[len(CONFIG_PREFIX):]
            with self.runtime.supervisor.guard("scheduled selection", project=project):
                await self._select_if_due(project)

    async def _select_if_due(self, project: str) -> None:
        config = await self.config(project)
        every = config.select_every_seconds
        now = asyncio.get_running_loop().time()
        if every is None or now - self._last_selection.get(project, -every) < every:
            return
        self._last_selection[project] = now
        queue = await self.peers.get("router", f"/v1/projects/{project}/queue")
        waiting = int(queue["depth"])
        if waiting < config.select_budget:  # reviewers are not behind
            await self.select(project, config.select_budget)

    async def model_for(self, project: str) -> TrainedModel | None:
        """The project's newest model; asked of the store at most every
        ``MODEL_CHECK_SECONDS``, so a model another replica trained is served here too."""
        now = asyncio.get_running_loop().time()
        if now - self._model_checked.get(project, -MODEL_CHECK_SECONDS) < MODEL_CHECK_SECONDS:
            return self.models.get(project)
        async with self.runtime.engine.connect() as conn:
            newest = await store.latest_model_version(conn, project)
            cached = self.models.get(project)
            if newest is None:
                self.models[project] = None
            elif cached is None or cached.version != newest:
                self.models[project] = await store.latest_model(conn, project)
        self._model_checked[project] = now
        return self.models[project]

    # --- stream -----------------------------------------------------------------
    async def on_items(self, batch: list[Delivery[ItemEvent]]) -> None:
        """Store the items (to train on later), score them, publish predictions, then ack."""
        async with self.runtime.engine.begin() as conn:
            await store.save_items(conn, [d.event for d in batch])
        by_project: dict[str, list[Delivery[ItemEvent]]] = defaultdict(list)
        for d in batch:
            by_project[d.event.project].append(d)
        predictions: list[PredictionEvent] = []
        dead: list[tuple[Delivery[ItemEvent], str]] = []
        for project, deliveries in by_project.items():
            model = await self.model_for(project)
            scorable, probs = self._score(model, deliveries, dead)
            version = model.version if model else NO_MODEL
            for d, p in zip(scorable, probs, strict=True):
                predictions.append(
                    PredictionEvent(
                        event_id=stable_id("prediction", str(d.event.event_id), version),
                        project=project,
                        item_id=d.event.item_id,
                        model_version=version,
                        probs=p,
                        payload=reviewer_payload(d.event),
                    )
                )
            metrics.PREDICTIONS.labels(project).inc(len(scorable))
        await self.runtime.bus.refuse(streams.ITEMS, streams.GROUP_SCORER, dead,
                                      kind="incompatible")
        await self.runtime.bus.publish(streams.PREDICTIONS, predictions)

    async def on_predictions(self, batch: list[Delivery[PredictionEvent]]) -> None:
        """Items are this service's facts, whichever stream brought them: keep the payload
        of an item a producer sent only as a prediction (the router's task holding it
        expires), so exports and lookups show its data like any other item's."""
        async with self.runtime.engine.begin() as conn:
            await store.save_prediction_payloads(conn, [d.event for d in batch])

    def _score(
        self,
        model: TrainedModel | None,
        deliveries: list[Delivery[ItemEvent]],
        dead: list[tuple[Delivery[ItemEvent], str]],
    ) -> tuple[list[Delivery[ItemEvent]], list[dict]]:
        if model is None:
            return deliveries, [{} for _ in deliveries]
        scorable = []
        for d in deliveries:
            e = d.event
            reason = None
            if model.kind == "text" and e.text is None:
                reason = "this project's model reads text; the item has none"
            elif model.kind == "features" and (
                e.features is None or len(e.features) != model.n_features
            ):
                got = "none" if e.features is None else len(e.features)
                reason = f"this project's model expects {model.n_features} features, got {got}"
            if reason is None:
                scorable.append(d)
            else:
                dead.append((d, reason))
        if not scorable:
            return [], []
        inputs = [d.event.text if model.kind == "text" else d.event.features for d in scorable]
        matrix = model.predict_proba(inputs if model.kind == "text" else np.asarray(inputs))
        classes = model.classes
        return scorable, [
            {c: float(p) for c, p in zip(classes, row, strict=True)} for row in matrix
        ]

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        """Count new non-auto labels; retrain a project once enough have arrived. The
        count is kept in Redis, shared by the replicas that each read a share of them;
        the one whose labels reach the threshold retrains."""
        # A preference trains the reward model, not the classifier.
        counts = Counter(d.event.project for d in batch
                         if d.event.source is not LabelSource.auto and d.event.preference is None)
        for project, n in counts.items():
            due = await self._count_towards_retrain(
                keys=[f"{RETRAIN_PREFIX}{project}"],
                args=[n, self.runtime.settings.retrain_every])
            if due and not self.locks[project].locked():
                self.runtime.supervisor.spawn("retrain", self._retrain(project))

    async def _retrain(self, project: str) -> None:
        # The labels service may not have stored the newest events yet: give it a moment.
        await asyncio.sleep(1.0)
        with self.runtime.supervisor.guard("retrain", project=project):
            try:
                await self.train(project)
            except NotEnoughLabels as exc:
                # Labels of items this service never saw (an import) count towards the
                # retrain but cannot be trained on: not a failure of the loop.
                log.info("retrain skipped", project=project, reason=str(exc))

    # --- configuration --------------------------------------------------------------
    def _config_key(self, project: str) -> str:
        return f"{CONFIG_PREFIX}{project}"

    async def config(self, project: str) -> SelectionSettings:
        """The project's selection settings as the labels service last published them."""
        raw = await self.runtime.bus.redis.hget(self._config_key(project), "settings")
        return SelectionSettings.model_validate_json(raw) if raw else SelectionSettings()

    async def on_settings(self, batch: list[Delivery[ProjectSettingsChanged]]) -> None:
        """Keep each project's newest selection settings (its revision decides)."""
        for d in batch:
            await self._keep_newest(keys=[self._config_key(d.event.project)],
                                    args=[d.event.revision,
                                          d.event.settings.selection.model_dump_json()])

    # --- model lifecycle ----------------------------------------------------------
    async def train(self, project: str) -> dict[str, Any]:
        """Train on the project's current labels and make the result the serving model."""
        # One training of a project at a time across the replicas as well: two would
        # count the same models and both name theirs ``<project>-v<n+1>``.
        across = self.runtime.bus.redis.lock(f"{TRAINING_PREFIX}{project}",
                                             timeout=TRAINING_LEASE_SECONDS,
                                             blocking_timeout=TRAINING_LEASE_SECONDS,
                                             thread_local=False)
        async with self.locks[project], across:
            config = await self.config(project)
            current, label_set_version = await self.current_labels(project, config.include_auto)
            gold = await self._gold(project)
            # Gold is what models are judged on: a label a reviewer gave a gold task never
            # trains the model, or its gold accuracy would be measured on its own training set.
            current = [r for r in current if r["item_id"] not in gold]
            async with self.runtime.engine.connect() as conn:
                inputs, labels, kind, label_set = await store.training_set(
                    conn, project, current, label_set_version, include_auto=config.include_auto)
            if len(set(labels)) < 2:
                raise NotEnoughLabels(
                    f"project {project!r} has {len(labels)} usable labels in "
                    f"{len(set(labels))} classes; training needs at least two classes"
                )
            async with self.runtime.engine.begin() as conn:
                version = await store.next_version(conn, project)
            model = await asyncio.to_thread(fit, version, inputs, labels, kind)
            model_metrics: dict[str, Any] = {
                "cv_accuracy": await asyncio.to_thread(holdout_accuracy, inputs, labels, kind),
                "gold_accuracy": await self._gold_accuracy(project, model, gold),
                "classes": model.classes, "kind": kind, "strategy": config.strategy,
                "diversity": config.diversity, "label_set": label_set,
            }
            async with self.runtime.engine.begin() as conn:
                await store.save_model(conn, project, model, len(labels), model_metrics)
            self.models[project] = model
            self._model_checked[project] = asyncio.get_running_loop().time()
            await self.runtime.bus.publish(streams.MODELS, [ModelTrainedEvent(
                event_id=stable_id("model", version), project=project, model_version=version,
                label_set=label_set, strategy=config.strategy, metrics=model_metrics)])
            metrics.MODEL_TRAINED.labels(project).inc()
            log.info("trained", project=project, version=version, labels=len(labels),
                     cv_accuracy=model_metrics["cv_accuracy"])
            return {"version": version, "label_count": len(labels), "metrics": model_metrics}

    async def label_history(self, project: str) -> list[dict[str, Any]]:
        """Every counting label event of the project, oldest first (the labels service
        keeps them)."""
        rows: list[dict[str, Any]] = []
        while True:
            body = await self.peers.get("labels", f"/v1/projects/{project}/events",
                                        limit=HISTORY_PAGE, offset=len(rows))
            rows.extend(body["events"])
            if len(body["events"]) < HISTORY_PAGE:
                return rows

    async def comparison(self, project: str, points: int = 6, seeds: int = 3
                         ) -> dict[str, Any]:
        """The loop's model against baselines refitted from the same stored data with the
        same labeling budget, on held-out gold (:mod:`services.scorer.comparison`): what
        the scorer's route answers and the quality service's evaluation includes."""
        current, version = await self.current_labels(project, include_auto=False)
        history = await self.label_history(project)
        gold = await self._gold(project)
        wanted = {r["item_id"] for r in current} | {e["item_id"] for e in history} | set(gold)
        async with self.runtime.engine.connect() as conn:
            inputs, kind = await store.inputs_of(conn, project, sorted(wanted))
        arms = arms_of(history, {r["item_id"]: r["label"] for r in current}, gold, inputs)
        result = await asyncio.to_thread(compare, arms, inputs, gold, kind, points=points,
                                         seeds=seeds)
        return {"project": project, "label_set_version": version,
                "label_events": len(history), **result}

    async def _gold(self, project: str) -> dict[str, str]:
        """The project's gold answers (the router keeps them)."""
        listed = await self.peers.get("router", f"/v1/projects/{project}/gold")
        return {g["item_id"]: g["label"] for g in listed["items"]}

    async def _gold_accuracy(self, project: str, model: TrainedModel,
                             gold: dict[str, str]) -> dict[str, Any] | None:
        """Accuracy on the project's gold items, held out of its training set."""
        if not gold or model.kind != "features":
            return None
        async with self.runtime.engine.connect() as conn:
            features = await store.features_of(conn, project, list(gold))
        features = {k: v for k, v in features.items() if len(v) == model.n_features}
        if not features:
            return None
        ids = list(features)
        probs = await asyncio.to_thread(model.predict_proba, np.asarray([features[i] for i in ids]))
        predicted = [model.classes[int(j)] for j in probs.argmax(axis=1)]
        correct = sum(p == gold[i] for p, i in zip(predicted, ids, strict=True))
        return {"accuracy": correct / len(ids), "items": len(ids)}

    # --- pool selection -----------------------------------------------------------
    async def select(self, project: str, budget: int, strategy: str | None = None,
                     diversity: str | Literal["default"] | None = "default") -> dict[str, Any]:
        """Score the unlabeled pool, pick a batch and send it to review with its priority."""
        config = await self.config(project)
        strategy = strategy or config.strategy
        get_strategy(strategy)  # fail early, with the list of names
        diversity = config.diversity if diversity == "default" else diversity
        selected_key = f"{SELECTED_PREFIX}{project}"
        already = {text(x) for x in await self.runtime.bus.redis.smembers(selected_key)}
        current, label_set_version = await self.current_labels(project, include_auto=False)
        labeled = {r["item_id"] for r in current}
        async with self.runtime.engine.connect() as conn:
            ids, features = await store.unlabeled_pool(conn, project, already | labeled)
            train = None
            if strategy in COMMITTEE_STRATEGIES:
                inputs, labels, kind, _ = await store.training_set(conn, project, current,
                                                                   label_set_version)
                if kind == "features" and len(set(labels)) >= 2:
                    train = (np.asarray(inputs, dtype=np.float64), np.asarray(labels, dtype=object))
        model = await self.model_for(project)
        if model is not None and model.kind != "features":
            raise ValueError("pool selection needs numeric features; this project's model reads "
                             "text")
        if model is not None and strategy in COMMITTEE_STRATEGIES and train is None:
            raise ValueError(f"strategy {strategy!r} needs labels of at least two classes")
        if not ids:
            return {"project": project, "selected": [], "model_version": None,
                    "strategy": strategy, "diversity": diversity, "pool": 0}
        pool = np.asarray(features, dtype=np.float32)
        if model is not None and pool.shape[1] != model.n_features:
            raise ValueError(f"pool items have {pool.shape[1]} features; the model expects "
                             f"{model.n_features}")
        choice = await asyncio.to_thread(
            choose, pool, budget, model=model.pipeline if model else None, strategy=strategy,
            diversity=diversity, train=train)
        model_version = model.version if model else NO_MODEL
        picked = [ids[int(i)] for i in choice.indices]
        probs = (model.predict_proba(pool[choice.indices]) if model and len(picked)
                 else np.empty((len(picked), 0)))
        classes = model.classes if model else []
        predictions = [
            PredictionEvent(
                event_id=stable_id("selected", project, item_id, model_version),
                project=project, item_id=item_id, model_version=model_version,
                probs={c: float(p) for c, p in zip(classes, row, strict=True)},
                payload={"features": features[int(i)]}, review=True, priority=float(score))
            for item_id, i, row, score in zip(picked, choice.indices, probs, choice.scores,
                                              strict=True)
        ]
        payloads = await self._payloads(project, picked)
        for p in predictions:
            if payloads.get(p.item_id) is not None:
                p.payload = payloads[p.item_id]
        await self.runtime.bus.publish(streams.PREDICTIONS, predictions)
        if picked:
            await self.runtime.bus.redis.sadd(selected_key, *picked)
        return {"project": project, "selected": picked, "model_version": model_version,
                "strategy": "seed" if choice.cold_start else strategy, "diversity": diversity,
                "pool": len(ids), "priorities": [float(s) for s in choice.scores]}

    async def _payloads(self, project: str, item_ids: list[str]) -> dict[str, Any]:
        if not item_ids:
            return {}
        async with self.runtime.engine.connect() as conn:
            rows = await conn.execute(
                select(items.c.item_id, items.c.payload)
                .where(items.c.project == project, items.c.item_id.in_(item_ids)))
            return {r.item_id: r.payload for r in rows.all()}

    async def predict(self, project: str, inputs: list) -> dict[str, Any]:
        model = await self.model_for(project)
        if model is None:
            raise LookupError(f"project {project!r} has no model yet")
        x = inputs if model.kind == "text" else np.asarray(inputs, dtype=np.float64)
        matrix = await asyncio.to_thread(model.predict_proba, x)
        return {
            "model_version": model.version,
            "classes": model.classes,
            "probs": matrix.round(6).tolist(),
        }

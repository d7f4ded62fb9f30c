"""Scorer service: scores items with the project's current model; retrains as labels arrive."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import numpy as np
from sklearn.model_selection import cross_val_score

from shared import metrics, streams
from shared.bus import Delivery
from shared.events import (
    DeadLetterEvent,
    ItemEvent,
    LabelEvent,
    LabelSource,
    PredictionEvent,
    stable_id,
)
from shared.logs import get_logger
from shared.service import Runtime
from shared.wire import encode_event

from . import store
from .model import TrainedModel, build_pipeline, fit

log = get_logger(__name__)
NO_MODEL = "none"


def reviewer_payload(item: ItemEvent) -> dict[str, Any]:
    """What a reviewer is shown: the producer's payload, else the raw example."""
    if item.payload is not None:
        return item.payload
    return {"text": item.text} if item.text is not None else {"features": item.features}


def holdout_accuracy(inputs: list, labels: list[str], kind: str) -> float | None:
    """3-fold cross-validated accuracy, when every class has at least three labels."""
    counts = Counter(labels)
    if len(counts) < 2 or min(counts.values()) < 3:
        return None
    x = inputs if kind == "text" else np.asarray(inputs, dtype=np.float64)
    return float(
        cross_val_score(build_pipeline(kind), x, np.asarray(labels, dtype=object), cv=3).mean()
    )


class ScorerService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.models: dict[str, TrainedModel | None] = {}
        self.new_labels: Counter[str] = Counter()
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.background: set[asyncio.Task] = set()

    async def start(self) -> None:
        bus = self.runtime.bus
        bus.consume(streams.ITEMS, streams.GROUP_SCORER, ItemEvent, self.on_items)
        bus.consume(streams.LABELS, streams.GROUP_SCORER, LabelEvent, self.on_labels)

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()

    async def model_for(self, project: str) -> TrainedModel | None:
        if project not in self.models:
            async with self.runtime.engine.connect() as conn:
                self.models[project] = await store.latest_model(conn, project)
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
        dead: list[DeadLetterEvent] = []
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
        if dead:
            await self.runtime.bus.publish(streams.DEADLETTER, dead)
        await self.runtime.bus.publish(streams.PREDICTIONS, predictions)

    def _score(
        self,
        model: TrainedModel | None,
        deliveries: list[Delivery[ItemEvent]],
        dead: list[DeadLetterEvent],
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
                dead.append(
                    DeadLetterEvent(
                        event_id=stable_id("deadletter", streams.ITEMS, "scorer", d.entry_id),
                        stream=streams.ITEMS,
                        entry_id=d.entry_id,
                        group=streams.GROUP_SCORER,
                        reason=reason,
                        fields=encode_event(e.to_json()),
                    )
                )
                metrics.EVENTS_DEADLETTERED.labels("scorer", streams.ITEMS, "incompatible").inc()
        if not scorable:
            return [], []
        inputs = [d.event.text if model.kind == "text" else d.event.features for d in scorable]
        matrix = model.predict_proba(inputs if model.kind == "text" else np.asarray(inputs))
        classes = model.classes
        return scorable, [
            {c: float(p) for c, p in zip(classes, row, strict=True)} for row in matrix
        ]

    async def on_labels(self, batch: list[Delivery[LabelEvent]]) -> None:
        """Count new non-auto labels; retrain a project once enough have arrived."""
        for d in batch:
            if d.event.source is not LabelSource.auto:
                self.new_labels[d.event.project] += 1
        for project, n in list(self.new_labels.items()):
            if n >= self.runtime.settings.retrain_every and not self.locks[project].locked():
                self.new_labels[project] = 0
                task = asyncio.create_task(self._retrain_quietly(project))
                self.background.add(task)
                task.add_done_callback(self.background.discard)

    async def _retrain_quietly(self, project: str) -> None:
        # The labels service may not have stored the newest events yet: give it a moment.
        await asyncio.sleep(1.0)
        try:
            await self.train(project)
        except Exception as exc:
            log.warning("retrain failed", project=project, error=str(exc))

    # --- model lifecycle ----------------------------------------------------------
    async def train(self, project: str) -> dict[str, Any]:
        """Train on the project's current labels and make the result the serving model."""
        async with self.locks[project]:
            async with self.runtime.engine.connect() as conn:
                inputs, labels, kind = await store.training_set(conn, project)
            if len(set(labels)) < 2:
                raise ValueError(
                    f"project {project!r} has {len(labels)} usable labels in "
                    f"{len(set(labels))} classes; training needs at least two classes"
                )
            async with self.runtime.engine.begin() as conn:
                version = await store.next_version(conn, project)
            model = await asyncio.to_thread(fit, version, inputs, labels, kind)
            accuracy = await asyncio.to_thread(holdout_accuracy, inputs, labels, kind)
            model_metrics = {"cv_accuracy": accuracy, "classes": model.classes, "kind": kind}
            async with self.runtime.engine.begin() as conn:
                await store.save_model(conn, project, model, len(labels), model_metrics)
            self.models[project] = model
            metrics.MODEL_TRAINED.labels(project).inc()
            log.info(
                "trained",
                project=project,
                version=version,
                labels=len(labels),
                cv_accuracy=accuracy,
            )
            return {"version": version, "label_count": len(labels), "metrics": model_metrics}

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

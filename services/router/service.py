"""Router service: routes predictions, hands out review tasks, records submitted labels."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from shared import metrics, streams
from shared.bus import Delivery
from shared.events import LabelEvent, LabelSource, PredictionEvent, stable_id
from shared.service import Runtime

from .queue import PREFIX, NewTask, ReviewQueue, task_fields
from .routing import route

POLICY_KEY = PREFIX + "policy:"
OPTIONS_KEY = PREFIX + "options:"


class RouterService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.queue = ReviewQueue(runtime.bus.redis)

    async def start(self) -> None:
        self.runtime.bus.consume(
            streams.PREDICTIONS, streams.GROUP_ROUTER, PredictionEvent, self.on_predictions
        )

    async def stop(self) -> None:
        return None

    # --- policy -----------------------------------------------------------------
    async def policy(self, project: str) -> dict[str, Any]:
        raw = await self.runtime.bus.redis.hgetall(POLICY_KEY + project)
        stored = {k.decode(): json.loads(v) for k, v in raw.items()}
        return {
            "auto_accept_threshold": stored.get(
                "auto_accept_threshold", self.settings.auto_accept_threshold
            ),
            "overlap": stored.get("overlap", self.settings.overlap),
        }

    async def set_policy(self, project: str, changes: dict[str, Any]) -> dict[str, Any]:
        if changes:
            await self.runtime.bus.redis.hset(
                POLICY_KEY + project, mapping={k: json.dumps(v) for k, v in changes.items()}
            )
        policy = await self.policy(project)
        metrics.AUTO_ACCEPT_THRESHOLD.labels(project).set(policy["auto_accept_threshold"])
        return policy

    # --- stream -----------------------------------------------------------------
    async def on_predictions(self, batch: list[Delivery[PredictionEvent]]) -> None:
        """Auto labels are published and tasks enqueued before the batch is acknowledged."""
        policies = {p: await self.policy(p) for p in {d.event.project for d in batch}}
        now = datetime.now(UTC)
        auto_labels: list[LabelEvent] = []
        tasks: list[NewTask] = []
        options: dict[str, set[str]] = {}
        decisions: Counter[tuple[str, str]] = Counter()
        for delivery in batch:
            pred = delivery.event
            policy = policies[pred.project]
            decision = route(pred, policy["auto_accept_threshold"])
            options.setdefault(pred.project, set()).update(pred.probs)
            if decision.auto_accept and decision.label is not None:
                auto_labels.append(
                    LabelEvent(
                        event_id=stable_id("auto", str(pred.event_id)),
                        project=pred.project,
                        item_id=pred.item_id,
                        label=decision.label,
                        labeler_id=f"model:{pred.model_version}",
                        source=LabelSource.auto,
                        model_version=pred.model_version,
                        confidence=decision.confidence,
                        created_at=now,
                    )
                )
                decisions[(pred.project, "auto")] += 1
            else:
                tasks.append(
                    NewTask(
                        task_id=str(stable_id("task", str(pred.event_id))),
                        project=pred.project,
                        item_id=pred.item_id,
                        priority=decision.priority,
                        needed=int(policy["overlap"]),
                        fields=task_fields(
                            pred.payload,
                            pred.probs,
                            pred.model_version,
                            str(pred.event_id),
                            now.isoformat(),
                        ),
                    )
                )
                decisions[(pred.project, "review")] += 1
        redis = self.runtime.bus.redis
        pipe = redis.pipeline(transaction=False)
        for project, labels in options.items():
            if labels:
                pipe.sadd(OPTIONS_KEY + project, *labels)
        await pipe.execute()
        await self.runtime.bus.publish(streams.LABELS, auto_labels)
        await self.queue.enqueue_many(tasks)
        for (project, decision), n in decisions.items():
            metrics.ROUTED.labels(project, decision).inc(n)
        for project in policies:
            metrics.QUEUE_DEPTH.labels(project).set(await self.queue.depth(project))

    async def options(self, project: str) -> list[str]:
        labels = await self.runtime.bus.redis.smembers(OPTIONS_KEY + project)
        return sorted((x.decode() for x in labels), key=_label_order)


def _label_order(label: str) -> tuple[int, float | str]:
    """Numeric labels in numeric order (so digit keys map naturally), then text."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)

"""The scorer's tables: items it has seen (features/text to train on) and model versions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import desc, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import insert_ignoring_duplicates
from shared.events import NONE_OF_THESE, ItemEvent, PredictionEvent

from . import reward
from .model import TrainedModel, dumps, loads
from .reward import RewardModel
from .tables import items, models, prediction_payloads, reward_models


def reviewer_payload(item: ItemEvent) -> dict[str, Any]:
    """What a reviewer is shown: the producer's payload, else the raw example."""
    if item.payload is not None:
        return item.payload
    return {"text": item.text} if item.text is not None else {"features": item.features}


async def save_items(conn: AsyncConnection, events: Sequence[ItemEvent]) -> int:
    now = datetime.now(UTC)
    rows = {
        (e.project, e.item_id): {
            "project": e.project,
            "item_id": e.item_id,
            "features": e.features,
            "text": e.text,
            "payload": e.payload,
            "created_at": now,
        }
        for e in events
    }
    return await insert_ignoring_duplicates(conn, items, list(rows.values()))


async def save_prediction_payloads(conn: AsyncConnection,
                                   events: Sequence[PredictionEvent]) -> int:
    """Keep the payload of each predicted item this service never got as an item (a
    producer's prediction, not one the scorer made): the first payload an item came with
    stays, so a redelivery or a later prediction of the same item changes nothing."""
    rows: dict[tuple[str, str], PredictionEvent] = {}
    for e in events:  # the first of a batch too (a dict built from the batch kept the last)
        if e.payload is not None:
            rows.setdefault((e.project, e.item_id), e)
    if not rows:
        return 0
    known: set[tuple[str, str]] = set()
    by_project: dict[str, list[str]] = {}
    for project, item_id in rows:
        by_project.setdefault(project, []).append(item_id)
    for project, item_ids in by_project.items():
        for start in range(0, len(item_ids), 1000):
            found = await conn.execute(select(items.c.item_id).where(
                items.c.project == project, items.c.item_id.in_(item_ids[start:start + 1000])))
            known.update((project, item_id) for (item_id,) in found.all())
    now = datetime.now(UTC)
    return await insert_ignoring_duplicates(conn, prediction_payloads, [
        {"project": e.project, "item_id": e.item_id, "payload": e.payload, "created_at": now}
        for key, e in rows.items() if key not in known])


async def has_project(conn: AsyncConnection, project: str) -> bool:
    """Whether the scorer holds an item or a model of the project."""
    for query in (select(items.c.project).where(items.c.project == project),
                  select(models.c.project).where(models.c.project == project)):
        if (await conn.execute(query.limit(1))).first() is not None:
            return True
    return False


async def latest_model(conn: AsyncConnection, project: str) -> TrainedModel | None:
    row = (
        await conn.execute(
            select(models.c.version, models.c.blob)
            .where(models.c.project == project)
            .order_by(desc(models.c.created_at))
            .limit(1)
        )
    ).first()
    return loads(row.version, row.blob) if row else None


async def latest_model_version(conn: AsyncConnection, project: str) -> str | None:
    """The newest model's version alone (no blob): cheap enough to ask every few seconds."""
    return (
        await conn.execute(
            select(models.c.version)
            .where(models.c.project == project)
            .order_by(desc(models.c.created_at))
            .limit(1)
        )
    ).scalar()


async def next_version(conn: AsyncConnection, project: str) -> str:
    n = (await conn.execute(select(func.count()).where(models.c.project == project))).scalar_one()
    return f"{project}-v{n + 1}"


async def save_model(
    conn: AsyncConnection,
    project: str,
    model: TrainedModel,
    label_count: int,
    model_metrics: dict[str, Any],
) -> None:
    await conn.execute(
        insert(models).values(
            version=model.version,
            project=project,
            created_at=datetime.now(UTC),
            label_count=label_count,
            metrics=model_metrics,
            blob=dumps(model),
        )
    )


async def list_models(conn: AsyncConnection, project: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(models.c.version, models.c.created_at, models.c.label_count, models.c.metrics)
        .where(models.c.project == project)
        .order_by(models.c.created_at)
    )
    return [dict(r._mapping) for r in rows.all()]


async def training_set(
    conn: AsyncConnection, project: str, current: list[dict[str, Any]],
    label_set_version: int | None, include_auto: bool = False,
) -> tuple[list, list[str], str, dict[str, Any]]:
    """Inputs and labels: the project's current labels (as the labels service gives them)
    joined with the items this service has seen; also says which labels were used.

    Auto labels are left out unless the project opts in: training on the model's own
    guesses would only confirm them.
    """
    current = [
        r for r in current
        if r["label"] != NONE_OF_THESE  # "not one of the offered labels" is not a class
        and (include_auto or r["source"] != "auto")
    ]
    labels = {r["item_id"]: r["label"] for r in current}
    by_source: dict[str, int] = {}
    for r in current:
        by_source[r["source"]] = by_source.get(r["source"], 0) + 1
    label_set = {
        "version": label_set_version,  # the labels service's label-set version
        "labels": len(current),
        "by_source": by_source,
        "include_auto": include_auto,
        "latest_stored_at": max((str(r["stored_at"]) for r in current), default=None),
    }
    if not labels:
        return [], [], "features", label_set
    rows = (
        await conn.execute(
            select(items.c.item_id, items.c.features, items.c.text).where(
                items.c.project == project
            )
        )
    ).all()
    rows = [r for r in rows if r.item_id in labels]
    kind = "text" if rows and rows[0].features is None else "features"
    inputs = [r.text if kind == "text" else r.features for r in rows]
    return inputs, [labels[r.item_id] for r in rows], kind, label_set


async def unlabeled_pool(
    conn: AsyncConnection, project: str, exclude: set[str]
) -> tuple[list[str], list[list[float]]]:
    """Items with features not in ``exclude`` (those with a human label, or selected)."""
    rows = await conn.execute(
        select(items.c.item_id, items.c.features)
        .where(items.c.project == project, items.c.features.is_not(None))
        .order_by(items.c.item_id)
    )
    ids, features = [], []
    for item_id, vector in rows.all():
        if item_id not in exclude and vector is not None:
            ids.append(item_id)
            features.append(vector)
    return ids, features


async def reviewer_payloads(conn: AsyncConnection, project: str,
                            item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each known item's payload as reviewers see it (its text when it has no payload);
    for an item that only came as a prediction, the payload the prediction brought."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(item_ids), 1000):
        part = item_ids[start:start + 1000]
        rows = await conn.execute(
            select(items.c.item_id, items.c.payload, items.c.text, items.c.features).where(
                items.c.project == project, items.c.item_id.in_(part)))
        for r in rows.all():
            found[r.item_id] = reviewer_payload(ItemEvent(
                project=project, item_id=r.item_id, features=r.features, text=r.text,
                payload=r.payload))
        rest = [item_id for item_id in part if item_id not in found]
        if rest:
            predicted = await conn.execute(
                select(prediction_payloads.c.item_id, prediction_payloads.c.payload).where(
                    prediction_payloads.c.project == project,
                    prediction_payloads.c.item_id.in_(rest)))
            found.update({r.item_id: dict(r.payload) for r in predicted.all()})
    return found


async def features_of(conn: AsyncConnection, project: str, item_ids: list[str]) -> dict[str, list]:
    if not item_ids:
        return {}
    rows = await conn.execute(
        select(items.c.item_id, items.c.features)
        .where(items.c.project == project, items.c.item_id.in_(item_ids))
    )
    return {r.item_id: r.features for r in rows.all() if r.features is not None}


# --- reward models ---------------------------------------------------------------------


async def next_reward_version(conn: AsyncConnection, project: str) -> str:
    n = (await conn.execute(select(func.count()).where(reward_models.c.project == project))
         ).scalar_one()
    return f"{project}-r{n + 1}"


async def save_reward_model(conn: AsyncConnection, project: str, model: RewardModel,
                            pair_count: int, model_metrics: dict[str, Any]) -> None:
    await conn.execute(insert(reward_models).values(
        version=model.version, project=project, created_at=datetime.now(UTC),
        pair_count=pair_count, metrics=model_metrics, blob=reward.dumps(model)))


async def latest_reward_model(conn: AsyncConnection, project: str) -> RewardModel | None:
    row = (await conn.execute(
        select(reward_models.c.version, reward_models.c.blob)
        .where(reward_models.c.project == project)
        .order_by(desc(reward_models.c.created_at)).limit(1))).first()
    return reward.loads(row.version, row.blob) if row else None


async def list_reward_models(conn: AsyncConnection, project: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(reward_models.c.version, reward_models.c.created_at, reward_models.c.pair_count,
               reward_models.c.metrics)
        .where(reward_models.c.project == project).order_by(reward_models.c.created_at))
    return [dict(r._mapping) for r in rows.all()]


async def inputs_of(conn: AsyncConnection, project: str, item_ids: Sequence[str]
                    ) -> tuple[dict[str, Any], str]:
    """What a model reads of each known item (features, else text) and which kind: the
    project's kind is that of most items; items of the other kind, or whose feature
    vectors are of another length than most, are left out (no model can read both)."""
    rows: list[Any] = []
    ids = list(item_ids)
    for start in range(0, len(ids), 1000):
        rows.extend((await conn.execute(
            select(items.c.item_id, items.c.features, items.c.text).where(
                items.c.project == project,
                items.c.item_id.in_(ids[start:start + 1000])))).all())
    with_features = [r for r in rows if r.features is not None]
    with_text = [r for r in rows if r.features is None and r.text is not None]
    if len(with_text) > len(with_features):
        return {r.item_id: r.text for r in with_text}, "text"
    lengths = Counter(len(r.features) for r in with_features)
    if not lengths:
        return {}, "features"
    width = lengths.most_common(1)[0][0]
    return {r.item_id: r.features for r in with_features if len(r.features) == width}, "features"

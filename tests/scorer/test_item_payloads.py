"""Item payloads are the scorer's facts, whichever stream brought the item."""

from __future__ import annotations

import json

import pytest

from shared import streams
from tests.helpers import client, groups_idle, token

pytestmark = pytest.mark.integration


async def test_an_item_that_came_only_as_a_prediction_keeps_its_payload(
        services, engine, redis, project):
    """A producer's prediction with a payload (no item ever sent) is shown to reviewers by
    the router's task, which expires; the scorer keeps the payload, so lookups and the
    labels service's exports still have it. The first payload stays; an item the scorer
    scored keeps its own payload; a prediction without one adds nothing."""
    sent = [
        ("p-1", {"text": "first payload", "camera": 3}),
        ("p-1", {"text": "a later prediction of the same item"}),
        ("p-2", None),
    ]
    await redis.xadd(streams.ITEMS, {"data": json.dumps({
        "project": project, "item_id": "i-1", "text": "scored by the scorer",
        "payload": {"text": "the item's own payload"}})})
    await groups_idle(redis, (streams.ITEMS, streams.GROUP_SCORER))
    for item_id, payload in [*sent, ("i-1", {"text": "a producer's other payload"})]:
        body = {"project": project, "item_id": item_id, "model_version": "m-x",
                "probs": {"a": 0.5, "b": 0.5}}
        if payload is not None:
            body["payload"] = payload
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_SCORER))

    service = await token(engine, "svc", "service", project)
    async with client(services, "scorer", service) as http:
        r = await http.post(f"/v1/projects/{project}/items/lookup",
                            json={"item_ids": ["p-1", "p-2", "i-1", "never-seen"]})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == {"p-1": {"text": "first payload", "camera": 3},
                                 "i-1": {"text": "the item's own payload"}}


async def test_the_first_payload_stays_when_both_predictions_come_in_one_batch(engine, project):
    """The stream hands the scorer several predictions of one item in one batch as often
    as in two: the first one's payload is kept either way."""
    from sqlalchemy import select

    from services.scorer.store import save_prediction_payloads
    from services.scorer.tables import prediction_payloads
    from shared.events import PredictionEvent

    batch = [PredictionEvent(project=project, item_id="p-1", model_version="m",
                             probs={"a": 0.5, "b": 0.5}, payload={"n": n}) for n in (1, 2)]
    async with engine.begin() as conn:
        assert await save_prediction_payloads(conn, batch) == 1
        await save_prediction_payloads(conn, batch[::-1])  # later: changes nothing
        kept = (await conn.execute(select(prediction_payloads.c.payload).where(
            prediction_payloads.c.project == project))).scalars().all()
    assert kept == [{"n": 1}]

"""Pool selection on the running services: cold start, then active learning into review."""

from __future__ import annotations

import json

import pytest
from sklearn.datasets import load_digits

from services.router.queue import project_key, task_key_of
from shared import sharding, streams
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event
from tests.helpers import client, configure, groups_idle, token, wait_for

pytestmark = pytest.mark.integration


async def _queued(redis, project) -> dict[str, float]:
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    out = {}
    queue = project_key("queue", project, Settings().shards)
    for task_id, priority in await redis.zrange(queue, 0, -1, withscores=True):
        item = await redis.hget(task_key_of(task_id.decode()), "item_id")
        out[item.decode()] = priority
    return out


async def test_select_cold_start_then_uncertain_diverse_batches_into_the_review_queue(
        services, engine, redis, project):
    x, y = load_digits(return_X_y=True)
    admin = await token(engine, "admin", "admin", project)
    async with client(services, "scorer", admin) as http:
        r = await http.post(f"/v1/projects/{project}/items", json={"items": [
            {"item_id": f"d{i}", "features": x[i].tolist(),
             "payload": {"image": x[i].reshape(8, 8).tolist()}} for i in range(400)]})
        assert r.json()["new"] == 400

        cold = (await http.post(f"/v1/projects/{project}/select", json={"budget": 20})).json()
        assert cold["strategy"] == "seed" and cold["model_version"] == "none"
        assert len(cold["selected"]) == 20 == len(set(cold["selected"]))
        queued = await _queued(redis, project)
        assert set(queued) == set(cold["selected"])

        # People label the seed batch (and a few more) on the stream; then the model trains.
        labeled = [f"d{i}" for i in range(60)]
        for item in labeled:
            await redis.xadd(streams.LABELS, encode_event(LabelEvent(
                project=project, item_id=item, label=str(y[int(item[1:])]), labeler_id="ann",
                source="human", mode="blind").to_json()))
        await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))

        async def trained() -> bool:
            r = await http.post(f"/v1/projects/{project}/train")
            return r.status_code == 200

        await wait_for(trained, 30, "a first model")
        models = (await http.get(f"/v1/projects/{project}/models")).json()["models"]
        version = models[-1]["version"]
        assert models[-1]["metrics"]["label_set"]["labels"] >= 60

        # The scorer writes a project's predictions to the project's shard (shared.sharding).
        shard_stream = sharding.project_stream(streams.PREDICTIONS, project, Settings().shards)
        start = (await redis.xinfo_stream(shard_stream))["last-generated-id"]
        r = await http.post(f"/v1/projects/{project}/select",
                            json={"budget": 30, "strategy": "margin", "diversity": "kmeanspp"})
        assert r.status_code == 200, r.text
        batch = r.json()
        picked = batch["selected"]
        assert len(picked) == 30 == len(set(picked))
        assert not set(picked) & set(labeled) and not set(picked) & set(cold["selected"])
        assert batch["model_version"] == version

        sent = [json.loads(f[b"data"]) for _, f in
                await redis.xrange(shard_stream, min=f"({start.decode()}")]
        sent = [p for p in sent if p["project"] == project]
        assert {p["item_id"] for p in sent} == set(picked)
        assert all(p["review"] and p["model_version"] == version and p["probs"] for p in sent)
        queued = await _queued(redis, project)
        for p in sent:  # queued for review with the active-learning priority, never auto
            assert queued[p["item_id"]] == pytest.approx(p["priority"], rel=1e-6)

        committee = await http.post(f"/v1/projects/{project}/select",
                                    json={"budget": 5, "strategy": "vote_entropy"})
        assert committee.status_code == 200 and len(committee.json()["selected"]) == 5
        bad = await http.post(f"/v1/projects/{project}/select",
                              json={"budget": 5, "strategy": "psychic"})
        assert bad.status_code == 422 and "margin" in bad.json()["detail"]


async def test_a_scheduled_project_gets_batches_without_asking(services, engine, redis, project):
    x, _ = load_digits(return_X_y=True)
    admin = await token(engine, "admin", "admin", project)
    async with client(services, "scorer", admin) as http:
        await http.post(f"/v1/projects/{project}/items", json={"items": [
            {"item_id": f"d{i}", "features": x[i].tolist()} for i in range(100)]})
    await configure(services, admin, project,
                    selection={"select_every_seconds": 10, "select_budget": 7})
    async with client(services, "labels", admin) as http:
        bad = await http.patch(f"/v1/projects/{project}",
                               json={"selection": {"select_every_seconds": 1}})
        assert bad.status_code == 422

    async def queued() -> bool:
        return await redis.zcard(project_key("queue", project, Settings().shards)) == 7

    await wait_for(queued, 30, "a scheduled batch in the review queue")

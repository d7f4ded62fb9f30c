"""The model lifecycle and the demo's whole loop, on the running services."""

from __future__ import annotations

import json

import pytest
from sklearn.datasets import load_digits

from loopwise.demo import run_loop
from shared import sharding, streams
from shared.events import ItemEvent, LabelEvent
from shared.wire import encode_event
from tests.helpers import client, groups_idle, token, wait_for

pytestmark = pytest.mark.integration


async def test_labels_on_the_stream_retrain_the_model_and_predictions_carry_its_version(
    services, engine, redis, project
):
    settings = services
    x, y = load_digits(return_X_y=True)
    admin = await token(engine, "admin", "admin", project)
    async with client(settings, "scorer", admin) as http:
        r = await http.post(f"/v1/projects/{project}/items", json={"items": [
            {"item_id": f"s{i}", "features": x[i].tolist()} for i in range(60)]})
        assert r.status_code == 200 and r.json()["new"] == 60
        assert (await http.get(f"/v1/projects/{project}/models")).json()["models"] == []
        for i in range(settings.retrain_every):  # exactly enough to trigger a retrain
            await redis.xadd(streams.LABELS, encode_event(LabelEvent(
                project=project, item_id=f"s{i}", label=str(y[i]), labeler_id="alice",
                source="human", mode="blind").to_json()))

        async def trained() -> bool:
            models = (await http.get(f"/v1/projects/{project}/models")).json()["models"]
            return len(models) == 1

        await wait_for(trained, timeout=60, what="a retrain after N labels")
        version = (await http.get(f"/v1/projects/{project}/models")).json()["models"][0]
        assert version["label_count"] == settings.retrain_every

    # The scorer writes a project's predictions to the project's shard (shared.sharding).
    shard_stream = sharding.project_stream(streams.PREDICTIONS, project, settings.shards)
    start = (await redis.xinfo_stream(shard_stream))["last-generated-id"]
    for i in range(100, 110):
        await redis.xadd(streams.ITEMS, encode_event(ItemEvent(
            project=project, item_id=f"n{i}", features=x[i].tolist()).to_json()))
    await groups_idle(redis, (streams.ITEMS, streams.GROUP_SCORER))
    mine = [json.loads(f[b"data"]) for _, f in await redis.xrange(shard_stream,
                                                                  min=f"({start.decode()}")]
    mine = [p for p in mine if p["project"] == project]
    assert len(mine) == 10
    assert {p["model_version"] for p in mine} == {version["version"]}
    assert all(abs(sum(p["probs"].values()) - 1) < 1e-6 for p in mine)


async def test_the_demo_loop_improves_the_model(services, project):
    summary = await run_loop(services, project, reviewers=3, overlap=2, threshold=0.9,
                             seed_labels=50)
    assert summary.items == summary.auto_accepted + summary.review_tasks
    assert summary.reviewed == summary.review_tasks
    assert summary.human_labels == 2 * summary.review_tasks
    assert summary.labels_stored == summary.seed_labels + summary.auto_accepted + \
        summary.human_labels + summary.gold_labels + summary.consensus_labels
    # Gold salted into the queue: the evaluation judges the review stage on it.
    assert summary.gold_labels > 0
    stage = summary.evaluation["stages"]["review/blind"]
    assert stage["items"] == summary.gold_labels
    assert stage["verdict"] in ("reduced label error", "no measurable difference")
    assert summary.agreement is not None and 0.6 < summary.agreement < 1.0
    assert summary.accuracy_after > summary.accuracy_before + 0.03
    # Human hours are the router's measurements, lease to submit: they cover at least the
    # time each simulated reviewer spent thinking (and the reviewers did think).
    labelers = summary.evaluation["labelers"]
    for name, seconds in summary.think_seconds.items():
        assert seconds > 0
        assert labelers[name]["human_hours"] * 3600 >= seconds - 0.01, name
    # The scorer refitted the loop's model and its baselines on the held-out gold: the
    # budget is the seed and the reviewed items, every gold item judged, none trained on.
    comparison = summary.evaluation["model_comparison"]
    assert comparison["available"], comparison
    assert comparison["budget"] == summary.seed_labels + summary.reviewed
    assert comparison["gold_items"] == summary.gold_items
    assert comparison["arms"]["loop"]["accuracy"]["rate"] > 0.8


async def test_gold_is_held_out_of_training_and_the_model_is_judged_on_it(
        services, engine, redis, project):
    """Labels a reviewer gave gold tasks never train the model: its gold accuracy is
    measured on items it did not learn from."""
    settings = services
    x, y = load_digits(return_X_y=True)
    admin = await token(engine, "admin", "admin", project)
    gold = {f"s{i}": str(y[i]) for i in range(40, 60)}
    async with client(settings, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": item, "label": label, "payload": {"n": item}}
            for item, label in gold.items()]})
        assert r.status_code == 200, r.text
    async with client(settings, "scorer", admin) as http:
        r = await http.post(f"/v1/projects/{project}/items", json={"items": [
            {"item_id": f"s{i}", "features": x[i].tolist()} for i in range(60)]})
        assert r.status_code == 200
    pipe = redis.pipeline(transaction=False)
    for i in range(60):  # every item labelled, gold ones too (as a reviewer would)
        pipe.xadd(streams.LABELS, encode_event(LabelEvent(
            project=project, item_id=f"s{i}", label=str(y[i]), labeler_id="alice",
            source="human", mode="blind").to_json()))
    await pipe.execute()
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    async with client(settings, "scorer", admin) as http:
        r = await http.post(f"/v1/projects/{project}/train")
        assert r.status_code == 200, r.text
        trained = r.json()
    assert trained["label_count"] == 40  # the 20 gold items left out
    assert trained["metrics"]["gold_accuracy"]["items"] == 20

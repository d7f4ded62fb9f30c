"""Automation bias end to end: a reviewer who rubber-stamps pre-labels through the router's
API is caught on planted gold by the quality service and paused by the router."""

from __future__ import annotations

import json
import random

import pytest

from shared import streams
from tests.helpers import client, configure, groups_idle, token

pytestmark = pytest.mark.integration


async def test_a_rubber_stamper_is_flagged_and_paused_while_an_honest_reviewer_goes_on(
        services, engine, redis, project):
    settings = services
    admin = await token(engine, "admin", "admin", project)
    await configure(settings, admin, project, routing={
        "mode": "prelabel", "gold_rate": 0.25, "gold_planted_share": 1.0})
    async with client(settings, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": f"gold-{i}", "label": "a", "wrong_prelabel": "b",
             "payload": {"text": f"example g{i}"}} for i in range(300)]})
        assert r.json()["stored"] == 300
    # The model says "a" everywhere; the truth is "a" for 85% of the items.
    rng = random.Random(5)
    truth = {f"n{i}": "a" if rng.random() < 0.85 else rng.choice("bc") for i in range(900)}
    for item, _ in truth.items():
        body = {"project": project, "item_id": item, "model_version": "m-bias",
                "probs": {"a": 0.6, "b": 0.3, "c": 0.1}, "payload": {"text": item}}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))

    stamper = await token(engine, "stamper", "labeler", project)
    honest = await token(engine, "honest", "labeler", project)
    paused_after = None
    async with client(settings, "router", stamper) as s, client(settings, "router", honest) as h:
        for n in range(400):
            r = await s.get(f"/v1/projects/{project}/tasks/next")
            if r.status_code == 423:
                paused_after = n
                break
            assert r.status_code == 200, r.text
            task = r.json()
            assert task["mode"] == "prelabel" and task["prelabel"]
            await s.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": task["prelabel"]})
            r = await h.get(f"/v1/projects/{project}/tasks/next")
            assert r.status_code == 200, f"the honest reviewer was stopped: {r.text}"
            task = r.json()
            answer = "a" if task["item_id"].startswith("gold-") else truth[task["item_id"]]
            await h.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": answer})
    assert paused_after is not None, "the rubber-stamper was never paused"
    print(f"rubber-stamper paused after {paused_after} tasks")

    async with client(settings, "quality", admin) as http:
        report = (await http.get(f"/v1/projects/{project}/quality")).json()
    assert report["labelers"]["stamper"]["flagged"]
    assert not report["labelers"]["honest"]["flagged"]
    assert report["labelers"]["stamper"]["gold_catch_rate"] == 0.0
    assert report["labelers"]["honest"]["gold_catch_rate"] == 1.0
    async with client(settings, "router", admin) as http:
        assert (await http.get(f"/v1/projects/{project}/queue")).json()["paused"] == ["stamper"]


async def test_cautious_honest_reviewers_are_not_paused_and_a_stamper_is(
        services, engine, redis, project):
    """The case the suite once missed: the model is wrong on 15% of items (gold included,
    recorded with its real prediction), 5% gold with half the pre-labels planted wrong,
    and honest reviewers of accuracy 0.8 who keep the pre-label whenever they are unsure.
    Through the real router and quality service none of them is paused in 600 tasks;
    a full rubber-stamper is."""
    settings = services
    admin = await token(engine, "admin", "admin", project)
    await configure(settings, admin, project, label_options=["a", "b", "c"], routing={
        "mode": "prelabel", "gold_rate": 0.05, "gold_planted_share": 0.5})
    rng = random.Random(11)
    labels = ["a", "b", "c"]

    def model_probs(truth: str) -> dict[str, float]:
        guess = truth if rng.random() < 0.85 else rng.choice([x for x in labels if x != truth])
        return {x: 0.6 if x == guess else 0.2 for x in labels}

    truth = {f"n{i}": rng.choice(labels) for i in range(3000)}
    gold = {f"g{i}": rng.choice(labels) for i in range(150)}
    async with client(settings, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": item, "label": answer, "payload": {"text": item},
             "prediction": {"model_version": "m-real", "probs": model_probs(answer)}}
            for item, answer in gold.items()]})
        assert r.json()["stored"] == len(gold)
    for item, answer in truth.items():
        body = {"project": project, "item_id": item, "model_version": "m-real",
                "probs": model_probs(answer), "payload": {"text": item}}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    answers = {**truth, **gold}

    async def work(name: str, sure: float, tasks: int) -> int | None:
        """Label ``tasks`` tasks; knowing the answer with probability ``sure``, else keeping
        the pre-label. Returns the task count at which the reviewer was paused."""
        bearer = await token(engine, name, "labeler", project)
        async with client(settings, "router", bearer) as http:
            for n in range(tasks):
                r = await http.get(f"/v1/projects/{project}/tasks/next")
                if r.status_code == 423:
                    return n
                assert r.status_code == 200, r.text
                task = r.json()
                label = answers[task["item_id"]] if rng.random() < sure else task["prelabel"]
                r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": label})
                assert r.status_code == 200, r.text
        return None

    for who in ("careful-1", "careful-2", "careful-3"):
        assert await work(who, 0.8, 600) is None, f"{who}, an honest reviewer, was paused"
    paused_after = await work("stamper", 0.0, 600)
    assert paused_after is not None, "the rubber-stamper was never paused"
    print(f"rubber-stamper paused after {paused_after} tasks")

"""Replicas: a second process of the scorer, router and labels service (its own HTTP
port, the same consumer groups) shares the work with the first, with no duplicate
effect; a reviewer's submit may land on another router than the one that handed the
task. The quality service stays one process (its monitors are sequential state per
project; README "Scaling out"), so it is not replicated here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from loopwise.processes import ServiceGroup
from services.labels.tables import label_events
from shared import streams
from shared.settings import Settings
from tests.conftest import PORT_BASE, ROOT, service_env
from tests.helpers import client, groups_idle, metrics_text, token, wait_for

pytestmark = pytest.mark.integration
REPLICATED = ("scorer", "router", "labels")
ROUNDS, PER_ROUND = 20, 100  # half auto-accepted, half to review


@pytest.fixture(scope="module")
def second_replicas(services: Settings) -> Iterator[Settings]:
    """The replicated services once more, on ports of their own (PORT_BASE + 11..13)."""
    other = services.model_copy(update={
        "scorer_port": PORT_BASE + 11, "router_port": PORT_BASE + 12,
        "labels_port": PORT_BASE + 13})
    group = ServiceGroup(other, services=REPLICATED, env=service_env(other),
                         log_dir=ROOT / "var" / "test-logs" / "replica-b")
    group.start(timeout=120)
    try:
        yield other
    finally:
        group.stop()


def _counted(text: str, name: str, **labels: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


def _prediction(project: str, n: int) -> dict[str, str]:
    confidence = 0.99 if n % 2 else 0.6
    return {"data": json.dumps({
        "project": project, "item_id": f"r-{n:05d}", "model_version": "m-rep",
        "probs": {"a": confidence, "b": round(1 - confidence, 2)}})}


async def test_two_replicas_share_the_work_and_a_submit_may_land_on_either_router(
        services, second_replicas, engine, redis, project):
    first, second = services, second_replicas
    total = ROUNDS * PER_ROUND
    for r in range(ROUNDS):  # in rounds, so that both replicas' consumers read some
        pipe = redis.pipeline(transaction=False)
        for i in range(PER_ROUND):
            pipe.xadd(streams.PREDICTIONS, _prediction(project, r * PER_ROUND + i))
        await pipe.execute()
        await asyncio.sleep(0.05)
    # A producer resending a few entries (same bytes, same derived event id) adds nothing.
    pipe = redis.pipeline(transaction=False)
    for n in range(0, 40):
        pipe.xadd(streams.PREDICTIONS, _prediction(project, n))
    await pipe.execute()
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER),
                      (streams.LABELS, streams.GROUP_LABELS), timeout=120)

    async def auto_labels() -> tuple[int, int]:
        async with engine.connect() as conn:
            row = (await conn.execute(
                select(func.count(), func.count(func.distinct(label_events.c.item_id)))
                .where(label_events.c.project == project,
                       label_events.c.source == "auto"))).one()
        return int(row[0]), int(row[1])

    assert await auto_labels() == (total // 2, total // 2)  # each once, none twice
    admin = await token(engine, "admin-rep", "admin", project)
    for replica in (first, second):  # both routers see the one shared queue
        async with client(replica, "router", admin) as http:
            r = await http.get(f"/v1/projects/{project}/queue")
            assert r.status_code == 200, r.text
            assert r.json()["depth"] == total // 2

    # Both replicas did part of the routing and of the storing, and together all of it.
    routed = [_counted(await metrics_text(s, "router"), "loopwise_routed_total",
                       project=project) for s in (first, second)]
    stored = [_counted(await metrics_text(s, "labels"), "loopwise_labels_stored_total",
                       project=project) for s in (first, second)]
    assert all(n > 0 for n in routed), routed
    assert all(n > 0 for n in stored), stored
    assert sum(stored) == total // 2
    assert sum(routed) >= total  # the resent entries are routed again and change nothing

    # A reviewer takes tasks from one router and submits to the other; a repeat of the
    # submit on the first is a duplicate; each submit is stored once.
    bearer = await token(engine, "rita", "labeler", project)
    handed: dict[str, str] = {}
    routers = (first, second)
    for k in range(12):
        take, give = routers[k % 2], routers[(k + 1) % 2]
        async with client(take, "router", bearer) as a, client(give, "router", bearer) as b:
            task = (await a.get(f"/v1/projects/{project}/tasks/next")).json()
            answer = {"label": "a", "duration_ms": 900}
            r = await b.post(f"/v1/tasks/{task['task_id']}/submit", json=answer)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "recorded"
            again = await a.post(f"/v1/tasks/{task['task_id']}/submit", json=answer)
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
            handed[task["task_id"]] = r.json()["event_id"]
    assert len(handed) == 12  # twelve different tasks: no task handed twice
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS), timeout=60)
    async with engine.connect() as conn:
        human = (await conn.execute(select(label_events.c.task_id, label_events.c.event_id)
                                    .where(label_events.c.project == project,
                                           label_events.c.source == "human"))).all()
    assert sorted((t, e) for t, e in human) == sorted(handed.items())

    # One replica of each service leads its service's own loops, the other does not.
    for name in REPLICATED:
        leaders = []
        for replica in (first, second):
            async with httpx.AsyncClient(base_url=replica.url_of(name), timeout=10) as http:
                leaders.append((await http.get("/readyz")).json()["leader"])
        assert sorted(leaders) == [False, True], (name, leaders)


async def test_a_model_trained_by_one_scorer_replica_is_served_by_the_other(
        services, second_replicas, engine, redis, project):
    """The scorer caches its model; the other replica picks up the newer one."""
    admin = await token(engine, "admin-rep", "admin", project)
    features = [[float(i % 2), float(i % 3), 1.0] for i in range(40)]
    async with client(services, "scorer", admin) as http:
        r = await http.post(f"/v1/projects/{project}/items", json={"items": [
            {"item_id": f"m{i}", "features": f} for i, f in enumerate(features)]})
        assert r.status_code in (200, 201, 202), r.text
    async with client(services, "labels", admin) as http:
        r = await http.post(f"/v1/projects/{project}/labels", json={"labels": [
            {"item_id": f"m{i}", "label": "odd" if i % 2 else "even", "source": "human",
             "mode": "blind",
             "labeler_id": "admin-rep"} for i in range(40)]})
        assert r.status_code in (200, 201), r.text
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))

    async def train() -> str:
        async with client(services, "scorer", admin) as http:
            r = await http.post(f"/v1/projects/{project}/train")
            assert r.status_code == 200, r.text
            return r.json()["version"]

    async def served_by_second() -> str:
        async with client(second_replicas, "scorer", admin) as http:
            r = await http.post(f"/v1/projects/{project}/predict",
                                json={"features": [features[1]]})
            assert r.status_code == 200, r.text
            return r.text

    await train()
    cached = json.loads(await served_by_second())["model_version"]  # the second caches it
    await train()  # on the first replica (a retrain the labels started may add one more)

    async def serves_the_newest() -> bool:
        async with client(services, "scorer", admin) as http:
            listed = (await http.get(f"/v1/projects/{project}/models")).json()["models"]
        newest = listed[-1]["version"]
        return newest != cached and json.loads(await served_by_second())[
            "model_version"] == newest

    await wait_for(serves_the_newest, 30, "the second scorer replica to serve the newest model")

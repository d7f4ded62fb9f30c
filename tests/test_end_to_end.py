"""The whole path on real Redis, PostgreSQL and the four service processes.

1,000 predictions arrive through the real ``redis-cli`` binary in the
contract's wire format; each must end as exactly one auto label or one
review task; reviewing over HTTP stores attributed labels; 20 malformed
entries land in the dead-letter stream with reasons; everything stays healthy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import numpy as np
import pytest
from sqlalchemy import select

from services.labels.tables import label_events
from services.router.queue import project_key, task_key_of
from shared import streams
from shared.redisconn import plain_url
from shared.settings import Settings
from tests.helpers import client, configure, groups_idle, metrics_text, token

pytestmark = pytest.mark.integration
N = 1000
THRESHOLD = 0.9  # the services' default auto-accept threshold


def _predictions(project: str) -> tuple[list[str], set[str]]:
    rng = np.random.default_rng(7)
    lines, confident = [], set()
    for i in range(N):
        k = int(rng.integers(2, 5))
        alpha = np.full(k, 0.3 if i % 2 else 3.0)
        probs = rng.dirichlet(alpha)
        probs = {str(c): float(p) for c, p in enumerate(probs)}
        probs[str(k - 1)] = 1.0 - sum(v for c, v in probs.items() if c != str(k - 1))
        body = {"project": project, "item_id": f"e2e-{i:04d}", "model_version": "m-e2e",
                "probs": probs, "payload": {"text": f"example {i}"}}
        if max(probs.values()) >= THRESHOLD:
            confident.add(body["item_id"])
        lines.append(f"XADD {streams.PREDICTIONS} * data '{json.dumps(body)}'")
    return lines, confident


def _malformed(project: str) -> list[str]:
    bad = [f"XADD {streams.PREDICTIONS} * data 'not json {project} {i}'" for i in range(5)]
    bad += [f"XADD {streams.PREDICTIONS} * payload '{project} has no data field {i}'"
            for i in range(3)]
    for i in range(4):
        body = {"project": project, "item_id": f"bad-{i}", "model_version": "m"}
        bad.append(f"XADD {streams.PREDICTIONS} * data '{json.dumps(body)}'")  # no probs
    for i in range(4):
        body = {"project": project, "item_id": f"sum-{i}", "model_version": "m",
                "probs": {"a": 0.9, "b": 0.9}}
        bad.append(f"XADD {streams.PREDICTIONS} * data '{json.dumps(body)}'")
    for i in range(2):
        body = {"project": project, "item_id": f"ver-{i}", "model_version": "m",
                "probs": {"a": 1.0}, "schema_version": 42}
        bad.append(f"XADD {streams.PREDICTIONS} * data '{json.dumps(body)}'")
    for i in range(2):
        body = {"project": project, "item_id": ["not", "a", "string", i], "model_version": "m",
                "probs": {"a": 1.0}}
        bad.append(f"XADD {streams.PREDICTIONS} * data '{json.dumps(body)}'")
    assert len(bad) == 20
    return bad


def _cli_target(settings) -> list[str]:
    """redis-cli's arguments for the suite's Redis: ``-c`` (follow redirects) on a cluster."""
    if not settings.cluster:
        return ["-u", settings.redis_url]
    host, _, port = plain_url(settings.redis_url).removeprefix("redis://").partition(":")
    return ["-c", "-h", host, "-p", port.split("/")[0]]


async def test_predictions_from_redis_cli_are_routed_reviewed_stored_and_bad_ones_deadlettered(
    services, engine, redis, project, tmp_path
):
    settings = services
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "the real redis-cli binary is part of this test"
    lines, confident = _predictions(project)
    bad = _malformed(project)
    mixed = lines[:500] + bad[:10] + lines[500:] + bad[10:]
    dl_before = await redis.xlen(streams.DEADLETTER)
    script = tmp_path / "xadd.txt"
    script.write_text("\n".join(mixed) + "\n")
    with script.open() as stdin:
        done = await asyncio.to_thread(
            subprocess.run, [redis_cli, *_cli_target(settings)], stdin=stdin,
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ERR" not in done.stdout

    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER),
                      (streams.PREDICTIONS, streams.GROUP_SCORER),
                      (streams.LABELS, streams.GROUP_LABELS))

    # Every prediction is exactly one auto label or one review task.
    async with engine.connect() as conn:
        auto_rows = (await conn.execute(
            select(label_events.c.item_id).where(label_events.c.project == project,
                                                 label_events.c.source == "auto"))).scalars().all()
    queue_key = project_key("queue", project, Settings().shards)
    task_ids = [t.decode() for t in await redis.zrange(queue_key, 0, -1)]
    task_items = [(await redis.hget(task_key_of(t), "item_id")).decode()
                  for t in task_ids]
    assert len(auto_rows) == len(set(auto_rows))
    assert len(task_items) == len(set(task_items))
    assert set(auto_rows).isdisjoint(task_items)
    assert len(auto_rows) + len(task_items) == N
    assert set(auto_rows) == confident

    # Reviewing over HTTP stores attributed labels in PostgreSQL.
    alice = await token(engine, "alice", "labeler", project)
    bob = await token(engine, "bob", "labeler", project)
    submitted: dict[str, str] = {}
    for who, bearer in (("alice", alice), ("bob", bob)):
        async with client(settings, "router", bearer) as http:
            for _ in range(10):
                task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
                assert "probs" not in task and "model_label" not in json.dumps(task)
                label = task["options"][0]
                r = await http.post(f"/v1/tasks/{task['task_id']}/submit",
                                    json={"label": label, "duration_ms": 1500,
                                          "guideline_version": "g-7"})
                assert r.status_code == 200, r.text
                assert r.json()["reveal"]["model_version"] == "m-e2e"
                submitted[task["task_id"]] = who
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    async with engine.connect() as conn:
        human = (await conn.execute(select(label_events).where(
            label_events.c.project == project, label_events.c.source == "human"))).all()
    assert len(human) == 20
    for row in human:
        assert submitted[row.task_id] == row.labeler_id
        assert row.mode == "blind" and row.model_version == "m-e2e"
        # measured by the router from lease to submit, whatever the client says
        assert row.guideline_version == "g-7" and row.duration_ms is not None
        assert row.duration_ms >= 0
        assert row.created_at is not None and row.shown_prelabel is None

    # The 20 malformed entries are dead letters with reasons and their original fields, from
    # each group that reads the stream (the router routes, the scorer keeps item payloads).
    entries = await redis.xrange(streams.DEADLETTER)
    ours = []
    for _, fields in entries[dl_before:]:
        letter = json.loads(fields[b"data"])
        if project in json.dumps(letter["fields"]):
            ours.append(letter)
    assert sorted(letter["group"] for letter in ours) == (
        [streams.GROUP_ROUTER] * 20 + [streams.GROUP_SCORER] * 20)
    assert all(letter["reason"] and letter["stream"] == streams.PREDICTIONS for letter in ours)
    reasons = " | ".join(letter["reason"] for letter in ours)
    for expected in ("not JSON", "no 'data' field", "probs", "sum to", "schema_version",
                     "item_id"):
        assert expected in reasons

    # Still healthy, and the metrics say what happened.
    for name in ("scorer", "router", "labels", "quality"):
        async with client(settings, name) as http:
            assert (await http.get("/healthz")).status_code == 200
    text = await metrics_text(settings, "router")
    assert f'loopwise_routed_total{{decision="auto",project="{project}"}}' in text
    assert "loopwise_events_deadlettered_total" in text


async def test_every_v1_route_needs_a_token_for_its_project(services, engine, project):
    settings = services
    mine = await token(engine, "carol", "reviewer", project)
    root = await token(engine, f"root-{project}", "admin", "*")
    routes = [("router", "GET", f"/v1/projects/{project}/tasks/next"),
              ("labels", "GET", f"/v1/projects/{project}/labels"),
              ("quality", "GET", f"/v1/projects/{project}/quality"),
              ("scorer", "GET", f"/v1/projects/{project}/models")]
    for service, method, path in routes:
        async with client(settings, service) as http:
            r = await http.request(method, path)
            assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
        async with client(settings, service, "lw_wrong") as http:
            r = await http.request(method, path)
            assert r.status_code == 401 and "invalid" in r.json()["detail"]
        async with client(settings, service, mine) as http:
            other = path.replace(project, project + "-other")
            r = await http.request(method, other)
            assert r.status_code == 403 and "not valid for this project" in r.json()["detail"]
            # authorized, but nobody declared the project or sent it data: only now a 404
            r = await http.request(method, path)
            assert r.status_code == 404 and "unknown project" in r.json()["detail"], r.text
    await configure(settings, root, project, label_options=["a", "b"])
    for service, method, path in routes:
        async with client(settings, service, mine) as http:
            assert (await http.request(method, path)).status_code in (200, 204)
            r = await http.request(method, path.replace(project, project + "-other"))
            assert r.status_code == 403  # declared or not, another project is a 403
    async with client(settings, "scorer", mine) as http:  # a reviewer may not train
        r = await http.post(f"/v1/projects/{project}/train")
        assert r.status_code == 403 and "admin" in r.json()["detail"]

"""The seams between the services, tried as a user and a hostile client would: every label
reaches every consumer whatever its door, one label gets one answer everywhere, an action
records the same audit whichever door it came through, settings have one home, every
label the platform makes can be reverted by its batch. Against the running services."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.labels.tables import audit_log, label_events
from services.quality.tables import quality_label_votes
from shared import streams
from shared.auth import create_token
from tests.conftest import ROOT, service_env
from tests.helpers import client, configure, groups_idle, stream_entries, token, wait_for

pytestmark = pytest.mark.integration
FIXTURES = ROOT.parent / "shared" / "fixtures" / "label-studio"
CONSUMERS = ((streams.LABELS, streams.GROUP_LABELS), (streams.LABELS, streams.GROUP_QUALITY),
             (streams.LABELS, streams.GROUP_SCORER))


async def _predict(redis, project: str, items: dict[str, dict[str, float]], **extra: Any) -> None:
    for item_id, probs in items.items():
        body = {"project": project, "item_id": item_id, "model_version": "m1", "probs": probs,
                "payload": {"text": item_id}, **extra}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))


async def _stream_labels(redis, project: str) -> list[dict[str, Any]]:
    """The label events of ``project`` on loopwise:labels, in order."""
    out = []
    for _, fields in await stream_entries(redis, streams.LABELS):
        event = json.loads(fields[b"data"])
        if event.get("project") == project:
            out.append(event)
    return out


async def _stored(engine, project: str, **where: Any) -> list[Any]:
    query = select(label_events).where(label_events.c.project == project)
    for k, v in where.items():
        query = query.where(label_events.c[k] == v)
    async with engine.connect() as conn:
        return list((await conn.execute(query.order_by(label_events.c.created_at))).all())


async def _votes(engine, project: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(quality_label_votes).where(
            quality_label_votes.c.project == project))).all())


async def _dead_letters(redis, project: str, group: str) -> list[dict[str, Any]]:
    out = []
    for _, fields in await redis.xrange(streams.DEADLETTER):
        letter = json.loads(fields[b"data"])
        if letter["group"] == group and project in json.dumps(letter["fields"]):
            out.append(letter)
    return out


async def test_labels_from_every_door_reach_every_consumer(services, engine, redis, project):
    """HTTP-posted and Label Studio-imported labels go onto loopwise:labels: the quality
    service counts them as votes and the scorer sees them, as it does the router's."""
    admin = await token(engine, "ada", "admin", project)
    await configure(services, admin, project, label_options=["Positive", "Negative"])
    async with client(services, "labels", admin) as http:
        r = await http.post(f"/v1/projects/{project}/imports/labelstudio",
                            content=(FIXTURES / "choices-with-history.json").read_bytes())
        assert r.status_code == 200 and r.json()["inserted"] >= 1, r.text
        item = (await _stored(engine, project))[0].item_id
        r = await http.post(f"/v1/projects/{project}/labels", json={"labels": [
            {"item_id": item, "label": "Negative", "source": "human", "mode": "blind"}]})
        assert r.status_code == 201, r.text
        posted = r.json()["event_ids"][0]
    await groups_idle(redis, *CONSUMERS)
    # The consensus the quality service may publish meanwhile (two votes on one item) is
    # its own label, not one of the doors': left out on both sides.
    on_stream = [e for e in await _stream_labels(redis, project) if e["source"] != "consensus"]
    assert {e["source"] for e in on_stream} == {"import", "human"}
    assert posted in {e["event_id"] for e in on_stream}
    votes = [v for v in await _votes(engine, project) if v.source != "consensus"]
    assert {v.event_id for v in votes} == {e["event_id"] for e in on_stream}
    # ... and a label given directly carries a batch, so it can be reverted as one.
    direct = next(e for e in on_stream if e["event_id"] == posted)
    assert direct["batch_id"].startswith("direct:ada:")


async def test_a_label_outside_the_schema_gets_one_answer_everywhere(services, engine, redis,
                                                                      project):
    """The router refuses it at submit (422, nothing published); one sent straight onto the
    stream is dead-lettered by the labels and quality services and counted by neither."""
    admin = await token(engine, "ada", "admin", project)
    await configure(services, admin, project, label_options=["cat", "dog"],
                    routing={"gold_rate": 0.0})
    # The model knows a class the schema does not: "emu" is offered, and must be refused.
    await _predict(redis, project, {"x1": {"cat": 0.5, "emu": 0.5}})
    alice = await token(engine, "alice", "labeler", project)
    async with client(services, "router", alice) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "emu"})
        assert r.status_code == 422 and "'emu' is not in project" in r.text
        for bad in ("cat\x00", "c" * 300):
            r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": bad})
            assert r.status_code == 422, r.text
        r = await http.post(f"/v1/tasks/{task['task_id']}/submit",
                            json={"label": "cat", "guideline_version": "g" * 65})
        assert r.status_code == 422
        r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "cat"})
        assert r.status_code == 200 and r.json()["status"] == "recorded"
    stray = {"project": project, "item_id": "x1", "label": "emu", "labeler_id": "mallory",
             "source": "human", "mode": "blind"}
    await redis.xadd(streams.LABELS, {"data": json.dumps(stray)})
    await groups_idle(redis, *CONSUMERS)
    assert [e["label"] for e in await _stream_labels(redis, project)] == ["cat", "emu"]
    assert [r.label for r in await _stored(engine, project)] == ["cat"]
    assert [v.label for v in await _votes(engine, project)] == ["cat"]
    for group in (streams.GROUP_LABELS, streams.GROUP_QUALITY):
        letters = await _dead_letters(redis, project, group)
        assert len(letters) == 1 and "'emu' is not in project" in letters[0]["reason"], group


async def test_a_revision_records_what_its_submit_records(services, engine, redis, project):
    admin = await token(engine, "ada", "admin", project)
    await configure(services, admin, project,
                    routing={"gold_rate": 0.0, "guideline_version": "g7"})
    await _predict(redis, project, {"r1": {"a": 0.6, "b": 0.4}})
    bob = await token(engine, "bob", "labeler", project)
    async with client(services, "router", bob) as http:
        leased = time.time()
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        await http.post(f"/v1/tasks/{task['task_id']}/submit",
                        json={"label": "b", "duration_ms": 10**9})
        took_ms = (time.time() - leased) * 1000
        r = await http.post(f"/v1/tasks/{task['task_id']}/revise",
                            json={"label": "a", "duration_ms": 400})
        assert r.status_code == 200, r.text
    await groups_idle(redis, *CONSUMERS)
    first, revised = await _stored(engine, project, source="human")
    for field in ("guideline_version", "mode", "model_version", "model_label", "task_id",
                  "batch_id", "labeler_id"):
        assert getattr(revised, field) == getattr(first, field), field
    assert first.guideline_version == "g7" and first.batch_id.startswith("review:bob:")
    # The submit's duration is the router's, lease to submit (not the client's claim);
    # a revision has no lease to measure from and keeps what the client says.
    assert first.duration_ms is not None and 0 <= first.duration_ms <= took_ms + 1
    assert revised.duration_ms == 400
    assert revised.revised_after_reveal and revised.supersedes == first.event_id


async def test_every_label_the_router_makes_has_a_batch_that_can_be_reverted(
        services, engine, redis, project):
    admin = await token(engine, "ada", "admin", project)
    await configure(services, admin, project, routing={"gold_rate": 0.0})
    await _predict(redis, project, {f"sure-{i}": {"a": 0.99, "b": 0.01} for i in range(5)})
    await groups_idle(redis, *CONSUMERS)
    auto = await _stored(engine, project, source="auto")
    assert len(auto) == 5 and all(r.batch_id and r.batch_id.startswith("route:") for r in auto)
    batch = auto[0].batch_id
    async with client(services, "labels", admin) as http:
        r = await http.post(f"/v1/projects/{project}/reverts", json={"batch_id": batch})
        assert r.status_code == 200, r.text
        assert r.json()["events"] == sum(row.batch_id == batch for row in auto)
        left = (await http.get(f"/v1/projects/{project}/labels")).json()["labels"]
    assert all(row["batch_id"] != batch for row in left)


async def test_an_action_records_the_same_audit_through_http_and_the_cli(services, engine,
                                                                          project):
    """Token revoke and user disable: the same audit fields whichever door they came
    through (only the client differs), and the CLI exits non-zero for an unknown id."""
    root = await create_token(engine, "root", "admin", "*")
    victims = [await create_token(engine, f"v{i}-{project}", "labeler", project)
               for i in range(2)]
    ids = []
    async with client(services, "labels", root) as http:
        listed = (await http.get("/v1/tokens")).json()["tokens"]
        for i in range(2):
            ids.append(max(t["id"] for t in listed if t["user_id"] == f"v{i}-{project}"))
        r = await http.post(f"/v1/tokens/{ids[0]}/revoke")
        assert r.status_code == 200, r.text
        r = await http.post(f"/v1/users/v0-{project}/disable")
        assert r.status_code == 200, r.text
    env = {**service_env(services), "PATH": str(Path(sys.executable).parent)}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "loopwise", *args],
                                       env=env, capture_output=True, text=True, timeout=60)

    run = await cli("token", "revoke", str(ids[1]))
    assert run.returncode == 0, run.stderr
    run = await cli("users", "disable", f"v1-{project}")
    assert run.returncode == 0, run.stderr
    unknown = await cli("token", "revoke", "999999999")
    assert unknown.returncode != 0 and "no token" in unknown.stdout + unknown.stderr
    async with engine.connect() as conn:
        rows = (await conn.execute(select(audit_log).where(
            audit_log.c.target.in_([str(i) for i in ids] + [f"v0-{project}", f"v1-{project}"]))
            .order_by(audit_log.c.id))).all()
    by_action: dict[str, list[Any]] = {}
    for row in rows:
        by_action.setdefault(row.action, []).append(row)
    for action in ("token.revoke", "user.disable"):
        http_row, cli_row = by_action[action]
        assert http_row.client.startswith("http:") and cli_row.client.startswith("cli@")
        assert http_row.project == cli_row.project
        assert http_row.detail.keys() == cli_row.detail.keys(), action
    assert by_action["token.revoke"][1].detail["user_id"] == f"v1-{project}"
    assert by_action["token.revoke"][1].project == project
    for victim in victims:  # neither token works any more
        async with client(services, "router", victim) as http:
            async def refused(http=http) -> bool:
                r = await http.get(f"/v1/projects/{project}/tasks/next")
                return r.status_code == 401
            await wait_for(refused, 10, "the revoked token to be refused")


async def test_project_settings_have_one_home_that_every_service_applies(services, engine,
                                                                          redis, project):
    admin = await token(engine, "ada", "admin", project)
    body = await configure(
        services, admin, project, label_options=["1", "2", "3"], sensitive=False,
        routing={"auto_accept_threshold": 0.7, "overlap": 2},
        selection={"strategy": "entropy", "select_budget": 9},
        quality={"level": "ordinal", "categories": ["1", "2", "3"], "auto_pause": False})
    assert body["routing"]["overlap"] == 2 and body["selection"]["strategy"] == "entropy"
    async with client(services, "router", admin) as http:
        policy = (await http.get(f"/v1/projects/{project}/policy")).json()
        assert (policy["auto_accept_threshold"], policy["overlap"]) == (0.7, 2)
        assert policy["threshold_in_force"] == 0.7
    async with client(services, "scorer", admin) as http:
        config = (await http.get(f"/v1/projects/{project}/config")).json()
        assert (config["strategy"], config["select_budget"]) == ("entropy", 9)
        assert (await http.put(f"/v1/projects/{project}/config",
                               json={"strategy": "margin"})).status_code == 405
    async with client(services, "quality", admin) as http:
        quality = (await http.get(f"/v1/projects/{project}/quality")).json()
        assert quality["settings"]["level"] == "ordinal"
        assert quality["settings"]["categories"] == ["1", "2", "3"]
    # A change of one section keeps the others; an older revision never undoes a newer one.
    await configure(services, admin, project, routing={"overlap": 3})
    async with client(services, "labels", admin) as http:
        now = (await http.get(f"/v1/projects/{project}")).json()
    assert now["routing"]["overlap"] == 3 and now["routing"]["auto_accept_threshold"] == 0.7
    assert now["selection"]["strategy"] == "entropy" and now["quality"]["level"] == "ordinal"
    assert now["revision"] == 2
    stale = {"project": project, "revision": 1, "settings": {"routing": {"overlap": 1}}}
    await redis.xadd(streams.PROJECTS, {"data": json.dumps(stale)})
    await groups_idle(redis, (streams.PROJECTS, streams.GROUP_ROUTER))
    await asyncio.sleep(2.5)  # past the router's settings cache
    async with client(services, "router", admin) as http:
        assert (await http.get(f"/v1/projects/{project}/policy")).json()["overlap"] == 3


async def test_values_the_store_cannot_hold_never_pass_the_router(services, engine, redis,
                                                                  project):
    """A NUL byte, an over-long id or label, a NaN priority: dead-lettered at the router's
    door with the reason; the other predictions of the batch are routed."""
    await configure(services, await token(engine, "ada", "admin", project), project,
                    routing={"gold_rate": 0.0})
    bad = [
        {"item_id": "nul\x00", "probs": {"a": 0.5, "b": 0.5}},
        {"item_id": "i" * 300, "probs": {"a": 0.5, "b": 0.5}},
        {"item_id": "long-label", "probs": {"a" * 300: 0.5, "b": 0.5}},
        {"item_id": "nan", "probs": {"a": 0.5, "b": 0.5}, "priority": float("nan")},
    ]
    for entry in [*bad, {"item_id": "fine", "probs": {"a": 0.5, "b": 0.5}}]:
        body = {"project": project, "model_version": "m1", **entry}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    letters = await _dead_letters(redis, project, streams.GROUP_ROUTER)
    assert len(letters) == len(bad), [x["reason"] for x in letters]
    async with client(services, "router", await token(engine, "al", "labeler", project)) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        assert task["item_id"] == "fine"
        # the only task routed: once answered (skipped), nothing else waits
        assert (await http.post(f"/v1/tasks/{task['task_id']}/skip")).status_code == 200
        assert (await http.get(f"/v1/projects/{project}/tasks/next")).status_code == 204

"""Access that ends ends everywhere within 2 s, idle or busy: a revoked, expired or
disabled token, a removed membership, a lowered role; ``*`` is not a project; a skipped
task is given up. Against the four running services, over HTTP."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from shared import streams
from shared.auth import create_token, hash_token
from shared.tables import api_tokens, project_members, users
from tests.helpers import client, configure, groups_idle, token

pytestmark = pytest.mark.integration
WINDOW = 2.0  # the README's promise
# One reviewer route of each service (what a labeler may reach: tests/test_route_roles.py).
ROUTES = {"scorer": "/v1/projects/{p}/models", "router": "/v1/projects/{p}/queue",
          "labels": "/v1/projects/{p}/labels", "quality": "/v1/projects/{p}/quality"}


async def _statuses(settings, bearer: str, project: str) -> dict[str, int]:
    out = {}
    for service, path in ROUTES.items():
        async with client(settings, service, bearer) as http:
            out[service] = (await http.get(path.format(p=project))).status_code
    return out


async def _ended(engine, how: str, bearer: str, user: str, project: str) -> None:
    """End the token's access the way ``how`` says, in the database (no process is told)."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        if how == "revoked":
            await conn.execute(update(api_tokens).where(
                api_tokens.c.token_hash == hash_token(bearer)).values(revoked_at=now))
        elif how == "expired":
            await conn.execute(update(api_tokens).where(
                api_tokens.c.token_hash == hash_token(bearer)).values(expires_at=now))
        elif how == "disabled":
            await conn.execute(update(users).where(users.c.user_id == user)
                               .values(disabled_at=now))
        else:  # the membership of a '*' token's user is removed
            await conn.execute(project_members.delete().where(
                project_members.c.project == project, project_members.c.user_id == user))


@pytest.mark.parametrize("how", ["revoked", "expired", "disabled", "removed"])
async def test_ended_access_is_refused_by_every_service_within_two_seconds_even_when_idle(
        services, engine, project, how):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1})  # declared: not a 404
    user = f"u-{how}-{project}"
    if how == "removed":  # a '*' token reaches the project through the membership
        await create_token(engine, user, "reviewer", project)
        bearer = await create_token(engine, user, "reviewer", "*")
    else:
        bearer = await create_token(engine, user, "reviewer", project)
    assert set((await _statuses(services, bearer, project)).values()) == {200}
    await asyncio.sleep(3.0)  # idle: every cached lookup is older than the window
    await _ended(engine, how, bearer, user, project)
    await asyncio.sleep(WINDOW)
    assert await _statuses(services, bearer, project) == {
        s: 401 if how != "removed" else 403 for s in ROUTES}


async def test_the_membership_role_decides_what_a_token_may_do(services, engine, project):
    bearer = await create_token(engine, f"boss-{project}", "admin", project)
    gold = {"items": [{"item_id": "g1", "label": "a", "payload": {"text": "g"}}]}
    async with client(services, "router", bearer) as http:
        assert (await http.post(f"/v1/projects/{project}/gold", json=gold)).status_code == 200
    async with engine.begin() as conn:  # the project's admins make them a labeler
        await conn.execute(update(project_members).where(
            project_members.c.project == project,
            project_members.c.user_id == f"boss-{project}").values(role="labeler"))
    await asyncio.sleep(WINDOW)
    async with client(services, "router", bearer) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json=gold)
        assert r.status_code == 403 and "'labeler'" in r.json()["detail"]
        r = await http.get(f"/v1/projects/{project}/queue")
        assert r.status_code == 403  # the reviewer's part of the API is gone too
    async with client(services, "labels", bearer) as http:
        r = await http.patch(f"/v1/projects/{project}", json={"sensitive": True})
        assert r.status_code == 403
    # A token of a higher role for the project is that grant: the membership follows.
    again = await create_token(engine, f"boss-{project}", "admin", project)
    async with client(services, "router", again) as http:
        assert (await http.post(f"/v1/projects/{project}/gold", json=gold)).status_code == 200
    async with engine.connect() as conn:
        role = (await conn.execute(select(project_members.c.role).where(
            project_members.c.project == project,
            project_members.c.user_id == f"boss-{project}"))).scalar_one()
    assert role == "admin"


async def test_star_is_not_a_project(services, engine):
    root = await create_token(engine, "root", "admin", "*")
    for service, path in ROUTES.items():
        for name in ("*", "%2A"):
            async with client(services, service, root) as http:
                r = await http.get(path.format(p=name))
                assert r.status_code == 422 and "not a project name" in r.text, (service, name)
    async with client(services, "labels", root) as http:
        r = await http.patch("/v1/projects/*", json={"sensitive": True})
        assert r.status_code == 422


async def test_a_skipped_task_is_given_up(services, engine, redis, project):
    admin = await token(engine, "ada", "admin", project)
    await configure(services, admin, project, routing={"gold_rate": 0.0})
    body = {"project": project, "item_id": "s1", "model_version": "m1",
            "probs": {"a": 0.5, "b": 0.5}}
    await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    sam = await token(engine, "sam", "labeler", project)
    async with client(services, "router", sam) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        r = await http.post(f"/v1/tasks/{task['task_id']}/skip")
        assert r.status_code == 200 and r.json()["status"] == "skipped"
        r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "a"})
        assert r.status_code == 409 and "skipped" in r.json()["detail"]
        # ... also from a process that never handed it out (no cached copy of the task).
        r = await http.post(f"/v1/tasks/{task['task_id']}/revise", json={"label": "a"})
        assert r.status_code == 409
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    async with client(services, "labels", admin) as http:
        labels = (await http.get(f"/v1/projects/{project}/labels")).json()["labels"]
    assert labels == []

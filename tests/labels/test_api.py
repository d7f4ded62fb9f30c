"""The labels service over HTTP: the authorization matrix, the audit log, Label Studio
round trips, streamed exports and bad input, against real PostgreSQL and Redis.

The app runs in-process (its real lifespan: engine, bus, auth) behind httpx's
ASGI transport, so hundreds of requests stay quick.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.labels.app import create_app
from services.labels.labelstudio import parse_export
from shared import streams
from shared.auth import NOT_YOUR_PROJECT, create_token
from shared.bus import Delivery
from shared.events import LabelEvent
from tests.helpers import wait_for

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "label-studio"
ROLES = ("labeler", "reviewer", "admin", "service")
OPTIONS = ["cat", "dog", "Positive", "Negative"]


@pytest.fixture
async def app(services) -> AsyncIterator[Any]:
    """The labels app in-process, beside the running services (it asks the scorer
    whether an item exists and for payloads to export)."""
    application = create_app(services)
    async with application.router.lifespan_context(application):
        yield application


def http(app, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers["User-Agent"] = "loopwise-tests"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://labels",
        headers=headers,
        timeout=30,
    )


@pytest.fixture
async def world(app, engine, project) -> dict[str, Any]:
    """Two projects, one sensitive, each with a labeled item and a version; tokens for all."""
    root = await create_token(engine, "root", "admin", "*")
    projects = {"plain": project, "sensitive": project + "-s"}
    tokens: dict[tuple[str, str], str] = {}
    async with http(app, root) as client:
        for kind, name in projects.items():
            r = await client.put(
                f"/v1/projects/{name}",
                json={"label_options": OPTIONS, "sensitive": kind == "sensitive"},
            )
            assert r.status_code == 200, r.text
            r = await client.post(
                f"/v1/projects/{name}/imports/labelstudio",
                content=(FIXTURES / "choices-with-history.json").read_bytes(),
            )
            assert r.status_code == 200 and r.json()["inserted"] == 1, r.text
            r = await client.post(f"/v1/projects/{name}/versions", json={"message": "v1"})
            assert r.status_code == 201, r.text
            r = await client.post(
                f"/v1/projects/{name}/labels",
                json={
                    "labels": [
                        {"item_id": "6141", "label": "cat", "source": "human", "mode": "blind"}
                    ]
                },
            )
            assert r.status_code == 201, r.text
            r = await client.post(f"/v1/projects/{name}/reverts", json={"labeler_id": "root"})
            assert r.json()["version"]["number"] == 2, r.text
            for role in ROLES:
                tokens[(name, role)] = await create_token(engine, f"{role}-{name}", role, name)
    return {"root": root, "projects": projects, "tokens": tokens}


def routes(project: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Every project route: (method, path, capability it needs, request options)."""
    p = f"/v1/projects/{project}"
    ls_export = (FIXTURES / "choices-with-history.json").read_bytes()
    label = {"item_id": "6141", "label": "dog", "source": "human", "mode": "blind"}
    return [
        ("GET", f"{p}/labels", "labeler", {}),
        ("POST", f"{p}/labels", "reviewer", {"json": {"labels": [label]}}),
        ("GET", p, "labeler", {}),
        ("PUT", p, "admin", {"json": {"label_options": OPTIONS, "sensitive": "-s" in project}}),
        ("GET", f"{p}/members", "admin", {}),
        ("PUT", f"{p}/members/zed", "admin", {"json": {"role": "labeler"}}),
        ("GET", f"{p}/versions", "reviewer", {}),
        ("POST", f"{p}/versions", "reviewer", {"json": {"message": "m"}}),
        ("GET", f"{p}/versions/1", "reviewer", {}),
        ("GET", f"{p}/diff?from=1", "reviewer", {}),
        ("POST", f"{p}/reverts", "admin", {"json": {"labeler_id": "nobody", "dry_run": True}}),
        ("POST", f"{p}/versions/2/revert", "admin", {"json": {"dry_run": True}}),
        ("GET", f"{p}/items/6141/trace", "reviewer", {}),
        ("GET", f"{p}/export?format=csv", "reviewer", {}),
        ("POST", f"{p}/imports/labelstudio?dry_run=true", "reviewer", {"content": ls_export}),
        ("GET", f"/v1/audit?project={project}", "admin", {}),
    ]


CAPABLE = {
    "labeler": {"labeler"},
    "reviewer": {"labeler", "reviewer"},
    "admin": {"labeler", "reviewer", "admin"},
    "service": {"labeler", "reviewer", "admin"},
}


async def test_authorization_matrix_every_route_role_project_and_sensitivity(app, world):
    projects = world["projects"]
    checked = 0
    for own_kind, own in projects.items():
        other = projects["sensitive" if own_kind == "plain" else "plain"]
        for target in (own, other, own + "-ghost"):
            for method, path, capability, options in routes(target):
                async with http(app) as anonymous:
                    r = await anonymous.request(method, path, **options)
                    assert r.status_code == 401, (method, path, r.text)
                    assert "missing bearer token" in r.json()["detail"]
                for role in ROLES:
                    async with http(app, world["tokens"][(own, role)]) as client:
                        r = await client.request(method, path, **options)
                    where = (own_kind, target == own, role, method, path)
                    if target != own:
                        # the same words for another real project and one that does not exist
                        assert r.status_code == 403, (where, r.text)
                        assert r.json()["detail"] == NOT_YOUR_PROJECT, where
                    elif capability in CAPABLE[role]:
                        assert r.status_code < 300, (where, r.status_code, r.text)
                    else:
                        assert r.status_code == 403, (where, r.text)
                        assert f"needs '{capability}'" in r.json()["detail"], where
                    checked += 1
            if target != own + "-ghost":
                for method, path, _, options in routes(target):  # a global admin reaches all
                    async with http(app, world["root"]) as client:
                        r = await client.request(method, path, **options)
                    assert r.status_code < 300, (method, path, r.text)
    assert checked == 2 * 3 * len(routes("x")) * len(ROLES)


async def test_global_routes_need_a_global_admin(app, world):
    plain = world["projects"]["plain"]
    admin = world["tokens"][(plain, "admin")]
    async with http(app, admin) as client:
        for method, path, body in (
            ("GET", "/v1/users", None),
            ("POST", "/v1/users", {"user_id": "x"}),
            ("POST", "/v1/users/x/disable", None),
            ("GET", "/v1/audit", None),
            ("POST", "/v1/tokens", {"user_id": "x", "role": "admin", "project": "*"}),
        ):
            r = await client.request(method, path, json=body)
            assert r.status_code == 403 and "for every project" in r.json()["detail"], path
        # a project admin may issue tokens for its own project only
        r = await client.post(
            "/v1/tokens", json={"user_id": "newbie", "role": "labeler", "project": plain}
        )
        assert r.status_code == 201 and r.json()["token"].startswith("lw_")
        r = await client.post(
            "/v1/tokens",
            json={
                "user_id": "newbie",
                "role": "labeler",
                "project": world["projects"]["sensitive"],
            },
        )
        assert r.status_code == 403 and r.json()["detail"] == NOT_YOUR_PROJECT


async def test_a_token_needs_its_project_to_exist_and_the_refusal_comes_after_the_403(
        app, world):
    """401, then 403 for a project the caller may not make tokens for (whether or not it
    exists), then 404 for an undeclared one: a token for a typo is refused, not issued."""
    plain = world["projects"]["plain"]
    ghost = {"user_id": "newbie", "role": "labeler", "project": plain + "-ghost"}
    async with http(app) as anonymous:
        assert (await anonymous.post("/v1/tokens", json=ghost)).status_code == 401
    async with http(app, world["tokens"][(plain, "admin")]) as admin:
        r = await admin.post("/v1/tokens", json=ghost)
        assert r.status_code == 403 and r.json()["detail"] == NOT_YOUR_PROJECT
    async with http(app, world["root"]) as root:
        r = await root.post("/v1/tokens", json=ghost)
        assert r.status_code == 404, r.text
        assert "declare it first" in r.json()["detail"] and ghost["project"] in r.json()["detail"]
        listed = (await root.get("/v1/tokens")).json()["tokens"]
        assert not [t for t in listed if t["project"] == ghost["project"]]
        assert (await root.put(f"/v1/projects/{ghost['project']}",
                               json={"label_options": OPTIONS})).status_code == 200
        r = await root.post("/v1/tokens", json=ghost)
        assert r.status_code == 201, r.text
        anywhere = await root.post("/v1/tokens", json={**ghost, "project": "*"})
        assert anywhere.status_code == 201, anywhere.text  # '*' is no project to declare
    async with http(app, r.json()["token"]) as newbie:
        assert (await newbie.get(f"/v1/projects/{ghost['project']}/labels")).status_code == 200


async def test_sensitive_payloads_are_for_members_only(app, world):
    sensitive = world["projects"]["sensitive"]
    path = f"/v1/projects/{sensitive}/export?format=labelstudio"
    async with http(app, world["tokens"][(sensitive, "reviewer")]) as member:
        tasks = (await member.get(path)).json()
    async with http(app, world["root"]) as outsider:
        hidden = (await outsider.get(path)).json()
    assert tasks[0]["data"]["text"].startswith("Calif. wildfires")
    assert hidden[0]["data"] == {}
    assert hidden[0]["annotations"][0]["result"] == tasks[0]["annotations"][0]["result"]


async def test_revoked_token_and_disabled_user_are_refused_at_once(app, world, engine):
    plain = world["projects"]["plain"]
    async with http(app, world["root"]) as root:
        made = (
            await root.post(
                "/v1/tokens",
                json={"user_id": f"temp-{plain}", "role": "labeler", "project": plain,
                      "ttl_days": 1},
            )
        ).json()
        async with http(app, made["token"]) as temp:
            assert (await temp.get(f"/v1/projects/{plain}/labels")).status_code == 200
            assert (await root.post(f"/v1/tokens/{made['id']}/revoke")).json()["was_live"]
            r = await temp.get(f"/v1/projects/{plain}/labels")
            assert r.status_code == 401 and "revoked" in r.json()["detail"]
        other = await create_token(engine, f"dora-{plain}", "labeler", plain)
        async with http(app, other) as dora:
            assert (await dora.get(f"/v1/projects/{plain}/labels")).status_code == 200
            assert (await root.post(f"/v1/users/dora-{plain}/disable")).status_code == 200
            assert (await dora.get(f"/v1/projects/{plain}/labels")).status_code == 401
        # removing a member revokes their tokens for the project
        async with http(app, world["tokens"][(plain, "labeler")]) as labeler:
            assert (await labeler.get(f"/v1/projects/{plain}/labels")).status_code == 200
            r = await root.delete(f"/v1/projects/{plain}/members/labeler-{plain}")
            assert r.status_code == 200 and len(r.json()["revoked_tokens"]) == 1
            assert (await labeler.get(f"/v1/projects/{plain}/labels")).status_code == 401


async def test_every_change_leaves_an_audit_entry(app, world):
    plain = world["projects"]["plain"]
    p = f"/v1/projects/{plain}"
    async with http(app, world["root"]) as root:
        assert (
            await root.post(
                f"{p}/labels",
                json={
                    "labels": [
                        {
                            "item_id": "6141",
                            "label": "dog",
                            "source": "adjudicated",
                            "mode": "adjudication",
                        }
                    ]
                },
            )
        ).status_code == 201
        reverted = await root.post(f"{p}/reverts", json={"labeler_id": "root", "message": "oops"})
        assert reverted.status_code == 200, reverted.text
        number = reverted.json()["version"]["number"]
        assert (await root.post(f"{p}/versions/{number}/revert", json={})).status_code == 200
        assert (await root.put(f"{p}/members/erin", json={"role": "reviewer"})).status_code == 200
        assert (await root.delete(f"{p}/members/erin")).status_code == 200
        made = (
            await root.post(
                "/v1/tokens", json={"user_id": "erin", "role": "labeler", "project": plain}
            )
        ).json()
        assert (await root.post(f"/v1/tokens/{made['id']}/revoke")).status_code == 200
        assert (await root.post("/v1/users", json={"user_id": f"u-{plain}"})).status_code == 201
        assert (await root.post(f"/v1/users/u-{plain}/disable")).status_code == 200
        entries = (await root.get(f"/v1/audit?project={plain}&limit=1000")).json()["entries"]
        everything = (await root.get("/v1/audit?limit=10000&action=user.disable")).json()
    actions = {e["action"] for e in entries}
    assert {
        "project.settings",
        "labels.import",
        "version.create",
        "labels.submit",
        "version.revert",
        "version.unrevert",
        "member.put",
        "member.remove",
        "token.create",
        "token.revoke",
    } <= actions
    assert all(e["actor"] and e["at"] and e["client"] for e in entries)
    revert = next(e for e in entries if e["action"] == "version.revert")
    assert revert["actor"] == "root" and "loopwise-tests" in revert["client"]
    assert revert["detail"]["selector"] == {"labeler_id": "root"}
    assert any(e["target"] == f"u-{plain}" for e in everything["entries"])


async def test_label_studio_import_then_export_gives_the_same_annotations(app, world):
    plain = world["projects"]["plain"]
    tasks = json.loads((FIXTURES / "choices-with-history.json").read_text())
    extra = json.loads(json.dumps(tasks[0]))
    extra["id"] = 7001
    extra["annotations"][0].update(id=99, completed_by={"email": "kim@example.com"}, lead_time=3.5)
    extra["annotations"][0]["result"][0]["value"]["choices"] = ["Negative"]
    raw = json.dumps([*tasks, extra]).encode()
    async with http(app, world["tokens"][(plain, "reviewer")]) as client:
        r = await client.post(f"/v1/projects/{plain}/imports/labelstudio", content=raw)
        assert r.status_code == 200 and r.json()["inserted"] == 1, r.text  # 6141 was there
        exported = await client.get(f"/v1/projects/{plain}/export?format=labelstudio")
    assert exported.status_code == 200
    original, back = (
        parse_export(raw, project=plain),
        parse_export(exported.content, project=plain),
    )

    def annotations(result):
        return sorted(
            (
                e.item_id,
                e.label,
                e.labeler_id,
                e.created_at,
                e.duration_ms,
                e.source,
                str(e.event_id),
            )
            for e in result.events
        )

    assert annotations(back) == annotations(original)
    assert back.items == original.items
    assert {(r.from_name, r.to_name) for r in back.refs.values()} == {("sentiment", "text")}


async def test_exports_stream_the_versions_labels_as_jsonl_and_csv(app, world):
    plain = world["projects"]["plain"]
    async with http(app, world["tokens"][(plain, "admin")]) as client:
        await client.post(
            f"/v1/projects/{plain}/labels",
            json={
                "labels": [{"item_id": "6141", "label": "cat", "source": "human", "mode": "blind"}]
            },
        )
        head = (await client.get(f"/v1/projects/{plain}/labels")).json()["labels"]
        lines = (await client.get(f"/v1/projects/{plain}/export")).text.splitlines()
        v1 = (await client.get(f"/v1/projects/{plain}/export?format=csv&version=1")).text
    assert [json.loads(line)["label"] for line in lines] == [r["label"] for r in head] == ["cat"]
    rows = list(csv.DictReader(io.StringIO(v1)))
    assert [(r["item_id"], r["label"], r["labeler_id"]) for r in rows] == [
        ("6141", "Positive", "ls:sergei@heartex.e2e")
    ]


async def test_bad_input_is_refused_with_clear_errors_and_nothing_written(app, world):
    plain = world["projects"]["plain"]
    p = f"/v1/projects/{plain}"
    async with http(app, world["tokens"][(plain, "admin")]) as client:
        before = (await client.get(f"{p}/labels")).json()["events_by_source"]
        good = {"item_id": "6141", "label": "dog", "source": "human", "mode": "blind"}
        r = await client.post(f"{p}/labels", json={"labels": [good, {**good, "label": "zebra"}]})
        assert r.status_code == 422 and "'zebra' is not in project" in str(r.json()["detail"])
        r = await client.post(f"{p}/labels", json={"labels": [good, {**good, "item_id": "nope"}]})
        assert r.status_code == 422 and "unknown item 'nope'" in str(r.json()["detail"])
        r = await client.post(f"{p}/labels", json={"labels": [{**good, "source": "bogus"}]})
        assert r.status_code == 422 and "source" in str(r.json()["detail"])
        r = await client.post(f"{p}/imports/labelstudio", content=b'{"id": 1}')
        assert r.status_code == 422
        assert "expected a JSON list of tasks" in r.json()["detail"]["problems"][0]
        r = await client.post(f"{p}/imports/labelstudio", content=b'[{"id": 1, "data": {}}, 5')
        assert r.status_code == 422 and "not JSON" in str(r.json()["detail"])
        tasks = json.loads((FIXTURES / "choices-with-history.json").read_text())
        tasks[0]["id"] = 8000
        tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["Neutral"]
        r = await client.post(f"{p}/imports/labelstudio", content=json.dumps(tasks))
        assert r.status_code == 422 and "'Neutral' is not in project" in r.json()["detail"]
        r = await client.get(f"{p}/labels?version=42")
        assert r.status_code == 404 and "no label-set version '42'" in r.json()["detail"]
        r = await client.get(f"{p}/items/ghost/trace")
        assert r.status_code == 404 and "no item 'ghost'" in r.json()["detail"]
        r = await client.post(f"{p}/reverts", json={"message": "everything?"})
        assert r.status_code == 422 and "say what to revert" in r.text
        r = await client.post(f"{p}/reverts", json={"event_ids": ["not-an-event"]})
        assert r.status_code == 422 and "not counting label events" in r.json()["detail"]
        r = await client.put(p, json={"label_options": ["a", "a"]})
        assert r.status_code == 422 and "distinct" in r.text
        after = (await client.get(f"{p}/labels")).json()["events_by_source"]
        versions = (await client.get(f"{p}/versions")).json()["versions"]
    assert after == before
    assert len(versions) == 2


async def test_stream_labels_outside_the_schema_are_deadlettered(app, world, redis):
    plain = world["projects"]["plain"]
    service = app.state.service
    before = await redis.xlen(streams.DEADLETTER)
    good = LabelEvent(
        project=plain, item_id="s1", label="cat", labeler_id="amy", source="human", mode="blind"
    )
    bad = LabelEvent(
        project=plain, item_id="s2", label="zebra", labeler_id="amy", source="human", mode="blind"
    )
    await service.on_labels([Delivery("1-1", good), Delivery("1-2", bad)])

    async def lettered() -> bool:
        return await redis.xlen(streams.DEADLETTER) > before

    await wait_for(lettered, 10, "the dead letter")
    letters = [json.loads(f[b"data"]) for _, f in await redis.xrange(streams.DEADLETTER)]
    ours = [x for x in letters if plain in x["reason"]]
    assert len(ours) == 1 and "'zebra' is not in project" in ours[0]["reason"]
    assert json.loads(ours[0]["fields"]["data"])["item_id"] == "s2"
    async with http(app, world["root"]) as root:
        labels = (await root.get(f"/v1/projects/{plain}/labels")).json()["labels"]
    assert {r["item_id"] for r in labels} == {"6141", "s1"}


async def test_a_batch_mixing_new_and_redelivered_labels_counts_only_the_new(app, world):
    plain = world["projects"]["plain"]
    service = app.state.service

    def stored() -> float:
        return REGISTRY.get_sample_value("loopwise_labels_stored_total",
                                         {"project": plain, "source": "human"}) or 0.0

    first, second = (LabelEvent(project=plain, item_id=f"m{n}", label="cat", labeler_id="amy",
                                source="human", mode="blind") for n in (1, 2))
    before = stored()
    await service.on_labels([Delivery("2-1", first)])
    assert stored() == before + 1
    await service.on_labels([Delivery("2-1", first), Delivery("2-2", second)])  # a redelivery
    assert stored() == before + 2
    await service.on_labels([Delivery("2-2", second)])
    assert stored() == before + 2

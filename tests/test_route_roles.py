"""Every route of every service x every role x own / other / sensitive project, over real
HTTP against the four running services, with a labeler holding an item blind and a gold
task answered: the status each role gets, and that nothing a labeler can reach carries
the model's guess, another labeler's answer, a gold answer or a gold/planted/audit mark.

The routes and the role each needs are this table; a route a service adds without a
row here fails ``test_the_table_covers_every_route`` (the class of failure: a new read
route that forgets who may read it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.labels.app import create_app as labels_app
from services.quality.app import create_app as quality_app
from services.router.app import create_app as router_app
from services.scorer.app import create_app as scorer_app
from shared import streams
from shared.auth import create_token
from tests.helpers import client, configure, groups_idle

pytestmark = pytest.mark.integration

SECRET_VERSION = "mv-secret-41"  # the model version: a labeler holding items blind never sees it
FORBIDDEN_KEYS = {"gold_label", "planted_prelabel", "planted", "model_label", "model_version",
                  "confidence", "audit_sample", "audit", "probs", "gold_catch_rate",
                  "gold_seen", "shown_prelabel", "agreed_with_prelabel"}
ROLE_ORDER = ["labeler", "reviewer", "admin", "service"]

# (service, method, path template, role it needs, request options). {p}: the project.
ROUTES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("router", "GET", "/v1/projects/{p}/tasks/next", "labeler", {}),
    ("router", "GET", "/v1/projects/{p}/adjudications/next", "reviewer", {}),
    ("router", "GET", "/v1/projects/{p}/policy", "reviewer", {}),
    ("router", "POST", "/v1/projects/{p}/policy/recalibrate", "admin", {}),
    ("router", "GET", "/v1/projects/{p}/queue", "reviewer", {}),
    ("router", "GET", "/v1/projects/{p}/gold", "admin", {}),
    ("router", "POST", "/v1/projects/{p}/gold", "admin",
     {"json": {"items": [{"item_id": "g-extra", "label": "c"}]}}),
    ("router", "DELETE", "/v1/projects/{p}/paused/nobody", "admin", {}),
    ("router", "GET", "/v1/projects/{p}/comparisons/next", "labeler", {}),
    ("router", "POST", "/v1/projects/{p}/comparisons", "admin",
     {"json": {"comparisons": [{"comparison_id": "cmp-extra", "prompt": "q", "candidates": [
         {"candidate_id": "a", "text": "x"}, {"candidate_id": "b", "text": "y"}]}]}}),
    ("labels", "GET", "/v1/projects/{p}/export?format=trl", "reviewer", {}),
    ("scorer", "GET", "/v1/projects/{p}/models", "labeler", {}),
    ("scorer", "GET", "/v1/projects/{p}/config", "labeler", {}),
    ("scorer", "POST", "/v1/projects/{p}/predict", "reviewer", {"json": {"texts": ["x"]}}),
    ("scorer", "POST", "/v1/projects/{p}/items", "admin",
     {"json": {"items": [{"item_id": "extra", "text": "extra item"}]}}),
    ("scorer", "POST", "/v1/projects/{p}/items/lookup", "service", {"json": {"item_ids": ["n0"]}}),
    ("scorer", "POST", "/v1/projects/{p}/select", "admin", {"json": {"budget": 1}}),
    ("scorer", "GET", "/v1/projects/{p}/reward/models", "reviewer", {}),
    ("scorer", "POST", "/v1/projects/{p}/reward/score", "reviewer", {"json": {"texts": ["x"]}}),
    ("scorer", "POST", "/v1/projects/{p}/reward/select", "admin",
     {"json": {"budget": 1, "strategy": "random", "prompts": [{"prompt_id": "q", "prompt": "q",
      "candidates": [{"candidate_id": "a", "text": "x"}, {"candidate_id": "b", "text": "y"}]}]}}),
    ("scorer", "GET", "/v1/projects/{p}/comparison", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/labels", "labeler", {}),
    ("labels", "GET", "/v1/projects/{p}", "labeler", {}),
    ("labels", "GET", "/v1/projects/{p}/versions", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/events", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/diff?from=head", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/items/n0/trace", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/export?format=jsonl", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/export?format=labelstudio", "reviewer", {}),
    ("labels", "GET", "/v1/projects/{p}/members", "admin", {}),
    ("labels", "GET", "/v1/audit?project={p}", "admin", {}),
    ("quality", "GET", "/v1/projects/{p}/quality", "reviewer", {}),
    ("quality", "GET", "/v1/projects/{p}/evaluation", "reviewer", {}),
    ("quality", "POST", "/v1/projects/{p}/flags/nobody/clear", "admin", {"json": {}}),
]
# Routes of the table's services left out on purpose, and why.
NOT_IN_TABLE = {
    "/v1/projects/{project}/train": "trains a model (slow); admin, tested in the scorer tests",
    "/v1/projects/{project}/reward/train": "trains a reward model; admin, tested in "
                                           "tests/test_reward_model.py",
    "/v1/projects/{project}/reverts": "writes; the labels authorization matrix covers it",
    "/v1/projects/{project}/versions/{version}/revert": "writes; labels matrix",
    "/v1/projects/{project}/versions/{version}": "labels matrix (reviewer)",
    "/v1/projects/{project}/imports/labelstudio": "writes; labels matrix (reviewer)",
    "/v1/projects/{project}/members/{user_id}": "writes; labels matrix (admin)",
    "/v1/projects/{project}/policy": "PUT removed; GET in the table",
}


def _allowed(role: str, needs: str) -> bool:
    return ROLE_ORDER.index(role) >= ROLE_ORDER.index(needs)


def _leaks(body: Any, where: str) -> list[str]:
    """Forbidden keys (with a value) or the model's version anywhere in a response."""
    found = []
    if isinstance(body, dict):
        for key, value in body.items():
            if key in FORBIDDEN_KEYS and value not in (None, False, {}, [], ""):
                found.append(f"{where}: field {key}={value!r}")
            found += _leaks(value, f"{where}.{key}")
    elif isinstance(body, list):
        for i, value in enumerate(body):
            found += _leaks(value, f"{where}[{i}]")
    elif isinstance(body, str) and SECRET_VERSION in body:
        found.append(f"{where}: the model version {body!r}")
    return found


async def _call(settings, service: str, bearer: str | None, method: str, path: str,
                options: dict[str, Any]):
    async with client(settings, service, bearer) as http:
        return await http.request(method, path, **options)


async def _world(settings, engine, redis, project: str) -> dict[str, Any]:
    other, sensitive = project + "-o", project + "-s"
    admin = await create_token(engine, f"adm-{project}", "admin", project)
    await configure(settings, admin, project, label_options=["a", "b", "c"],
                    routing={"mode": "blind", "overlap": 2, "gold_rate": 0.0})
    s_admin = await create_token(engine, f"adm-{sensitive}", "admin", sensitive)
    await configure(settings, s_admin, sensitive, sensitive=True)
    for i in range(12):
        for p in (project, sensitive):
            body = {"project": p, "item_id": f"n{i}", "model_version": SECRET_VERSION,
                    "probs": {"a": 0.6, "b": 0.3, "c": 0.1}, "payload": {"text": f"item {i}"}}
            await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))
    tokens = {role: await create_token(engine, f"{role}-{project}", role, project)
              for role in ROLE_ORDER}
    # Bob answers an item, so the store holds another labeler's answer and the model's guess.
    bob = await create_token(engine, f"bob-{project}", "labeler", project)
    async with client(settings, "router", bob) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "b"})
        assert r.status_code == 200, r.text
    # Amy holds the same item blind (overlap 2: it is the most urgent task left for her).
    async with client(settings, "router", tokens["labeler"]) as http:
        held = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
    assert held["mode"] == "blind" and held["prelabel"] is None
    assert not _leaks({k: v for k, v in held.items() if k != "options"}, "task")
    # Gus answers a gold task; what he reads afterwards must not tell him it was gold.
    async with client(settings, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": "g0", "label": "c", "payload": {"text": "item g0"},
             "prediction": {"model_version": "m-visible", "probs": {"a": 0.7, "c": 0.3}}}]})
        assert r.status_code == 200, r.text
    await configure(settings, admin, project, routing={"gold_rate": 1.0})
    gus = await create_token(engine, f"gus-{project}", "labeler", project)
    async with client(settings, "router", gus) as http:
        gold = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        assert gold["item_id"] == "g0"
        done = (await http.post(f"/v1/tasks/{gold['task_id']}/submit",
                                json={"label": "c"})).json()
    # The reveal is the model's real guess for the item, as for any task: never the answer.
    assert done["reveal"] == {"model_label": "a", "confidence": 0.7, "model_version": "m-visible"}
    await configure(settings, admin, project, routing={"gold_rate": 0.0})
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS),
                      (streams.LABELS, streams.GROUP_QUALITY))
    return {"project": project, "other": other, "sensitive": sensitive, "tokens": tokens,
            "gus": gus, "held": held,
            "stranger": await create_token(engine, f"x-{other}", "labeler", other),
            "root": await create_token(engine, f"root-{project}", "admin", "*")}


async def test_every_route_role_and_project_and_no_leak_to_labelers(
        services, engine, redis, project):
    world = await _world(services, engine, redis, project)
    p = world["project"]
    checked = 0
    for service, method, template, needs, options in ROUTES:
        path = template.format(p=p)
        r = await _call(services, service, None, method, path, options)
        assert r.status_code == 401 and r.json()["detail"], (service, path, r.text)
        r = await _call(services, service, world["stranger"], method, path, options)
        assert r.status_code == 403 and r.json()["detail"], (service, path, r.text)
        for role, bearer in world["tokens"].items():
            r = await _call(services, service, bearer, method, path, options)
            where = (service, method, path, role)
            if _allowed(role, needs):
                assert r.status_code < 500 and r.status_code not in (401, 403), (where, r.text)
            else:
                assert r.status_code == 403 and needs in r.json()["detail"], (where, r.text)
            if role == "labeler" and r.status_code == 200 and r.content:
                body = r.json() if "json" in r.headers.get("content-type", "") else r.text
                if template.endswith("/tasks/next"):
                    body = {k: v for k, v in body.items() if k != "options"}
                assert not _leaks(body, f"{service} {path}"), _leaks(body, path)
            checked += 1
        # A '*' admin reaches every project but the payloads of a sensitive one.
        r = await _call(services, service, world["root"], method, path, options)
        if needs == "service":
            assert r.status_code == 403, (service, path, r.text)
        else:
            assert r.status_code < 500 and r.status_code not in (401, 403), (
                service, path, r.text)
    assert checked == len(ROUTES) * len(ROLE_ORDER)

    async with client(services, "router", world["root"]) as http:
        r = await http.get(f"/v1/projects/{world['sensitive']}/tasks/next")
        assert r.status_code == 403 and "sensitive" in r.json()["detail"]
    async with client(services, "labels", world["tokens"]["labeler"]) as http:
        own = (await http.get(f"/v1/projects/{p}/labels")).json()
    assert own["labels"] == []  # Amy answered nothing yet: no one else's answer reaches her
    async with client(services, "labels", world["gus"]) as http:
        mine = (await http.get(f"/v1/projects/{p}/labels")).json()
    assert [row["item_id"] for row in mine["labels"]] == ["g0"]
    assert not _leaks(mine, "gus's labels")
    async with client(services, "labels", world["tokens"]["reviewer"]) as http:
        full = (await http.get(f"/v1/projects/{p}/labels")).json()
    by_item = {row["item_id"]: row for row in full["labels"]}
    assert by_item["g0"]["gold_label"] == "c" and by_item["g0"]["model_label"] == "a"
    assert by_item[world["held"]["item_id"]]["model_version"] == SECRET_VERSION


def test_the_table_covers_every_route():
    """A project route added to a service must be placed in the table (or left out
    with a reason), so its role is decided and tested, not inherited by accident."""
    tabled = {t.split("?")[0].replace("{p}", "{project}") for _, _, t, _, _ in ROUTES}
    tabled |= {"/v1/projects/{project}/items/{item_id}/trace",
               "/v1/projects/{project}/flags/{labeler_id}/clear",
               "/v1/projects/{project}/paused/{labeler}"}
    missing = []
    for make in (router_app, scorer_app, labels_app, quality_app):
        for route in make().routes:
            path = getattr(route, "path", "")
            if "{project}" in path and path not in tabled and path not in NOT_IN_TABLE:
                missing.append(path)
    assert not missing, f"routes with no row in the role table: {missing}"

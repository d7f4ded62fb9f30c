"""Label Studio both ways, against a real Label Studio 1.23 server and the four services.

loopwise -> Label Studio: items that came as items and as predictions are routed,
reviewed by two labelers and auto-accepted; the labels service's Label Studio export
is imported through Label Studio's import API, and what Label Studio then holds (read
back through its API) is every annotation with its annotator's email, its choice and
its time spent, every item's data, and the model's predictions.

Label Studio -> loopwise: a project labeled in Label Studio itself (two annotators,
a kept and a changed pre-label, a skip, two model versions) is exported by Label
Studio's export API as JSON (``predictions`` a list of ids) and JSON-MIN, and each
imports into loopwise with every annotation. The exports are kept under
``var/labelstudio/exports/`` (copies are the fixtures in ``tests/labelstudio/fixtures``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared import streams
from tests.conftest import ROOT
from tests.helpers import client, groups_idle, token
from tests.labelstudio.server import LabelStudio

pytestmark = [pytest.mark.labelstudio, pytest.mark.integration]
OPTIONS = ["cat", "dog"]
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text" '
          'choice="single">' + "".join(f'<Choice value="{o}"/>' for o in OPTIONS)
          + "</Choices></View>")
ITEM_KEY = "loopwise_item_id"
EXPORTS = ROOT / "var" / "labelstudio" / "exports"


def ls_client(server: LabelStudio) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=120,
                             headers={"Authorization": f"Token {server.token}"})


async def ls_ok(response: httpx.Response, *codes: int) -> Any:
    assert response.status_code in (codes or (200, 201)), (
        f"{response.request.method} {response.request.url} -> {response.status_code}: "
        f"{response.text[:2000]}")
    return response.json() if response.content else None


async def ls_project(ls: httpx.AsyncClient, title: str) -> int:
    body = await ls_ok(await ls.post("/api/projects", json={"title": title,
                                                            "label_config": CONFIG}))
    return int(body["id"])


async def ls_users(ls: httpx.AsyncClient) -> dict[int, str]:
    body = await ls_ok(await ls.get("/api/users/"))
    return {int(u["id"]): u["email"] for u in body}


async def ls_user(ls: httpx.AsyncClient, email: str) -> int:
    """The Label Studio user with this email, made a member of the organization if new."""
    for user_id, known in (await ls_users(ls)).items():
        if known == email:
            return user_id
    body = await ls_ok(await ls.post("/api/users/", json={
        "email": email, "username": email.split("@")[0][:30]}), 201)
    return int(body["id"])


async def ls_export(ls: httpx.AsyncClient, project_id: int, kind: str, name: str) -> bytes:
    """What Label Studio's export API (the web UI's Export button, all tasks) answers."""
    r = await ls.get(f"/api/projects/{project_id}/export",
                     params={"exportType": kind, "download_all_tasks": "true"})
    await ls_ok(r)
    EXPORTS.mkdir(parents=True, exist_ok=True)
    (EXPORTS / name).write_bytes(r.content)
    return r.content


async def ls_predictions(ls: httpx.AsyncClient, project_id: int) -> list[dict[str, Any]]:
    return await ls_ok(await ls.get("/api/predictions/", params={"project": project_id}))


def choice(result: list[dict[str, Any]]) -> str:
    [only] = result
    assert only["type"] == "choices" and only["from_name"] == "label", only
    [label] = only["value"]["choices"]
    return label


async def xadd(redis, stream: str, body: dict[str, Any]) -> None:
    await redis.xadd(stream, {"data": json.dumps(body)})


async def loopwise_project(settings, engine, name: str, **sections: Any) -> str:
    admin = await token(engine, "ls-admin", "admin", name)
    async with client(settings, "labels", admin) as http:
        r = await http.put(f"/v1/projects/{name}", json={"label_options": OPTIONS, **sections})
        assert r.status_code == 200, r.text
    return admin


async def import_into_loopwise(settings, admin: str, project: str, data: bytes,
                               **params: Any) -> dict[str, Any]:
    async with client(settings, "labels", admin) as http:
        r = await http.post(f"/v1/projects/{project}/imports/labelstudio", content=data,
                            params=params)
        assert r.status_code == 200, r.text
        return r.json()


async def loopwise_labels(settings, admin: str, project: str) -> list[dict[str, Any]]:
    async with client(settings, "labels", admin) as http:
        r = await http.get(f"/v1/projects/{project}/export", params={"format": "jsonl"})
        assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


async def loopwise_events(settings, admin: str, project: str,
                          **params: Any) -> list[dict[str, Any]]:
    """Every counted label event of the project (the Label Studio export holds them all)."""
    async with client(settings, "labels", admin) as http:
        r = await http.get(f"/v1/projects/{project}/export",
                           params={"format": "labelstudio", **params})
        assert r.status_code == 200, r.text
    return r.json()


# --- loopwise -> Label Studio ------------------------------------------------------------------

AUTO = {"auto-1": ({"cat": 0.97, "dog": 0.03}, "a cat asleep in the sun"),
        "auto-2": ({"cat": 0.02, "dog": 0.98}, "a dog fetching a stick")}
REVIEWED = {"pred-1": ({"cat": 0.6, "dog": 0.4}, "something small and furry"),
            "pred-2": ({"cat": 0.3, "dog": 0.7}, "it barked, or maybe it meowed")}
ITEMS = {"item-1": "a tabby on the sofa, with \"quotes\", a tab\tand Привет"}
# who labels what: alice and bob both see every reviewed item (overlap 2)
ANSWERS = {("alice", "pred-1"): ("cat", 2100), ("alice", "pred-2"): ("dog", 3400),
           ("alice", "item-1"): ("cat", 1250), ("bob", "pred-1"): ("dog", 900),
           ("bob", "pred-2"): ("dog", 4000), ("bob", "item-1"): ("cat", 5000)}


async def test_a_loopwise_export_imports_into_label_studio_with_every_annotation(
    label_studio: LabelStudio, services, engine, redis, project
) -> None:
    settings = services
    admin = await loopwise_project(settings, engine, project, routing={"overlap": 2})
    await groups_idle(redis, *((streams.PROJECTS, g) for g in (
        streams.GROUP_ROUTER, streams.GROUP_SCORER, streams.GROUP_QUALITY)))
    payloads: dict[str, dict[str, Any]] = {}
    for item_id, (probs, text) in {**AUTO, **REVIEWED}.items():
        payloads[item_id] = {"text": text, "camera": f"cam-{item_id}"}
        await xadd(redis, streams.PREDICTIONS, {
            "project": project, "item_id": item_id, "model_version": "m-ls",
            "probs": probs, "payload": payloads[item_id]})
    for item_id, text in ITEMS.items():
        payloads[item_id] = {"text": text, "lang": "en"}
        await xadd(redis, streams.ITEMS, {"project": project, "item_id": item_id,
                                          "text": text, "payload": payloads[item_id]})
    await groups_idle(redis, (streams.ITEMS, streams.GROUP_SCORER),
                      (streams.PREDICTIONS, streams.GROUP_ROUTER),
                      (streams.PREDICTIONS, streams.GROUP_SCORER))

    for labeler in ("alice", "bob"):
        bearer = await token(engine, labeler, "labeler", project)
        async with client(settings, "router", bearer) as http:
            while (r := await http.get(f"/v1/projects/{project}/tasks/next")).status_code == 200:
                task = r.json()
                label, duration = ANSWERS[(labeler, task["item_id"])]
                assert task["payload"] == payloads[task["item_id"]]
                done = await http.post(f"/v1/tasks/{task['task_id']}/submit",
                                       json={"label": label, "duration_ms": duration})
                assert done.status_code == 200, done.text
            assert r.status_code == 204, r.text
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))

    async with client(settings, "labels", admin) as http:
        r = await http.get(f"/v1/projects/{project}/export",
                           params={"format": "labelstudio", "item_key": ITEM_KEY})
        assert r.status_code == 200, r.text
    exported = r.json()
    EXPORTS.mkdir(parents=True, exist_ok=True)
    (EXPORTS / "loopwise-export.json").write_bytes(r.content)
    # every item's payload, whether it came as an item or only as a prediction
    assert {t["data"][ITEM_KEY]: {k: v for k, v in t["data"].items() if k != ITEM_KEY}
            for t in exported} == payloads

    async with ls_client(label_studio) as ls:
        emails = {a["completed_by"]["email"] for t in exported for a in t["annotations"]}
        assert emails == {"alice@loopwise.local", "bob@loopwise.local"}
        for email in sorted(emails):
            await ls_user(ls, email)
        project_id = await ls_project(ls, f"from loopwise {project}")
        summary = await ls_ok(await ls.post(f"/api/projects/{project_id}/import",
                                            json=exported), 201)
        assert (summary["task_count"], summary["annotation_count"],
                summary["prediction_count"]) == (5, 6, 4), summary

        users = await ls_users(ls)
        tasks = json.loads(await ls_export(ls, project_id, "JSON", "from-loopwise-JSON.json"))
        item_of = {t["id"]: t["data"][ITEM_KEY] for t in tasks}
        assert {item_of[t["id"]]: {k: v for k, v in t["data"].items() if k != ITEM_KEY}
                for t in tasks} == payloads
        annotations = {
            (users[a["completed_by"]], item_of[t["id"]]): (choice(a["result"]), a["lead_time"])
            for t in tasks for a in t["annotations"]}
        # lead times as loopwise exported them: the durations the router measured (lease
        # to submit), not what the client sent
        lead_times = {(a["completed_by"]["email"], t["data"][ITEM_KEY]): a["lead_time"]
                      for t in exported for a in t["annotations"]}
        assert annotations == {
            (f"{labeler}@loopwise.local", item): (label,
                                                  lead_times[(f"{labeler}@loopwise.local", item)])
            for (labeler, item), (label, _) in ANSWERS.items()}
        assert all(not a["was_cancelled"] and not a["ground_truth"]
                   for t in tasks for a in t["annotations"])
        predictions = {
            item_of[p["task"]]: (p["model_version"], p["score"], choice(p["result"]))
            for p in await ls_predictions(ls, project_id)}
        # an auto label's prediction has its confidence, and so has a reviewed item's: the
        # model's label and confidence the review recorded with the reviewer's answer
        assert predictions == {
            item_id: ("m-ls", max(probs.values()), max(probs, key=probs.__getitem__))
            for item_id, (probs, _) in {**AUTO, **REVIEWED}.items()}

        # ... and back: Label Studio's own export of that project imports into loopwise with
        # every annotation, on the original item ids (kept in the data by item_key).
        again = f"{project}-back"
        back_admin = await loopwise_project(settings, engine, again)
        for kind in ("JSON", "JSON_MIN"):
            raw = await ls_export(ls, project_id, kind, f"from-loopwise-{kind}.json")
            result = await import_into_loopwise(settings, back_admin, again, raw,
                                                item_key=ITEM_KEY)
            assert result["annotations"] == 6 and result["skipped"] == [], result
            assert result["inserted"] == (6 if kind == "JSON" else 0)  # the same events
    events = [(a["completed_by"], t["data"][ITEM_KEY], choice(a["result"]))
              for t in await loopwise_events(settings, back_admin, again, item_key=ITEM_KEY)
              for a in t["annotations"]]
    ids = {email: user_id for user_id, email in users.items()}
    assert sorted(events) == sorted(
        (ids[f"{labeler}@loopwise.local"], item, label)
        for (labeler, item), (label, _) in ANSWERS.items())


# --- Label Studio -> loopwise ------------------------------------------------------------------

LS_TASKS = [
    ("t-1", "I love this cat", {"m-1": ("cat", 0.93)}),
    ("t-2", "Terrible dog, never again", {"m-1": ("cat", 0.61), "m-2": ("dog", 0.55)}),
    ("t-3", 'She said "hi"\nthen left.\tTab 🙂 Привет', {"m-1": ("dog", 0.72)}),
    ("t-4", "Skipped by everyone", {"m-1": ("cat", 0.51)}),
    ("t-5", "Nobody looked at this one", {}),
]


def _choices(label: str, origin: str | None = None) -> list[dict[str, Any]]:
    result: dict[str, Any] = {"type": "choices", "value": {"choices": [label]},
                              "from_name": "label", "to_name": "text"}
    if origin:
        result["origin"] = origin
    return [result]


async def test_c_label_studio_exports_json_and_json_min_import_into_loopwise(
    label_studio: LabelStudio, services, engine, project
) -> None:
    settings = services
    async with ls_client(label_studio) as ls:
        ann = await ls_user(ls, "ann@example.com")
        ben = await ls_user(ls, "ben@example.com")
        project_id = await ls_project(ls, f"native {project}")
        await ls_ok(await ls.post(f"/api/projects/{project_id}/import", json=[
            {"data": {"text": text, "ref": ref}, "predictions": [
                {"model_version": "m-1", "score": p[1], "result": _choices(p[0])}
                for version, p in models.items() if version == "m-1"]}
            for ref, text, models in LS_TASKS]), 201)
        # the import made m-1 the project's model version: what annotations start from
        project_info = await ls_ok(await ls.get(f"/api/projects/{project_id}"))
        assert project_info["model_version"] == "m-1"
        ids = {t["data"]["ref"]: t["id"] for t in (await ls_ok(await ls.get(
            "/api/tasks/", params={"project": project_id, "page_size": 100})))["tasks"]}
        for ref, _, models in LS_TASKS:  # a second model's prediction, made afterwards
            if "m-2" in models:
                label, score = models["m-2"]
                await ls_ok(await ls.post("/api/predictions/", json={
                    "task": ids[ref], "model_version": "m-2", "score": score,
                    "result": _choices(label)}), 201)
        parent = {p["task"]: p["id"] for p in await ls_predictions(ls, project_id)
                  if p["model_version"] == "m-1"}
        # (annotator, task, label, origin, seconds): kept and changed pre-labels, a manual
        # label, a disagreement, and a skip
        work = [(ann, "t-1", "cat", "prediction", 7.25),
                (ann, "t-2", "dog", "prediction-changed", 15.5),
                (ben, "t-2", "cat", "manual", 3.0),
                (ben, "t-3", "dog", "prediction", 33.125)]
        for user, ref, label, origin, seconds in work:
            await ls_ok(await ls.post(
                f"/api/tasks/{ids[ref]}/annotations/", params={"project": project_id},
                json={"result": _choices(label, origin), "completed_by": user,
                      "lead_time": seconds,
                      "parent_prediction": parent[ids[ref]] if origin != "manual" else None}),
                201)
        await ls_ok(await ls.post(f"/api/tasks/{ids['t-4']}/annotations/",
                                  params={"project": project_id},
                                  json={"result": [], "was_cancelled": True, "completed_by": ann,
                                        "lead_time": 1.0}), 201)
        as_json = await ls_export(ls, project_id, "JSON", "ls-1.23-JSON.json")
        as_min = await ls_export(ls, project_id, "JSON_MIN", "ls-1.23-JSON_MIN.json")
        ls_annotations = {(a["id"], t["id"], a["completed_by"], choice(a["result"]))
                          for t in json.loads(as_json) for a in t["annotations"]
                          if not a["was_cancelled"]}

    tasks = json.loads(as_json)
    assert all(isinstance(p, int) for t in tasks for p in t["predictions"])  # ids, not objects
    assert len(ls_annotations) == len(work)
    expected = {(f"ls:{user}", str(ids[ref]), label) for user, ref, label, _, _ in work}

    for kind, raw in (("JSON", as_json), ("JSON_MIN", as_min)):
        name = f"{project}-{kind.lower().replace('_', '-')}"
        admin = await loopwise_project(settings, engine, name)
        summary = await import_into_loopwise(settings, admin, name, raw)
        assert (summary["inserted"], summary["annotations"]) == (len(work), len(work)), summary
        labels = await loopwise_events(settings, admin, name)
        got = {(a["completed_by"], str(t["id"]), choice(a["result"])) for t in labels
               for a in t["annotations"]}
        assert got == {(int(u.removeprefix("ls:")), i, lab) for u, i, lab in expected}
        durations = sorted(a["lead_time"] for t in labels for a in t["annotations"])
        assert durations == sorted(w[4] for w in work)
        assert {t["data"]["ref"]: t["data"]["text"] for t in labels} == {
            ref: text for ref, text, _ in LS_TASKS[:3]}
        # every task's data was read, annotated or not (JSON-MIN leaves out a task only skipped)
        assert summary["tasks"] == (5 if kind == "JSON" else 4)
        if kind == "JSON":
            [skipped] = summary["skipped"]
            assert "cancelled" in skipped["reason"]
            rows = await loopwise_labels(settings, admin, name)
            prelabels = {(r["item_id"], r["labeler_id"]): (r["mode"], r["shown_prelabel"],
                                                           r["model_version"]) for r in rows}
            assert prelabels[(str(ids["t-1"]), f"ls:{ann}")] == ("prelabel", "cat", "m-1")

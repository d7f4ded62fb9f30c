"""loopwise.client against the four running services: every method of Client and of
AsyncClient, one scenario run with each, and the errors a caller must be able to tell
apart (the server's message carried in them)."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from typing import Any

import pytest
from pydantic import ValidationError

from loopwise.client import (
    AsyncClient,
    Client,
    Invalid,
    NotFound,
    Unauthorized,
    Unreachable,
)
from shared.events import ItemEvent, PredictionEvent
from shared.projects import ProjectSettings, SelectionSettings
from tests.conftest import PORT_BASE
from tests.helpers import token, wait_for

pytestmark = pytest.mark.integration

NOT_CALLED = {"call", "close"}  # plumbing, exercised by every other method


def public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")} - NOT_CALLED


def test_the_sync_and_async_clients_offer_the_same_methods_with_the_same_parameters():
    assert public_methods(Client) == public_methods(AsyncClient)
    for name in public_methods(Client):
        sync, async_ = inspect.signature(getattr(Client, name)), inspect.signature(
            getattr(AsyncClient, name))
        assert list(sync.parameters) == list(async_.parameters), name
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


class Driver:
    """Calls a method the same way on either client (the sync one in a worker thread, as
    the event loop must keep running), and remembers which methods were called."""

    def __init__(self, kind: str, used: set[str]) -> None:
        self.kind, self.used = kind, used

    def client(self, bearer: str | None, **kw: Any) -> Client | AsyncClient:
        return (Client if self.kind == "sync" else AsyncClient)(bearer, **kw)

    async def __call__(self, client: Client | AsyncClient, name: str, /, *args: Any,
                       **kw: Any) -> Any:
        self.used.add(name)
        method = getattr(client, name)
        if isinstance(client, AsyncClient):
            return await method(*args, **kw)
        return await asyncio.to_thread(method, *args, **kw)

    async def close(self, client: Client | AsyncClient) -> None:
        if isinstance(client, AsyncClient):
            await client.close()
        else:
            client.close()


def _features(i: int) -> list[float]:
    return [float(i % 2), float((i + 1) % 2), 0.5]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_every_client_method_against_the_running_services(services, engine, project,
                                                                  tmp_path, kind):
    used: set[str] = set()
    run = Driver(kind, used)
    admin = run.client(await token(engine, "ann", "admin", project), settings=services)
    labeler = run.client(await token(engine, "kim", "labeler", project), settings=services)
    root = run.client(await token(engine, "root", "admin", "*"), settings=services)
    try:
        # admins: the project's settings, the routing policy among them
        settings = await run(admin, "update_project", project,
                             {"label_options": ["a", "b"], "routing": {"gold_rate": 0.0}})
        assert isinstance(settings, ProjectSettings) and settings.label_options == ["a", "b"]
        settings = await run(admin, "set_policy", project, auto_accept_threshold=0.95)
        assert settings.routing.auto_accept_threshold == 0.95
        assert settings.routing.gold_rate == 0.0  # the rest of the section kept
        assert await run(admin, "project_settings", project) == settings

        async def policy_applied() -> bool:
            return (await run(admin, "policy", project))["auto_accept_threshold"] == 0.95

        await wait_for(policy_applied, 30, "the router to apply the policy")
        assert isinstance(await run(admin, "selection_config", project), SelectionSettings)

        # producers: an item on the stream with no model yet becomes a review task
        [entry] = await run(admin, "post_items", [
            ItemEvent(project=project, item_id="q1", features=_features(1))])
        assert entry.count("-") == 1  # a stream entry id
        # a seed set at the scorer, labelled directly, and a model trained on it
        registered = await run(admin, "register_items", project, [
            {"item_id": f"i{i}", "features": _features(i), "payload": {"n": i}}
            for i in range(6)])
        assert registered["new"] == 6
        posted = await run(admin, "post_labels", project, [
            {"item_id": f"i{i}", "label": "ab"[i % 2], "source": "import",
             "guideline_version": "g1"}
            for i in range(6)])
        assert posted["inserted"] == 6
        trained = await run(admin, "train", project)
        assert [m["version"] for m in await run(admin, "models", project)] == [
            trained["version"]]
        scored = await run(admin, "predict", project, features=[_features(0)])
        assert scored["model_version"] == trained["version"] and len(scored["probs"]) == 1

        # predictions on the stream: one auto-accepted, one for review
        ids = await run(admin, "post_predictions", [
            PredictionEvent(project=project, item_id="p1", model_version="m1",
                            probs={"a": 0.99, "b": 0.01}),
            {"project": project, "item_id": "p2", "model_version": "m1",
             "probs": {"a": 0.6, "b": 0.4}}])
        assert len(ids) == 2

        # reviewers: take the two tasks (the item and p2), skip one, submit and revise one.
        # A labeler holds one lease at a time (a second `next` gives the held task back),
        # so each task is answered when it comes, in whichever order the queue gives them.
        done: set[str] = set()

        async def answer(task_id: str, item_id: str) -> None:
            if item_id == "q1":
                assert await run(labeler, "skip", task_id) == "skipped"
            elif item_id == "p2":
                with pytest.raises(Invalid) as refused:
                    await run(labeler, "submit", task_id, "zebra")
                assert refused.value.status == 422 and "zebra" in str(refused.value)
                submitted = await run(labeler, "submit", task_id, "b", duration_ms=1200,
                                      guideline_version="g1")
                assert submitted.status == "recorded" and submitted.reveal.model_label == "a"
                revised = await run(labeler, "revise", task_id, "a")
                assert revised["event_id"] != submitted.event_id
            else:
                raise AssertionError(f"unexpected task for {item_id}")
            done.add(item_id)

        async def both_tasks() -> bool:
            task = await run(labeler, "next_task", project)
            if task is not None:
                await answer(task.task_id, task.item_id)
            return {"q1", "p2"} <= done

        await wait_for(both_tasks, 60, "the two review tasks")
        assert await run(labeler, "next_task", project) is None  # nothing left
        assert await run(admin, "next_adjudication", project) is None

        async def stored() -> bool:  # the auto label, and the review's revision (its last)
            labels = await run(admin, "labels", project)
            by_item = {r["item_id"]: r for r in labels["labels"]}
            return "p1" in by_item and by_item.get("p2", {}).get("label") == "a"

        await wait_for(stored, 30, "the auto label and the revised review to be stored")
        labels = await run(admin, "labels", project)
        by_item = {r["item_id"]: r for r in labels["labels"]}
        assert by_item["p1"]["source"] == "auto" and by_item["p2"]["label"] == "a"
        assert (await run(admin, "labels", project, include_auto=False, limit=100))[
            "count"] == 7  # six seeds and the revised review

        # gold, queue, pauses, calibration
        assert await run(admin, "add_gold", project, [{"item_id": "g1", "label": "a"}]) == 1
        assert [g.item_id for g in await run(admin, "gold", project)] == ["g1"]
        assert (await run(admin, "queue", project))["depth"] == 1  # q1, skipped by kim only
        assert await run(admin, "unpause", project, "kim") is False  # was not paused
        assert "threshold_in_force" in await run(admin, "recalibrate", project)

        # versions, diff, trace, revert, export, import
        version = await run(admin, "create_version", project, name="first", message="m")
        assert [v["number"] for v in await run(admin, "versions", project)] == [
            version["number"]]
        assert (await run(admin, "version", project, "first"))["number"] == version["number"]
        assert (await run(admin, "diff", project, "first"))["project"] == project
        trace = await run(admin, "trace", project, "p2")
        assert trace["project"] == project
        preview = await run(admin, "revert", project, labeler_id="kim", dry_run=True)
        assert preview["version"] is None and preview["events"] == 2  # submit and revision
        path = tmp_path / f"{kind}.jsonl"
        written = await run(admin, "export", project, path)
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert written == path.stat().st_size and {r["item_id"] for r in rows} >= {"p1", "p2"}
        sink = io.BytesIO()
        await run(admin, "export", project, sink, format="csv", version="first")
        assert sink.getvalue().startswith(b"item_id") or b"item_id" in sink.getvalue()[:200]
        export = [{"id": 1, "data": {"item_id": "i1"}, "annotations": [{
            "id": 7, "completed_by": 3, "created_at": "2026-01-02T03:04:05Z",
            "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                        "value": {"choices": ["b"]}}]}]}]
        imported = await run(admin, "import_labelstudio", project, json.dumps(export).encode(),
                             item_key="item_id", dry_run=True)
        assert imported["annotations"] == 1

        # quality
        assert (await run(admin, "quality", project))["project"] == project
        assert "label_events" in await run(admin, "evaluation", project)
        with pytest.raises(NotFound) as no_flag:
            await run(admin, "clear_flag", project, "kim", note="looked")
        assert no_flag.value.status == 404 and "kim" in no_flag.value.detail

        # selection: nothing in the pool is unlabeled but the skipped item
        selected = await run(admin, "select", project, 5)
        assert isinstance(selected, dict)

        # users and tokens (a '*' admin)
        user = f"u-{project}-{kind}"
        await run(root, "create_user", user, display_name="U")
        assert user in {u["user_id"] for u in await run(root, "users")}
        made = await run(root, "create_token", user, "labeler", project, ttl_days=1)
        assert made["id"] in {t["id"] for t in await run(root, "tokens")}
        assert (await run(root, "revoke_token", made["id"]))
        fresh = run.client(made["token"], settings=services)

        async def refused() -> bool:  # within the 2 s auth cache
            try:
                await run(fresh, "next_task", project)
            except Unauthorized:
                return True
            return False

        try:
            await wait_for(refused, 10, "the revoked token to be refused")
        finally:
            await run.close(fresh)
    finally:
        for client in (admin, labeler, root):
            await run.close(client)
    assert used == public_methods(Client)  # every method was called


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_errors_carry_the_servers_reason(services, engine, project, kind):
    run = Driver(kind, set())
    stranger = run.client("not-a-token", settings=services)
    nowhere = run.client("x", urls={s: f"http://127.0.0.1:{PORT_BASE + 990}" for s in
                                    ("scorer", "router", "labels", "quality")},
                         redis_url="redis://127.0.0.1:1/0")
    root = run.client(await token(engine, "root", "admin", "*"), settings=services)
    try:
        with pytest.raises(Unauthorized) as unauthorized:
            await run(stranger, "labels", project)
        assert unauthorized.value.status == 401 and unauthorized.value.detail
        assert f"/v1/projects/{project}/labels" in unauthorized.value.url
        with pytest.raises(Unreachable, match="ConnectError"):
            await run(nowhere, "labels", project)
        with pytest.raises(Unreachable, match=r"Redis at redis://127\.0\.0\.1:1/0: "):
            await run(nowhere, "post_items", [{"project": project, "item_id": "x", "text": "t"}])
        with pytest.raises(NotFound) as unknown:
            await run(root, "revoke_token", 999_999_999)
        assert "999999999" in str(unknown.value)
        with pytest.raises(ValidationError):  # checked with the event model before sending
            await run(root, "post_predictions", [{"project": project, "item_id": "x"}])
    finally:
        for client in (stranger, nowhere, root):
            await run.close(client)

"""The review API on the running services: modes and their provenance, gold salting and
indistinguishability, target-precision calibration, adjudication and pauses."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from services.labels.tables import label_events
from shared import streams
from shared.events import NONE_OF_THESE, AdjudicationRequestEvent, LabelerFlagEvent
from shared.wire import encode_event
from tests.helpers import client, configure, groups_idle, metrics_text, token

pytestmark = pytest.mark.integration
IMAGE = [[0, 3, 9, 12, 9, 2, 0, 0]] * 8


async def _predict(redis, project, n, probs=None, prefix="it"):
    for i in range(n):
        p = probs or {"3": 0.6, "8": 0.3, "5": 0.1}
        body = {"project": project, "item_id": f"{prefix}-{i}", "model_version": "m7",
                "probs": p, "payload": {"image": IMAGE}}
        await redis.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
    await groups_idle(redis, (streams.PREDICTIONS, streams.GROUP_ROUTER))


async def _rows(engine, redis, project, **where):
    """Stored label events of the project, once the labels service has caught up."""
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    query = select(label_events).where(label_events.c.project == project)
    for k, v in where.items():
        query = query.where(label_events.c[k] == v)
    async with engine.connect() as conn:
        return (await conn.execute(query.order_by(label_events.c.created_at))).all()


async def _admin(engine, settings, project, **policy):
    admin = await token(engine, "admin", "admin", project)
    await configure(settings, admin, project, routing=policy)
    return admin


async def test_blind_mode_reveals_after_submit_and_records_a_revision(services, engine, redis,
                                                                      project):
    await _admin(engine, services, project, gold_rate=0.0)
    await _predict(redis, project, 1)
    alice = await token(engine, "alice", "labeler", project)
    async with client(services, "router", alice) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        assert task["mode"] == "blind" and task["prelabel"] is None
        # the model's confidence (0.6) is nowhere; the task id ("<shard>.<uuid>") may
        # spell those characters by chance, so it is left out of the search
        assert "0.6" not in json.dumps({k: v for k, v in task.items() if k != "task_id"})
        r = (await http.post(f"/v1/tasks/{task['task_id']}/submit",
                             json={"label": "8", "duration_ms": 900})).json()
        assert r["reveal"] == {"model_label": "3", "confidence": 0.6, "model_version": "m7"}
        revised = (await http.post(f"/v1/tasks/{task['task_id']}/revise",
                                   json={"label": "3"})).json()
        assert revised["supersedes"] == r["event_id"]
    first, second = await _rows(engine, redis, project, source="human")
    assert (first.label, first.mode, first.revised_after_reveal, first.model_label) == \
        ("8", "blind", False, "3")
    assert first.shown_prelabel is None and first.agreed_with_prelabel is None
    # the model's confidence in its label is kept: a Label Studio export's prediction score
    assert first.confidence == 0.6 and second.confidence == 0.6
    assert (second.label, second.revised_after_reveal, second.supersedes) == \
        ("3", True, first.event_id)


async def test_prelabel_mode_records_what_was_shown_and_whether_it_was_kept(services, engine,
                                                                           redis, project):
    await _admin(engine, services, project, mode="prelabel", gold_rate=0.0)
    await _predict(redis, project, 2)
    bob = await token(engine, "bob", "labeler", project)
    async with client(services, "router", bob) as http:
        for label in ("3", "5"):
            task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
            assert task["mode"] == "prelabel" and task["prelabel"] == "3"
            await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": label})
    rows = await _rows(engine, redis, project, source="human")
    assert {(r.shown_prelabel, r.label, r.agreed_with_prelabel, r.mode) for r in rows} == {
        ("3", "3", True, "prelabel"), ("3", "5", False, "prelabel")}


async def test_choice_mode_offers_top_candidates_and_none_of_these(services, engine, redis,
                                                                   project):
    await _admin(engine, services, project, choice_margin=0.2, choice_top_k=2, gold_rate=0.0)
    await _predict(redis, project, 1, probs={"1": 0.4, "7": 0.35, "4": 0.25})
    carol = await token(engine, "carol", "labeler", project)
    async with client(services, "router", carol) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        assert task["mode"] == "choice"
        assert task["options"] == ["1", "7", NONE_OF_THESE] and task["prelabel"] is None
        bad = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "4"})
        assert bad.status_code == 422 and "not one of" in bad.json()["detail"]
        ok = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": NONE_OF_THESE})
        assert ok.status_code == 200
    (row,) = await _rows(engine, redis, project, source="human")
    assert (row.mode, row.label) == ("choice", NONE_OF_THESE)


async def test_gold_tasks_look_like_any_task_and_mark_their_outcome(services, engine, redis,
                                                                    project):
    admin = await _admin(engine, services, project, mode="prelabel", gold_rate=1.0,
                         gold_planted_share=1.0)
    await _predict(redis, project, 3)
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": f"gold-{i}", "label": "5", "wrong_prelabel": "3",
             "payload": {"image": IMAGE}} for i in range(2)]})
        assert r.json()["stored"] == 2
    dave = await token(engine, "dave", "labeler", project)
    responses = []
    async with client(services, "router", dave) as http:
        for _ in range(5):
            r = await http.get(f"/v1/projects/{project}/tasks/next")
            assert r.status_code == 200
            responses.append(r)
            await http.post(f"/v1/tasks/{r.json()['task_id']}/submit", json={"label": "5"})
    tasks = [r.json() for r in responses]
    gold = [t for t in tasks if t["item_id"].startswith("gold-")]
    normal = [t for t in tasks if not t["item_id"].startswith("gold-")]
    assert len(gold) == 2 and len(normal) == 3  # gold first (rate 1.0) until exhausted
    for g in gold:
        for n in normal:
            assert g.keys() == n.keys()
            assert {k: type(v).__name__ for k, v in g.items()} == \
                {k: type(v).__name__ for k, v in n.items()}
            # The same shard (the project's) before the same kind of UUID.
            (g_shard, g_uuid), (n_shard, n_uuid) = (t["task_id"].split(".", 1) for t in (g, n))
            assert g_shard == n_shard and len(g_uuid) == len(n_uuid)
            assert uuid.UUID(g_uuid).version == uuid.UUID(n_uuid).version
        assert g["prelabel"] == "3"  # planted wrong pre-label, shown like any model guess
    assert len({tuple(sorted(r.headers.keys())) for r in responses}) == 1  # same headers
    rows = await _rows(engine, redis, project, source="human")
    gold_rows = [r for r in rows if r.item_id.startswith("gold-")]
    assert len(gold_rows) == 2
    assert all(r.gold_label == "5" and r.planted_prelabel and r.shown_prelabel == "3"
               and r.agreed_with_prelabel is False for r in gold_rows)
    assert all(r.gold_label is None and not r.planted_prelabel for r in rows
               if not r.item_id.startswith("gold-"))


async def test_gold_is_salted_at_the_configured_rate(services, engine, redis, project):
    admin = await _admin(engine, services, project, gold_rate=0.05)
    async with client(services, "router", admin) as http:
        await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": f"gold-{i}", "label": "5"} for i in range(1000)]})
    await _predict(redis, project, 400)
    erin = await token(engine, "erin", "labeler", project)
    served = []
    async with client(services, "router", erin) as http:
        for _ in range(400):  # answered, so that the next call leases another task
            task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
            served.append(task["item_id"])
            submitted = await http.post(f"/v1/tasks/{task['task_id']}/submit",
                                        json={"label": "5"})
            assert submitted.status_code == 200, submitted.text
    n_gold = sum(s.startswith("gold-") for s in served)
    assert 5 <= n_gold <= 40  # Binomial(400, 0.05): mean 20, this range is > 99.9%


async def test_target_precision_calibrates_the_threshold_from_reviews(services, engine, redis,
                                                                      project):
    # The threshold is re-estimated at most once a second while reviews arrive; the
    # admin route forces it, which keeps this test independent of timing.
    admin = await _admin(engine, services, project, kind="target_precision",
                         target_precision=0.8, min_audits=20, default_threshold=0.99,
                         gold_rate=0.0)
    # 60 predictions at confidence 0.95: below the conservative default, so all reviewed.
    await _predict(redis, project, 60, probs={"a": 0.95, "b": 0.05})
    frank = await token(engine, "frank", "labeler", project)
    async with client(services, "router", frank) as http:
        for i in range(60):
            task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
            label = "a" if i % 20 else "b"  # the model is right 57 times out of 60
            await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": label})
    async with client(services, "router", admin) as http:
        forced = (await http.post(f"/v1/projects/{project}/policy/recalibrate")).json()
        policy = (await http.get(f"/v1/projects/{project}/policy")).json()
    metrics = await metrics_text(services, "router")
    calibration = policy["calibration"]
    assert forced["threshold_in_force"] == 0.95 == policy["threshold_in_force"]
    assert calibration["calibrated"] and calibration["threshold"] == 0.95
    assert calibration["precision"] == pytest.approx(57 / 60)
    assert calibration["observations"] == 60
    assert f'loopwise_auto_accept_precision_lower_bound{{project="{project}"}}' in metrics
    # From now on 0.95-confidence predictions are auto-accepted (bar the 2% audit share).
    await _predict(redis, project, 50, probs={"a": 0.95, "b": 0.05}, prefix="after")
    auto = await _rows(engine, redis, project, source="auto")
    assert len(auto) >= 45


async def test_adjudication_requests_go_to_reviewers_and_come_back_adjudicated(
        services, engine, redis, project):
    await _predict(redis, project, 1)  # the router learns the options and the payload
    request = AdjudicationRequestEvent(project=project, item_id="it-0",
                                       labels={"u1": "3", "u2": "8"}, consensus="3",
                                       confidence=0.52, reason="split_vote")
    await redis.xadd(streams.QUALITY, encode_event(request.to_json()))
    await groups_idle(redis, (streams.QUALITY, streams.GROUP_ROUTER))
    labeler = await token(engine, "gina", "labeler", project)
    reviewer = await token(engine, "hank", "reviewer", project)
    async with client(services, "router", labeler) as http:
        r = await http.get(f"/v1/projects/{project}/adjudications/next")
        assert r.status_code == 403
    async with client(services, "router", reviewer) as http:
        task = (await http.get(f"/v1/projects/{project}/adjudications/next")).json()
        assert task["mode"] == "adjudication" and task["labels_given"] == {"u1": "3", "u2": "8"}
        assert task["payload"] == {"image": IMAGE}
        r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "8"})
        assert r.status_code == 200
    (row,) = await _rows(engine, redis, project, source="adjudicated")
    assert (row.label, row.mode, row.labeler_id) == ("8", "adjudication", "hank")


async def test_a_pausing_flag_stops_the_labeler_until_an_admin_lifts_it(services, engine, redis,
                                                                        project):
    admin = await _admin(engine, services, project, gold_rate=0.0)
    await _predict(redis, project, 2)
    flag = LabelerFlagEvent(project=project, labeler_id="ivan", pause=True, statistic=9.1,
                            threshold=8.0, tasks_in_evidence=40)
    await redis.xadd(streams.QUALITY, encode_event(flag.to_json()))
    await groups_idle(redis, (streams.QUALITY, streams.GROUP_ROUTER))
    ivan = await token(engine, "ivan", "labeler", project)
    async with client(services, "router", ivan) as http:
        r = await http.get(f"/v1/projects/{project}/tasks/next")
        assert r.status_code == 423 and "paused" in r.json()["detail"]
    async with client(services, "router", admin) as http:
        assert (await http.get(f"/v1/projects/{project}/queue")).json()["paused"] == ["ivan"]
        assert (await http.delete(f"/v1/projects/{project}/paused/ivan")).json()["unpaused"]
    async with client(services, "router", ivan) as http:
        assert (await http.get(f"/v1/projects/{project}/tasks/next")).status_code == 200


async def test_policy_changes_are_for_admins_validated_and_made_at_the_settings_home(
        services, engine, project):
    labeler = await token(engine, "jo", "labeler", project)
    admin = await token(engine, "root", "admin", project)
    async with client(services, "labels", labeler) as http:
        assert (await http.patch(f"/v1/projects/{project}",
                                 json={"routing": {"overlap": 2}})).status_code == 403
    async with client(services, "labels", admin) as http:
        r = await http.patch(f"/v1/projects/{project}",
                             json={"routing": {"kind": "target_precision"}})
        assert r.status_code == 422 and "target_precision" in r.text
        r = await http.patch(f"/v1/projects/{project}", json={"routing": {"no_such_knob": 1}})
        assert r.status_code == 422
    await configure(services, admin, project, routing={"overlap": 3})
    async with client(services, "router", admin) as http:
        assert (await http.get(f"/v1/projects/{project}/policy")).json()["overlap"] == 3
        # The router has no second door for settings.
        r = await http.put(f"/v1/projects/{project}/policy", json={"overlap": 2})
        assert r.status_code == 405


async def test_tasks_of_a_sensitive_project_go_to_its_members_only(services, engine, redis,
                                                                   project):
    root = await token(engine, f"root-{project}", "admin", "*")  # every project, no membership
    await configure(services, root, project, sensitive=True)
    await _predict(redis, project, 1)
    member = await token(engine, "nina", "labeler", project)
    async with client(services, "router", root) as http:
        r = await http.get(f"/v1/projects/{project}/tasks/next")
        assert r.status_code == 403 and "sensitive" in r.json()["detail"]
    async with client(services, "router", member) as http:
        r = await http.get(f"/v1/projects/{project}/tasks/next")
        assert r.status_code == 200 and r.json()["payload"] == {"image": IMAGE}


async def test_a_repeated_submit_is_harmless_and_only_the_holder_may_submit(services, engine,
                                                                           redis, project):
    await _admin(engine, services, project, gold_rate=0.0)
    await _predict(redis, project, 1)
    alice = await token(engine, "alice", "labeler", project)
    bob = await token(engine, "bob", "labeler", project)
    outsider = await token(engine, "eve", "labeler", f"other-{project}")
    async with client(services, "router", alice) as http:
        task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
        path = f"/v1/tasks/{task['task_id']}/submit"
        async with client(services, "router", bob) as other:
            r = await other.post(path, json={"label": "3"})
            assert r.status_code == 409 and "not handed to you" in r.json()["detail"]
        async with client(services, "router", outsider) as other:
            assert (await other.post(path, json={"label": "3"})).status_code == 403
        first = (await http.post(path, json={"label": "8"})).json()
        again = (await http.post(path, json={"label": "8"})).json()
    assert first["status"] == "recorded" and first["late"] is False
    assert again["status"] == "duplicate" and again["event_id"] == first["event_id"]
    rows = await _rows(engine, redis, project, source="human")
    assert [(r.labeler_id, r.label, r.late_submit) for r in rows] == [("alice", "8", False)]



async def test_a_submit_records_the_time_from_lease_to_submit_measured_by_the_router(
        services, engine, redis, project):
    """The cost of review (human hours) comes from durations the router measures, not from
    what a client says: a claim of a million seconds is replaced by the lease-to-submit
    time, which lies between the think time and the whole exchange as the client saw it."""
    import asyncio
    import time

    await _admin(engine, services, project, gold_rate=0.0)
    await _predict(redis, project, 2, prefix="dur")
    alice = await token(engine, "alice", "labeler", project)
    measured = []
    async with client(services, "router", alice) as http:
        for think in (0.3, 0.6):
            before = time.time()
            task = (await http.get(f"/v1/projects/{project}/tasks/next")).json()
            await asyncio.sleep(think)
            r = await http.post(f"/v1/tasks/{task['task_id']}/submit",
                                json={"label": "3", "duration_ms": 10**9})
            assert r.status_code == 200, r.text
            measured.append((think * 1000, (time.time() - before) * 1000))
    rows = await _rows(engine, redis, project, source="human")
    assert len(rows) == 2
    for row, (think_ms, exchange_ms) in zip(rows, measured, strict=True):
        assert think_ms <= row.duration_ms <= exchange_ms + 1, (row.duration_ms, think_ms)

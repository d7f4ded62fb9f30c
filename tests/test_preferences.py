"""Preference feedback through the four running services: comparisons posted over HTTP and
on the stream, queued with overlap and leases, shown blind in a recorded random order,
judged, stored with provenance, exported for TRL's reward trainer, reverted."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from services.labels.tables import label_events
from shared import streams
from tests.helpers import client, configure, groups_idle, token

pytestmark = pytest.mark.integration


def _comparison(i: int, **extra) -> dict:
    return {"comparison_id": f"cmp-{i}", "prompt": f"Explain item {i}",
            "candidates": [
                {"candidate_id": "a", "text": f"terse answer {i}", "model": "model-small"},
                {"candidate_id": "b", "text": f"careful answer {i}", "model": "model-large"}],
            **extra}


async def _preferences(engine, redis, project):
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    query = (select(label_events).where(label_events.c.project == project)
             .order_by(label_events.c.created_at))
    async with engine.connect() as conn:
        return (await conn.execute(query)).all()


async def _post(services, admin, project, comparisons):
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons",
                            json={"comparisons": comparisons})
        assert r.status_code == 202, r.text
        return r.json()


async def test_a_comparison_is_judged_blind_by_overlap_reviewers_and_stored_with_its_order(
        services, engine, redis, project):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 2})
    await _post(services, admin, project, [_comparison(1)])
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    answers = {}
    for who in ("alice", "bob"):
        bearer = await token(engine, who, "labeler", project)
        async with client(services, "router", bearer) as http:
            task = (await http.get(f"/v1/projects/{project}/comparisons/next")).json()
            assert task["comparison_id"] == "cmp-1"
            assert [c["position"] for c in task["candidates"]] == [1, 2]
            blob = json.dumps(task)
            assert "model-small" not in blob and "model-large" not in blob
            assert "candidate_id" not in blob
            # The same reviewer asking again (a reload) gets the comparison they hold back,
            # in the same order, not a second lease of another.
            again = (await http.get(f"/v1/projects/{project}/comparisons/next")).json()
            assert (again["task_id"], again["candidates"]) == (task["task_id"],
                                                               task["candidates"])
            careful = next(c["position"] for c in task["candidates"]
                           if c["text"].startswith("careful"))
            body = {"verdict": "better", "chosen": careful, "reason": "explains",
                    "duration_ms": 700}
            r = await http.post(f"/v1/comparisons/{task['task_id']}/submit", json=body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["status"] == "recorded" and out["late"] is False
            models = {c["position"]: c["model"] for c in out["reveal"]["candidates"]}
            assert models[careful] == "model-large"
            again = (await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                     json={"verdict": "tie"})).json()
            assert (again["status"], again["event_id"]) == ("duplicate", out["event_id"])
            answers[who] = [c["text"] for c in task["candidates"]]
    # Overlap 2: a third reviewer gets nothing; the task is done.
    carol = await token(engine, "carol", "labeler", project)
    async with client(services, "router", carol) as http:
        assert (await http.get(f"/v1/projects/{project}/comparisons/next")).status_code == 204
    rows = await _preferences(engine, redis, project)
    assert [(r.labeler_id, r.label, r.mode, r.source) for r in rows] == [
        ("alice", "b", "comparison", "human"), ("bob", "b", "comparison", "human")]
    for row in rows:
        shown = [row.preference["texts"][cid] for cid in row.preference["shown_order"]]
        assert shown == answers[row.labeler_id]  # the order recorded is the order shown
        assert row.preference["models"] == {"a": "model-small", "b": "model-large"}
        # The router measures the time from lease to submit; the client's 700 is not kept.
        assert row.preference["reason"] == "explains" and row.duration_ms is not None
        assert row.duration_ms != 700
        assert row.batch_id == f"review:{row.labeler_id}:{row.created_at:%Y-%m-%d}"


async def test_verdicts_ties_and_bad_answers(services, engine, redis, project):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1})
    three = _comparison(9)
    three["candidates"].append({"candidate_id": "c", "text": "wrong answer", "model": "m3"})
    await _post(services, admin, project, [_comparison(1), _comparison(2), three])
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    dana = await token(engine, "dana", "labeler", project)
    async with client(services, "router", dana) as http:
        seen = {}
        for _ in range(3):  # a reviewer holds one comparison at a time: answer, then next
            task = (await http.get(f"/v1/projects/{project}/comparisons/next")).json()
            cid = task["comparison_id"]
            seen[cid] = task
            again = await http.get(f"/v1/projects/{project}/comparisons/next")
            assert again.json()["task_id"] == task["task_id"]  # the held one, as on a reload
            assert again.json()["candidates"] == task["candidates"]  # in the same order
            if cid == "cmp-9":
                wrong = await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                        json={"verdict": "ranked", "ranking": [1, 2]})
                assert wrong.status_code == 422
                assert "every position 1..3" in wrong.json()["detail"]
                texts = [c["text"] for c in task["candidates"]]
                order = sorted(range(1, 4), key=lambda p: ("careful" not in texts[p - 1],
                                                           "wrong" in texts[p - 1]))
                body: dict = {"verdict": "ranked", "ranking": order}
            else:
                # The label route refuses a comparison.
                r = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": "a"})
                assert r.status_code == 409 and "comparisons" in r.json()["detail"]
                body = {"verdict": "tie" if cid == "cmp-1" else "both_bad"}
            r = await http.post(f"/v1/comparisons/{task['task_id']}/submit", json=body)
            assert r.status_code == 200, r.text
        assert set(seen) == {"cmp-1", "cmp-2", "cmp-9"}
        assert (await http.get(f"/v1/projects/{project}/comparisons/next")).status_code == 204
    rows = {r.item_id: r for r in await _preferences(engine, redis, project)}
    assert rows["cmp-9"].label == "b>a>c"
    assert (rows["cmp-1"].label, rows["cmp-2"].label) == ("__tie__", "__both_bad__")

    reviewer = await token(engine, "rita", "reviewer", project)
    async with client(services, "labels", reviewer) as http:
        r = await http.get(f"/v1/projects/{project}/export", params={"format": "trl"})
        assert r.status_code == 200, r.text
        pairs = [json.loads(line) for line in r.text.splitlines()]
    # The ranking gives its three ordered pairs; the tie and "both bad" give none.
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("careful answer 9", "terse answer 9"), ("careful answer 9", "wrong answer"),
        ("terse answer 9", "wrong answer")]
    assert {p["prompt"] for p in pairs} == {"Explain item 9"}


async def _take_all(http, project: str, calls: int, skip: set[str] | None = None
                    ) -> list[dict]:
    """Lease and answer (the careful answer) or skip comparisons, ``calls`` times at most;
    the queue running dry does not stop it (gold pairs come at the gold rate)."""
    served = []
    for _ in range(calls):
        r = await http.get(f"/v1/projects/{project}/comparisons/next")
        if r.status_code == 204:
            continue
        assert r.status_code == 200, r.text
        task = r.json()
        served.append(task)
        if skip is not None and task["comparison_id"] in skip:
            done = await http.post(f"/v1/tasks/{task['task_id']}/skip")
        else:
            careful = next(c["position"] for c in task["candidates"]
                           if c["text"].startswith("careful"))
            done = await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                   json={"verdict": "better", "chosen": careful})
            assert "gold" not in done.text  # the reveal names models, never the gold mark
        assert done.status_code == 200, done.text
    return served


async def test_gold_pairs_are_salted_once_a_reviewer_and_look_like_any_comparison(
        services, engine, redis, project):
    """Gold pairs are not queued: each reviewer gets each at the gold rate, once, in the
    same shape as any comparison; a skipped one goes to nobody else; the store keeps the
    gold mark and the quality service scores each reviewer on them."""
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1, "gold_rate": 0.3})
    gold = {f"cmp-g{i}" for i in range(3)}
    await _post(services, admin, project, [
        *[_comparison(i) for i in range(12)],
        *[{**_comparison(0, gold_choice="b"), "comparison_id": g} for g in sorted(gold)]])
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    served: dict[str, list[dict]] = {}
    # 80 calls at a gold rate of 0.3: the chance a gold pair is never drawn is below 1e-9.
    for who in ("ann", "bob"):
        async with client(services, "router", await token(engine, who, "labeler",
                                                          project)) as http:
            served[who] = await _take_all(http, project, 80)
    ids = {who: [t["comparison_id"] for t in tasks] for who, tasks in served.items()}
    # Each reviewer had each gold pair exactly once; the queued pairs went to one of them.
    for who in ("ann", "bob"):
        assert sorted(i for i in ids[who] if i in gold) == sorted(gold)
    regular = [i for who in ids for i in ids[who] if i not in gold]
    assert sorted(regular) == sorted(f"cmp-{i}" for i in range(12))
    # A gold pair is shown like any comparison: the same fields, no gold mark, no models.
    shapes = {tuple(sorted(t)) for tasks in served.values() for t in tasks}
    assert len(shapes) == 1
    for tasks in served.values():
        for t in tasks:
            blob = json.dumps(t)
            assert "gold" not in blob and "model-large" not in blob
    # A skipped gold pair is not handed to anyone else, nor again to the one who skipped.
    async with client(services, "router", await token(engine, "cy", "labeler",
                                                      project)) as http:
        cy = await _take_all(http, project, 80, skip=gold)
    assert sorted(t["comparison_id"] for t in cy) == sorted(gold)
    async with client(services, "router", await token(engine, "dee", "labeler",
                                                      project)) as http:
        dee = await _take_all(http, project, 80)
    assert sorted(t["comparison_id"] for t in dee) == sorted(gold)

    rows = await _preferences(engine, redis, project)
    gold_rows = [r for r in rows if r.item_id in gold]
    assert len(gold_rows) == 3 * 3  # ann, bob and dee; cy skipped hers
    assert {r.gold_label for r in gold_rows} == {"b"}
    assert {r.preference["gold_choice"] for r in gold_rows} == {"b"}
    assert all(r.gold_label is None for r in rows if r.item_id not in gold)
    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY))
    async with client(services, "quality", admin) as http:
        labelers = (await http.get(f"/v1/projects/{project}/quality")).json()["labelers"]
    for who in ("ann", "bob", "dee"):
        assert labelers[who]["gold_seen"] == 3 and labelers[who]["gold_accuracy"] == 1.0


async def test_a_bad_comparison_is_refused_at_the_door_and_on_the_stream(services, engine,
                                                                         redis, project):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1})  # declared: not a 404
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons", json={"comparisons": [
            _comparison(1, gold_choice="z")]})
        assert r.status_code == 422 and "gold_choice" in r.text
    labeler = await token(engine, "lee", "labeler", project)
    async with client(services, "router", labeler) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons",
                            json={"comparisons": [_comparison(1)]})
        assert r.status_code == 403
    before = await redis.xlen(streams.DEADLETTER)
    bad = {"project": project, "comparison_id": "x", "prompt": "q",
           "candidates": [{"candidate_id": "a", "text": "only one"}]}
    await redis.xadd(streams.COMPARISONS, {"data": json.dumps(bad)})
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    letters = await redis.xrevrange(streams.DEADLETTER, count=5)
    assert await redis.xlen(streams.DEADLETTER) > before
    assert any(b"loopwise:comparisons" in fields[b"data"] and b"candidates" in fields[b"data"]
               for _, fields in letters)


async def test_a_reverted_reviewer_leaves_the_export_and_comes_back_with_an_unrevert(
        services, engine, redis, project):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 2})
    await _post(services, admin, project, [_comparison(i) for i in range(3)])
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    for who, prefers in (("ann", "careful"), ("sloppy", "terse")):
        bearer = await token(engine, who, "labeler", project)
        async with client(services, "router", bearer) as http:
            while (r := await http.get(f"/v1/projects/{project}/comparisons/next")
                   ).status_code == 200:
                task = r.json()
                pick = next(c["position"] for c in task["candidates"]
                            if c["text"].startswith(prefers))
                done = await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                       json={"verdict": "better", "chosen": pick})
                assert done.status_code == 200, done.text
    await _preferences(engine, redis, project)
    async with client(services, "labels", admin) as http:
        p = f"/v1/projects/{project}"

        async def chosen() -> list[str]:
            r = await http.get(f"{p}/export", params={"format": "trl"})
            return sorted(json.loads(line)["chosen"].split()[0] for line in r.text.splitlines())

        assert await chosen() == ["careful"] * 3 + ["terse"] * 3
        snapshot = await http.post(f"{p}/versions", json={"name": "all-reviewers",
                                                         "message": "before the revert"})
        assert snapshot.status_code == 201, snapshot.text
        reverted = await http.post(f"{p}/reverts", json={"labeler_id": "sloppy",
                                                         "message": "picks the shorter"})
        assert reverted.status_code == 200, reverted.text
        number = reverted.json()["version"]["number"]
        assert await chosen() == ["careful"] * 3
        diff = (await http.get(f"{p}/diff", params={"from": "all-reviewers",
                                                    "to": number})).json()
        # sloppy's later verdicts decided each pair; ann's decide them now.
        assert diff["counts"] == {"added": 0, "removed": 0, "changed": 3}
        assert {(c["before"], c["after"]) for c in diff["changed"]} == {("a", "b")}
        assert (await http.post(f"{p}/versions/{number}/revert", json={})).status_code == 200
        assert await chosen() == ["careful"] * 3 + ["terse"] * 3

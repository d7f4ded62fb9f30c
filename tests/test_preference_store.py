"""Preferences in the label store, through the running services' HTTP APIs: the same
provenance, versions, as-of views, diff, rollback of a batch and authorization as labels.

Two reviewers judge three comparisons (ann prefers the careful answer, zed the terse
one); a version freezes that round; a fourth comparison comes after it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared import streams
from tests.helpers import client, configure, groups_idle, token

pytestmark = pytest.mark.integration


def _comparison(i: int, **extra) -> dict:
    return {"comparison_id": f"cmp-{i}", "prompt": f"Explain item {i}",
            "candidates": [
                {"candidate_id": "a", "text": f"terse answer {i}", "model": "model-small"},
                {"candidate_id": "b", "text": f"careful answer {i}", "model": "model-large"}],
            **extra}


async def _post(services, admin: str, project: str, comparisons: list[dict], redis) -> None:
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons",
                            json={"comparisons": comparisons})
        assert r.status_code == 202, r.text
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))


async def _judge_all(services, bearer: str, project: str, prefers: str, redis,
                     reason: str | None = None) -> int:
    done = 0
    async with client(services, "router", bearer) as http:
        while (r := await http.get(f"/v1/projects/{project}/comparisons/next")
               ).status_code == 200:
            task = r.json()
            pick = next(c["position"] for c in task["candidates"]
                        if c["text"].startswith(prefers))
            body = {"verdict": "better", "chosen": pick, "guideline_version": "g2"}
            if reason:
                body["reason"] = reason
            out = await http.post(f"/v1/comparisons/{task['task_id']}/submit", json=body)
            assert out.status_code == 200, out.text
            done += 1
        assert r.status_code == 204, r.text
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))
    return done


def _pairs(text: str) -> list[tuple[str, str]]:
    return sorted((p["chosen"], p["rejected"]) for p in map(json.loads, text.splitlines()))


async def test_preferences_have_provenance_versions_as_of_diff_and_batch_rollback(
        services, engine, redis, project):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 2})
    await _post(services, admin, project, [_comparison(i) for i in range(3)], redis)
    ann = await token(engine, "ann", "labeler", project)
    zed = await token(engine, "zed", "labeler", project)
    assert await _judge_all(services, ann, project, "careful", redis, "explains why") == 3
    assert await _judge_all(services, zed, project, "terse", redis) == 3
    between = datetime.now(UTC)
    reviewer = await token(engine, "rita", "reviewer", project)
    p = f"/v1/projects/{project}"
    async with client(services, "labels", reviewer) as http:
        # Provenance: who, which batch, task, guideline, the order shown, the models.
        labels = (await http.get(f"{p}/labels")).json()["labels"]
        assert sorted(r["item_id"] for r in labels) == ["cmp-0", "cmp-1", "cmp-2"]
        for row in labels:
            assert row["mode"] == "comparison" and row["guideline_version"] == "g2"
            assert row["batch_id"].startswith(f"review:{row['labeler_id']}:")
            pref = row["preference"]
            assert sorted(pref["shown_order"]) == ["a", "b"]
            assert pref["models"] == {"a": "model-small", "b": "model-large"}
        trace = (await http.get(f"{p}/items/cmp-1/trace")).json()
        history = {h["labeler_id"]: h for h in trace["history"]}
        assert set(history) == {"ann", "zed"} and all(h["counts"] for h in history.values())
        assert (history["ann"]["label"], history["zed"]["label"]) == ("b", "a")
        assert history["ann"]["preference"]["reason"] == "explains why"
        assert trace["decided_by"]["preference"]["verdict"] == "better"
        zed_batch = history["zed"]["batch_id"]

        r = await http.post(f"{p}/versions", json={"name": "round-1", "message": "3 pairs"})
        assert r.status_code == 201, r.text

    await _post(services, admin, project, [_comparison(3)], redis)
    assert await _judge_all(services, ann, project, "careful", redis) == 1

    async with client(services, "labels", reviewer) as http:
        async def export(**params) -> list[tuple[str, str]]:
            r = await http.get(f"{p}/export", params={"format": "trl", **params})
            assert r.status_code == 200, r.text
            return _pairs(r.text)

        first_round = sorted([(f"careful answer {i}", f"terse answer {i}") for i in range(3)]
                             + [(f"terse answer {i}", f"careful answer {i}") for i in range(3)])
        assert await export(version="round-1") == first_round
        assert await export(as_of=between.isoformat()) == first_round
        assert await export() == sorted([*first_round, ("careful answer 3", "terse answer 3")])
        frozen = (await http.get(f"{p}/labels", params={"version": "round-1"})).json()
        assert sorted(r["item_id"] for r in frozen["labels"]) == ["cmp-0", "cmp-1", "cmp-2"]
        diff = (await http.get(f"{p}/diff", params={"from": "round-1", "to": "head"})).json()
        assert diff["counts"] == {"added": 1, "removed": 0, "changed": 0}

    # Rollback of zed's batch: a dry run tells, the revert removes, the unrevert restores.
    async with client(services, "labels", admin) as http:
        preview = await http.post(f"{p}/reverts", json={"batch_id": zed_batch, "dry_run": True})
        assert preview.status_code == 200, preview.text
        assert await export_of(http, p) == sorted(
            [*first_round, ("careful answer 3", "terse answer 3")])  # a dry run changes nothing
        done = await http.post(f"{p}/reverts", json={"batch_id": zed_batch,
                                                     "message": "zed picks the shorter"})
        assert done.status_code == 200, done.text
        number = done.json()["version"]["number"]
        assert await export_of(http, p) == [(f"careful answer {i}", f"terse answer {i}")
                                            for i in range(4)]
        diff = (await http.get(f"{p}/diff", params={"from": "round-1", "to": number})).json()
        assert diff["counts"]["added"] == 1
        # zed judged after ann, so zed's verdicts decided each pair; ann's decide them now.
        assert {(c["item_id"], c["before"], c["after"]) for c in diff["changed"]} == {
            (f"cmp-{i}", "a", "b") for i in range(3)}
        trace = (await http.get(f"{p}/items/cmp-1/trace")).json()
        reverted = next(h for h in trace["history"] if h["labeler_id"] == "zed")
        assert reverted["counts"] is False and reverted["excluded_by_version"] == number
        # The version before the revert still holds zed's judgments.
        r = await http.get(f"{p}/export", params={"format": "trl", "version": "round-1"})
        assert _pairs(r.text) == first_round
        back = await http.post(f"{p}/versions/{number}/revert", json={})
        assert back.status_code == 200, back.text
        assert len(await export_of(http, p)) == 7


async def export_of(http, p: str) -> list[tuple[str, str]]:
    r = await http.get(f"{p}/export", params={"format": "trl"})
    assert r.status_code == 200, r.text
    return _pairs(r.text)


async def test_who_may_read_export_and_revert_preferences(services, engine, redis, project):
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1, "gold_rate": 1.0})
    await _post(services, admin, project, [_comparison(0, gold_choice="b"), _comparison(1)],
                redis)
    ann = await token(engine, "ann", "labeler", project)
    assert await _judge_all(services, ann, project, "terse", redis) == 2
    p = f"/v1/projects/{project}"
    async with client(services, "labels", ann) as http:
        # A labeler reads only her own verdicts: no models, no gold mark, no texts.
        own = (await http.get(f"{p}/labels")).json()
        assert sorted((r["item_id"], r["label"]) for r in own["labels"]) == [
            ("cmp-0", "a"), ("cmp-1", "a")]
        blob = json.dumps(own)
        assert "model-large" not in blob and "answer" not in blob
        # typed rows carry every field; the gold mark and the preference stay empty
        for r in own["labels"]:
            assert r["gold_label"] is None and r.get("preference") is None
            assert not any("gold" in str(v) for v in r.values() if v is not None)
        assert (await http.get(f"{p}/export", params={"format": "trl"})).status_code == 403
        assert (await http.get(f"{p}/items/cmp-0/trace")).status_code == 403
        assert (await http.post(f"{p}/reverts", json={"labeler_id": "ann"})).status_code == 403
    reviewer = await token(engine, "rita", "reviewer", project)
    async with client(services, "labels", reviewer) as http:
        assert (await http.post(f"{p}/reverts", json={"labeler_id": "ann"})).status_code == 403
        assert (await http.get(f"{p}/export", params={"format": "trl"})).status_code == 200

    # A sensitive project: its prompts and candidate texts are for its members only.
    secret = project + "-s"
    s_admin = await token(engine, "s-admin", "admin", secret)
    await configure(services, s_admin, secret, sensitive=True, routing={"overlap": 1})
    await _post(services, s_admin, secret, [_comparison(7)], redis)
    member = await token(engine, "sam", "labeler", secret)
    assert await _judge_all(services, member, secret, "careful", redis) == 1
    root = await token(engine, "root", "admin", "*")
    s = f"/v1/projects/{secret}"
    async with client(services, "labels", root) as http:
        r = await http.get(f"{s}/export", params={"format": "trl"})
        assert r.status_code == 403 and "sensitive" in r.json()["detail"]
        rows = (await http.get(f"{s}/labels")).json()["labels"]
        trace = (await http.get(f"{s}/items/cmp-7/trace")).json()
        for seen in (rows[0]["preference"], trace["decided_by"]["preference"],
                     trace["history"][0]["preference"]):
            assert seen["verdict"] == "better" and seen["models"]["b"] == "model-large"
            assert "texts" not in seen and "prompt" not in seen
        assert "careful answer 7" not in json.dumps([rows, trace])
    async with client(services, "labels", s_admin) as http:
        r = await http.get(f"{s}/export", params={"format": "trl"})
        assert r.status_code == 200 and _pairs(r.text) == [("careful answer 7",
                                                            "terse answer 7")]

"""Preference quality through the running services: agreement between the reviewers of a
pair, gold pairs, and a reviewer who always picks the first-shown candidate flagged by
the position-bias test and paused like a deferring labeler (423)."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select

from services.labels.tables import label_events
from services.quality.position_bias import PositionBiasTest
from shared import streams
from tests.helpers import client, configure, groups_idle, token

pytestmark = pytest.mark.integration
PAIRS = 60
GOLD = 10


def _comparison(i: int) -> dict:
    body = {"comparison_id": f"pair-{i:03d}", "prompt": f"Which explains item {i}?",
            "candidates": [{"candidate_id": "a", "text": f"bad answer {i}", "model": "m1"},
                           {"candidate_id": "b", "text": f"good answer {i}", "model": "m2"}]}
    if i < GOLD:
        body["gold_choice"] = "b"
    return body


async def test_agreement_gold_and_a_first_position_picker_flagged_and_paused(
        services, engine, redis, project):
    admin = await token(engine, "admin", "admin", project)
    # gold rate 1: each reviewer gets the gold pairs first, once each (salted, not queued)
    await configure(services, admin, project, routing={"overlap": 3, "gold_rate": 1.0},
                    quality={"auto_pause": True})
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/comparisons",
                            json={"comparisons": [_comparison(i) for i in range(PAIRS)]})
        assert r.status_code == 202, r.text
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    # The test's threshold, in first-shown picks in a row (each adds log(0.65 / 0.5)).
    test = PositionBiasTest()
    needed = math.ceil(test.threshold / test.llr(True, 2))
    assert needed < PAIRS

    judged: dict[str, int] = {}
    for who in ("hana", "hugo", "lazy"):
        bearer = await token(engine, who, "labeler", project)
        judged[who] = 0
        async with client(services, "router", bearer) as http:
            while (got := await http.get(f"/v1/projects/{project}/comparisons/next")
                   ).status_code == 200:
                task = got.json()
                pick = 1 if who == "lazy" else next(
                    c["position"] for c in task["candidates"] if c["text"].startswith("good"))
                done = await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                       json={"verdict": "better", "chosen": pick})
                assert done.status_code == 200, done.text
                judged[who] += 1
                if who == "lazy":  # let the quality service see each judgment
                    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY),
                                      (streams.QUALITY, streams.GROUP_ROUTER))
            final = got
        if who == "lazy":
            assert final.status_code == 423 and "paused" in final.json()["detail"]
        else:
            assert final.status_code == 204
    # Paused right after the judgment that crossed the threshold.
    assert judged == {"hana": PAIRS, "hugo": PAIRS, "lazy": needed}
    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY),
                      (streams.LABELS, streams.GROUP_LABELS))

    async with client(services, "quality", admin) as http:
        quality = (await http.get(f"/v1/projects/{project}/quality")).json()
    flags = {f["labeler_id"]: f for f in quality["flags"]}
    assert set(flags) == {"lazy"}
    assert flags["lazy"]["test"].startswith("position bias")
    assert flags["lazy"]["tasks_in_evidence"] == needed and flags["lazy"]["pause"] is True
    lazy = quality["labelers"]["lazy"]["position_bias"]
    assert lazy == {"comparisons": needed, "first_shown_share": 1.0, "flagged": True,
                    "statistic": pytest.approx(1.0, abs=0.03)}
    assert quality["labelers"]["hana"]["position_bias"]["flagged"] is False

    # Agreement on each pair, from the orders the reviewers were shown: hana and hugo
    # always agree; lazy agrees with them when the good answer happened to come first.
    async with engine.connect() as conn:
        rows = (await conn.execute(select(label_events).where(
            label_events.c.project == project, label_events.c.labeler_id == "lazy"))).all()
    good_first = sum(r.preference["shown_order"][0] == "b" for r in rows)
    agreeing = PAIRS + 2 * good_first  # (hana, hugo) on every pair, lazy's two pairs where right
    total = PAIRS + 2 * needed
    assert (quality["agreeing_pairs"], quality["total_pairs"]) == (agreeing, total)
    assert quality["pairwise_agreement"] == pytest.approx(agreeing / total)
    # Gold pairs: the honest reviewers got all right; lazy as often as the good one came first.
    for who in ("hana", "hugo"):
        assert quality["labelers"][who]["gold_seen"] == GOLD
        assert quality["labelers"][who]["gold_accuracy"] == 1.0
    lazy_gold = [r for r in rows if r.gold_label is not None]
    assert quality["labelers"]["lazy"]["gold_seen"] == len(lazy_gold)
    if lazy_gold:
        assert quality["labelers"]["lazy"]["gold_accuracy"] == pytest.approx(
            sum(r.label == "b" for r in lazy_gold) / len(lazy_gold))

    # A review clears the flag: lazy is unpaused and watched afresh.
    async with client(services, "quality", admin) as http:
        r = await http.post(f"/v1/projects/{project}/flags/lazy/clear", json={"note": "talked"})
        assert r.status_code == 200, r.text
    await groups_idle(redis, (streams.QUALITY, streams.GROUP_ROUTER))
    async with client(services, "quality", admin) as http:
        after = (await http.get(f"/v1/projects/{project}/quality")).json()
    assert after["flags"] == []
    assert after["labelers"]["lazy"]["position_bias"]["statistic"] == 0.0

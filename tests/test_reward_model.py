"""The reward model through the running services, on the bundled world's known truth:
pairs queued by the scorer's selector, judged over HTTP by simulated reviewers, a
Bradley-Terry version trained on the stored preferences, checked against the hidden
quality; then the active selector serves the least sure pairs first."""

from __future__ import annotations

import numpy as np
import pytest

from loopwise.preference_world import World
from shared import streams
from tests.helpers import client, configure, groups_idle, token

pytestmark = pytest.mark.integration


def _pool(prompts) -> list[dict]:
    return [{"prompt_id": p.prompt_id, "prompt": p.text,
             "candidates": [{"candidate_id": c.candidate_id, "text": c.text, "model": c.model}
                            for c in p.candidates]} for p in prompts]


async def test_a_reward_model_trained_on_judged_pairs_orders_answers_by_their_quality(
        services, engine, redis, project):
    world = World.make(seed=11, train_prompts=40, test_prompts=20)
    by_text = {c.text: c for p in world.train + world.test for c in p.candidates}
    admin = await token(engine, "admin", "admin", project)
    await configure(services, admin, project, routing={"overlap": 1})
    p = f"/v1/projects/{project}"
    async with client(services, "scorer", admin) as scorer:
        r = await scorer.post(f"{p}/reward/train")
        assert r.status_code == 409 and "no preference" in r.json()["detail"]
        r = await scorer.post(f"{p}/reward/select", json={
            "prompts": _pool(world.train), "budget": 150, "strategy": "active"})
        assert r.status_code == 202, r.text
        first = r.json()
        # No reward model yet: nothing to be unsure with, so the pairs are random.
        assert first["strategy"] == "random" and first["reward_model"] is None
        assert len(first["selected"]) == 150 and first["pool_pairs"] == 240
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))

    reviewers = world.reviewers[:3]
    bearers = [await token(engine, r.name, "labeler", project) for r in reviewers]
    rng = np.random.default_rng(0)
    judged = 0
    while True:
        took = 0
        for who, bearer in zip(reviewers, bearers, strict=True):
            async with client(services, "router", bearer) as http:
                got = await http.get(f"{p}/comparisons/next")
                if got.status_code == 204:
                    continue
                task = got.json()
                first_c, second_c = (by_text[c["text"]] for c in task["candidates"])
                pick = world.judge(who, first_c, second_c, rng)
                done = await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                       json={"verdict": "better", "chosen": pick})
                assert done.status_code == 200, done.text
                took += 1
        judged += took
        if not took:
            break
    assert judged == 150
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))

    async with client(services, "scorer", admin) as scorer:
        r = await scorer.post(f"{p}/reward/train")
        assert r.status_code == 200, r.text
        trained = r.json()
        assert trained["version"] == f"{project}-r1" and trained["pair_count"] == 150
        assert trained["metrics"]["held_out_pairwise_accuracy"] is not None
        listed = (await scorer.get(f"{p}/reward/models")).json()["models"]
        assert [m["version"] for m in listed] == [f"{project}-r1"]
        # Against the hidden quality, on prompts it never saw.
        test_pairs = [(a, b) for q in world.test for a, b in q.pairs() if a.quality != b.quality]
        texts = sorted({c.text for pair in test_pairs for c in pair})
        scores = dict(zip(texts, (await scorer.post(f"{p}/reward/score", json={
            "texts": texts})).json()["scores"], strict=True))
        right = [(scores[a.text] > scores[b.text]) == (a.quality > b.quality)
                 for a, b in test_pairs]
        assert np.mean(right) > 0.7, np.mean(right)

        r = await scorer.post(f"{p}/reward/select", json={
            "prompts": _pool(world.test), "budget": 10, "strategy": "active"})
        assert r.status_code == 202, r.text
        active = r.json()
    assert active["strategy"] == "active" and active["reward_model"] == f"{project}-r1"
    picked = active["selected"]
    assert len({s["comparison_id"].split(":")[0] for s in picked}) == 10  # one pair a prompt
    assert all(0 <= s["priority"] <= 1 for s in picked)
    await groups_idle(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
    # The least sure pairs reach reviewers first.
    served = []
    async with client(services, "router", bearers[0]) as http:
        for _ in range(len(picked) + 1):  # bounded: a held lease is given back each time
            got = await http.get(f"{p}/comparisons/next")
            if got.status_code != 200:
                break
            served.append(got.json()["comparison_id"])
            # a reviewer holds one lease at a time: give this one back to see the next
            r = await http.post(f"/v1/tasks/{got.json()['task_id']}/skip")
            assert r.status_code == 200, r.text
    want = [s["comparison_id"] for s in sorted(picked, key=lambda s: -s["priority"])]
    assert served == want

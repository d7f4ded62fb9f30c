"""The model trained on the loop's labels against its baselines, through the real
services: items at the scorer, gold at the router, the label history at the labels
service, the evaluation at the quality service (which asks the scorer), and the report
with its learning curves in headless Chromium."""

from __future__ import annotations

import pytest

from loopwise.evaluation_report import write_report
from services.scorer.comparison import BETTER, NO_DIFFERENCE
from shared import streams
from shared.events import LabelEvent
from shared.wire import encode_event
from tests.helpers import client, groups_idle, token
from tests.scorer.test_comparison import _project
from tests.test_evaluate_project import report_renders

pytestmark = pytest.mark.integration


async def _stored_project(services, engine, redis, project, *, review_fixes: bool) -> str:
    """A project whose truth is known (tests.scorer.test_comparison._project), put where
    each fact lives; returns a reviewer's token."""
    events, _, gold, inputs = _project(first_answer_wrong=0.8 if review_fixes else 0.3,
                                       review_fixes=review_fixes)
    admin = await token(engine, "ada", "admin", project)
    async with client(services, "scorer", admin) as http:
        r = await http.post(f"/v1/projects/{project}/items", json={"items": [
            {"item_id": item, "features": vector} for item, vector in inputs.items()]})
        assert r.status_code == 200, r.text
    async with client(services, "router", admin) as http:
        r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
            {"item_id": item, "label": label} for item, label in gold.items()]})
        assert r.status_code == 200, r.text
    pipe = redis.pipeline(transaction=False)
    for e in events:
        adjudicated = e["source"] == "adjudicated"
        event = LabelEvent(
            project=project, item_id=e["item_id"], label=e["label"],
            labeler_id="rev" if adjudicated else "ann", source=e["source"],
            mode=None if adjudicated else "blind", created_at=e["created_at"],
            gold_label=gold.get(e["item_id"]), duration_ms=20_000)
        pipe.xadd(streams.LABELS, encode_event(event.to_json()))
    await pipe.execute()
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS),
                      (streams.LABELS, streams.GROUP_QUALITY))
    return await token(engine, "rita", "reviewer", project)


async def _evaluation(services, bearer, project) -> dict:
    async with client(services, "quality", bearer) as http:
        r = await http.get(f"/v1/projects/{project}/evaluation", timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


async def test_review_that_fixes_labels_shows_as_a_better_model_in_the_evaluation_and_report(
        services, engine, redis, project, tmp_path):
    bearer = await _stored_project(services, engine, redis, project, review_fixes=True)
    result = await _evaluation(services, bearer, project)
    comparison = result["model_comparison"]
    assert comparison["available"], comparison
    assert (comparison["budget"], comparison["gold_items"]) == (180, 150)
    single = comparison["arms"]["single_unreviewed"]
    assert single["versus_loop"]["verdict"] == BETTER
    assert comparison["arms"]["loop"]["accuracy"]["rate"] > single["accuracy"]["rate"] + 0.15
    # the scorer's own route answers the same (one use case)
    async with client(services, "scorer", bearer) as http:
        direct = (await http.get(f"/v1/projects/{project}/comparison", timeout=120)).json()
    assert direct["arms"]["loop"] == comparison["arms"]["loop"]

    texts = await report_renders(write_report(result, tmp_path / "report"),
                                 texts=("model-comparison",))
    assert "single unreviewed labels" in texts["model-comparison"]
    assert BETTER in texts["model-comparison"]


async def test_review_that_changes_nothing_shows_no_difference(services, engine, redis,
                                                               project):
    bearer = await _stored_project(services, engine, redis, project, review_fixes=False)
    # A frozen label set: the comparison names its version (a number, as the labels
    # service numbers them; a typed answer that said otherwise was a 500).
    async with client(services, "labels", await token(engine, "ada", "admin", project)) as h:
        r = await h.post(f"/v1/projects/{project}/versions", json={"name": "round-1"})
        assert r.status_code in (200, 201), r.text
        number = r.json()["number"]
    comparison = (await _evaluation(services, bearer, project))["model_comparison"]
    assert comparison["available"], comparison
    assert comparison["label_set_version"] == number
    versus = comparison["arms"]["single_unreviewed"]["versus_loop"]
    assert versus["verdict"] == NO_DIFFERENCE
    assert comparison["curves"]["loop"] == comparison["curves"]["single_unreviewed"]


async def test_a_labeler_may_not_read_the_comparison(services, engine, project):
    labeler = await token(engine, "lou", "labeler", project)
    async with client(services, "scorer", labeler) as http:
        r = await http.get(f"/v1/projects/{project}/comparison")
    assert r.status_code == 403, r.text

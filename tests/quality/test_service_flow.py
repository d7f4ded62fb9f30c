"""The quality service on the real stream: Redis, PostgreSQL and the four service processes.

Labels go onto ``loopwise:labels`` in the wire format; what the quality service says
is read back from ``loopwise:quality`` / ``loopwise:labels``, its HTTP summary and
its /metrics.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from services.labels.tables import label_events
from services.quality.service import QualityService
from services.router.queue import project_key
from shared import streams
from shared.events import LabelEvent
from shared.settings import Settings
from shared.wire import encode_event
from tests.helpers import client, groups_idle, metrics_text, token, wait_for

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def push(redis, events: list[LabelEvent]) -> None:
    pipe = redis.pipeline(transaction=False)
    for event in events:
        pipe.xadd(streams.LABELS, encode_event(event.to_json()))
    await pipe.execute()


async def quality_events(redis, project: str, type_: str) -> list[dict]:
    found = []
    for _, fields in await redis.xrange(streams.QUALITY):
        body = json.loads(fields[b"data"])
        if body.get("project") == project and body.get("type") == type_:
            found.append(body)
    return found


def human(project, item, who, label, i=0, **extra) -> LabelEvent:
    return LabelEvent(project=project, item_id=item, labeler_id=who, label=label,
                      source="human", mode=extra.pop("mode", "blind"),
                      created_at=T0 + timedelta(seconds=i), **extra)


async def _restarted(engine) -> tuple[QualityService, list]:
    """A quality service rebuilt from the database as a restart does; what it published."""
    said: list = []

    async def publish(stream: str, events: list) -> list[str]:
        said.extend(events)
        return []

    service = QualityService(SimpleNamespace(engine=engine,  # type: ignore[arg-type]
                                             bus=SimpleNamespace(publish=publish)))
    await service._load()
    return service, said


async def summary(settings, engine, project) -> dict:
    bearer = await token(engine, "reviewer-1", "reviewer", project)
    async with client(settings, "quality", bearer) as http:
        r = await http.get(f"/v1/projects/{project}/quality")
        assert r.status_code == 200, r.text
        return r.json()


async def test_conflicting_labels_are_adjudicated_and_consensus_is_published(
    services, engine, redis, project
):
    settings = services
    events = []
    for i in range(30):
        truth = ("cat", "dog")[i % 2]
        events += [human(project, f"i{i}", who, truth, i, guideline_version="g1")
                   for who in ("ann", "ben", "cid")]
    events += [human(project, "conflict", "ann", "cat", 99),
               human(project, "conflict", "ben", "dog", 99)]
    await push(redis, events)

    async def asked() -> bool:
        return bool(await quality_events(redis, project, "adjudication_request"))

    await wait_for(asked, 60, "an adjudication request")
    (request,) = await quality_events(redis, project, "adjudication_request")
    assert request["item_id"] == "conflict"
    assert request["labels"] == {"ann": "cat", "ben": "dog"}
    assert request["reason"] == "split_vote"
    assert request["consensus"] in ("cat", "dog")
    assert 0 <= request["confidence"] <= 1

    # Consensus labels went out on the label stream, and the labels service stored them.
    await groups_idle(redis, (streams.LABELS, streams.GROUP_LABELS))

    async def consensus_stored() -> bool:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(label_events).where(
                label_events.c.project == project, label_events.c.source == "consensus"))).all()
        return len(rows) >= 30

    await wait_for(consensus_stored, 30, "consensus labels in the label store")
    async with engine.connect() as conn:
        rows = (await conn.execute(select(label_events).where(
            label_events.c.project == project, label_events.c.source == "consensus"))).all()
    by_item = {r.item_id: r for r in rows}
    assert by_item["i0"].label == "cat" and by_item["i1"].label == "dog"
    assert by_item["i0"].labeler_id == "quality:dawid-skene"
    assert by_item["i0"].confidence > 0.9
    assert len(rows) == len(by_item)  # one consensus event per item, no duplicates
    assert all(r.batch_id and r.batch_id.startswith("consensus:") for r in rows)

    # A reviewer adjudicates; the summary shows the item settled.
    await push(redis, [LabelEvent(project=project, item_id="conflict", labeler_id="rita",
                                  label="dog", source="adjudicated", mode="adjudication",
                                  created_at=T0 + timedelta(seconds=200))])
    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY))
    report: dict = {}

    async def statistics_ready() -> bool:  # on their own, slower schedule than consensus
        nonlocal report
        report = await summary(settings, engine, project)
        return "windows" in report["agreement"]

    await wait_for(statistics_ready, 60, "the agreement statistics")
    assert report["adjudication"]["labels"] == {"conflict": "dog"}
    assert report["adjudication"]["open"] == []
    assert report["consensus"]["items_with_consensus"] >= 30
    assert report["labelers"]["ann"]["agreement_with_consensus"] > 0.9
    overall = report["agreement"]["windows"]["all"]
    alpha = overall["krippendorff_alpha"]["nominal"]
    assert alpha["low"] <= alpha["estimate"] <= alpha["high"]
    assert overall["fleiss_kappa"]["ratings_per_item"] == 3
    assert {tuple(p["labelers"]) for p in overall["cohen_kappa"]} >= {("ann", "ben")}
    # Recomputing after the adjudication asked nothing new.
    assert len(await quality_events(redis, project, "adjudication_request")) == 1


async def test_a_rubber_stamper_is_flagged_paused_and_their_labels_sent_for_re_review(
    services, engine, redis, project
):
    settings = services
    events = []
    for i in range(300):
        planted = i % 4 == 0
        truth = ("a", "b", "c")[i % 3]
        model = truth if i % 7 else ("a", "b", "c")[(i + 1) % 3]
        shown = ("a", "b", "c")[(i + 1) % 3] if planted else model
        common = dict(mode="prelabel", shown_prelabel=shown, model_label=model,
                      planted_prelabel=planted, gold_label=truth if planted else None)
        # The honest reviewer gives the truth; the rubber-stamper keeps whatever is shown.
        events.append(human(project, f"h{i}", "honest", truth, i, **common))
        events.append(human(project, f"s{i}", "stamper", shown, i, **common))
    await push(redis, events)

    async def flagged() -> bool:
        return bool(await quality_events(redis, project, "labeler_flag"))

    await wait_for(flagged, 60, "a labeler flag")
    await groups_idle(redis, (streams.LABELS, streams.GROUP_QUALITY))
    flags = await quality_events(redis, project, "labeler_flag")
    assert [f["labeler_id"] for f in flags] == ["stamper"]
    detail = flags[0]
    assert detail["pause"] is True
    assert detail["statistic"] >= detail["threshold"]
    since = datetime.fromisoformat(detail["evidence_since"])
    assert since >= T0
    assert detail["re_review_items"]
    assert all(item.startswith("s") for item in detail["re_review_items"])
    assert detail["re_review_items"][0] == f"s{int((since - T0).total_seconds())}"

    report = await summary(settings, engine, project)
    assert report["labelers"]["stamper"]["flagged"] and report["labelers"]["stamper"]["paused"]
    assert report["labelers"]["stamper"]["gold_catch_rate"] == 0.0
    assert report["labelers"]["honest"]["gold_catch_rate"] == 1.0
    assert not report["labelers"]["honest"]["flagged"]
    assert report["labelers"]["honest"]["correction_rate"] > 0
    text = await metrics_text(settings, "quality")
    assert f'loopwise_flagged_labelers{{project="{project}"}} 1.0' in text
    assert f'loopwise_gold_catch_rate{{labeler="stamper",project="{project}"}} 0.0' in text

    # The router heard the flag and paused the stamper.
    paused_key = project_key("paused", project, Settings().shards)
    await groups_idle(redis, (streams.QUALITY, streams.GROUP_ROUTER))
    assert await redis.sismember(paused_key, "stamper")

    # A reviewer looked at the evidence; only an admin clears the flag.
    reviewer = await token(engine, "rev-1", "reviewer", project)
    async with client(settings, "quality", reviewer) as http:
        r = await http.post(f"/v1/projects/{project}/flags/stamper/clear", json={})
        assert r.status_code == 403, r.text
    admin = await token(engine, "boss", "admin", project)
    async with client(settings, "quality", admin) as http:
        r = await http.post(f"/v1/projects/{project}/flags/honest/clear", json={})
        assert r.status_code == 404 and "not flagged" in r.json()["detail"]
        r = await http.post(f"/v1/projects/{project}/flags/stamper/clear",
                            json={"note": "retrained on the guideline"})
        assert r.status_code == 200, r.text
        cleared = r.json()
    assert cleared["cleared_by"] == "boss" and cleared["note"] == "retrained on the guideline"
    assert cleared["flag"]["evidence_since"] == detail["evidence_since"]
    assert [e["labeler_id"] for e in await quality_events(redis, project,
                                                          "labeler_flag_cleared")] == ["stamper"]
    await groups_idle(redis, (streams.QUALITY, streams.GROUP_ROUTER))
    assert not await redis.sismember(paused_key, "stamper")  # the router unpaused them
    report = await summary(settings, engine, project)
    stamper = report["labelers"]["stamper"]
    assert not stamper["flagged"] and not stamper["paused"]
    assert stamper["deference_statistic"] == 0.0  # watched afresh
    assert report["flags"] == []
    # A restart replays the stored votes and findings: the cleared flag stays cleared.
    replayed, said = await _restarted(engine)
    assert "stamper" not in replayed.state(project).flags
    assert not replayed.state(project).monitors["stamper"].flagged
    assert [e for e in said if e.project == project] == []

    # Stamping on is new evidence: flagged again, said in a new event.
    more = []
    for i in range(300, 600):
        planted = i % 4 == 0
        truth = ("a", "b", "c")[i % 3]
        shown = ("a", "b", "c")[(i + 1) % 3] if planted else truth
        more.append(human(project, f"s{i}", "stamper", shown, i, mode="prelabel",
                          shown_prelabel=shown, model_label=truth, planted_prelabel=planted,
                          gold_label=truth if planted else None))
    await push(redis, more)

    async def flagged_again() -> bool:
        return len(await quality_events(redis, project, "labeler_flag")) == 2

    await wait_for(flagged_again, 60, "a second labeler flag")
    second = (await quality_events(redis, project, "labeler_flag"))[1]
    assert datetime.fromisoformat(second["evidence_since"]) >= T0 + timedelta(seconds=300)
    assert (await summary(settings, engine, project))["labelers"]["stamper"]["flagged"]
    replayed, said = await _restarted(engine)
    assert replayed.state(project).flags["stamper"]["evidence_since"] == second["evidence_since"]
    assert replayed.state(project).monitors["stamper"].flagged
    assert [e for e in said if e.project == project] == []  # nothing said twice


async def test_a_confused_class_raises_a_guideline_alert(services, engine, redis, project):
    events = []
    for i in range(90):
        truth = ("cat", "dog", "bird")[i % 3]
        for j, who in enumerate(("ann", "ben", "cid")):
            label = truth
            if truth == "bird" and (i + j) % 2:
                label = "dog"  # everyone confuses birds with dogs under guideline g2
            events.append(human(project, f"i{i}", who, label, i, guideline_version="g2"))
    await push(redis, events)

    async def alerted() -> bool:
        return bool(await quality_events(redis, project, "guideline_alert"))

    await wait_for(alerted, 60, "a guideline alert")
    alerts = await quality_events(redis, project, "guideline_alert")
    classes = {(a["class"], a["guideline_version"]) for a in alerts}
    assert ("bird", "g2") in classes and ("cat", "g2") not in classes
    bird = next(a for a in alerts if a["class"] == "bird")
    assert bird["agreement"] < bird["threshold"] == 0.6
    assert "labeler_id" not in bird  # about the guideline, not a labeler
    report = await summary(services, engine, project)
    assert any(a["class"] == "bird" for a in report["guideline_alerts"])

"""The quality events: one typed model per type, read through one entry point.

Each type round-trips through its JSON; an entry with an unknown type, no type or a
missing typed field is refused, and the real bus dead-letters it with that reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from shared import streams
from shared.bus import Bus, Delivery, body_error
from shared.events import (
    AdjudicationRequestEvent,
    FlagSummary,
    GuidelineAlertEvent,
    LabelerFlagClearedEvent,
    LabelerFlagEvent,
    QualityEvent,
    QualityEventBase,
)
from shared.wire import encode_event
from tests.helpers import wait_for

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FLAG = LabelerFlagEvent(
    project="p", labeler_id="stamper", pause=True, evidence_since=AT, flagged_at=AT,
    statistic=9.25, threshold=8.0, tasks_in_evidence=40, gold_catch_rate=0.0,
    correction_rate=0.1, model_error_rate=0.05, re_review_items=["s1", "s2"])
EVENTS: list[QualityEventBase] = [
    FLAG,
    LabelerFlagClearedEvent(
        project="p", labeler_id="stamper", cleared_by="boss", note="retrained",
        cleared_at=AT, tasks_seen=57,
        flag=FlagSummary(flagged_at=AT, evidence_since=AT, statistic=9.25, tasks_in_evidence=40)),
    AdjudicationRequestEvent(project="p", item_id="it-1", labels={"ann": "cat", "ben": "dog"},
                             consensus="cat", confidence=0.5, reason="split_vote"),
    GuidelineAlertEvent(project="p", label_class="bird", guideline_version="g2",
                        agreement=0.41, threshold=0.6, items=30),
]


def _valid_flag(**change: object) -> dict:
    body = orjson.loads(FLAG.to_json())
    body.pop("event_id")
    body.update(change)
    return body


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_each_type_round_trips_through_its_json(event):
    read = QualityEvent.model_validate_json(event.to_json()).root
    assert type(read) is type(event)
    assert read == event
    assert orjson.loads(event.to_json())["type"] == event.type


def test_the_wire_format_names_the_type_and_keeps_the_findings_keys():
    alert = orjson.loads(EVENTS[3].to_json())
    assert alert["type"] == "guideline_alert" and alert["class"] == "bird"
    assert "detail" not in alert
    # What the quality service records and shows over HTTP: the typed fields as before.
    assert EVENTS[3].finding() == {"class": "bird", "guideline_version": "g2",
                                   "agreement": 0.41, "threshold": 0.6, "items": 30,
                                   "advice": "sharpen the guideline for this class"}
    assert FLAG.finding()["evidence_since"] == AT.isoformat()  # "+00:00", as before
    cleared = EVENTS[1].finding()
    assert cleared["pause"] is False and cleared["flag"]["flagged_at"] == AT.isoformat()


def test_an_entry_without_an_id_derives_one_from_its_bytes():
    raw = orjson.dumps(_valid_flag())
    first = QualityEvent.model_validate_json(raw, context={"raw": raw}).root
    again = QualityEvent.model_validate_json(raw, context={"raw": raw}).root
    assert first.event_id is not None and first.event_id == again.event_id


@pytest.mark.parametrize("body, reason", [
    (_valid_flag(pause=None), "labeler_flag.pause: Input should be a valid boolean"),
    ({k: v for k, v in _valid_flag().items() if k != "statistic"},
     "labeler_flag.statistic: Field required"),
    (_valid_flag(type="labeler_shrug"), "type: Input tag 'labeler_shrug'"),
    ({k: v for k, v in _valid_flag().items() if k != "type"},
     "type: Unable to extract tag using discriminator 'type'"),
    ({"project": "p", "type": "adjudication_request", "item_id": "it-1", "labels": {},
      "consensus": "cat", "confidence": 0.5, "reason": "a hunch"},
     "adjudication_request.reason: Input should be 'split_vote' or 'low_posterior'"),
    # The free-form layout of before: its fields are no longer read from "detail".
    ({"project": "p", "type": "labeler_flag", "labeler_id": "x", "detail": {"pause": True}},
     "labeler_flag.pause: Field required"),
])
def test_a_bad_quality_event_is_refused_with_a_reason(body, reason):
    with pytest.raises(ValidationError) as refused:
        QualityEvent.model_validate_json(orjson.dumps(body))
    said, kind = body_error(refused.value)
    assert reason in said and kind == "validation"


def test_a_quality_entry_that_is_not_an_object_is_malformed():
    with pytest.raises(ValidationError) as refused:
        QualityEvent.model_validate_json(b"[1, 2]")
    assert body_error(refused.value) == ("'data' must be a JSON object, got list", "malformed")


@pytest.mark.integration
async def test_the_bus_delivers_typed_events_and_dead_letters_bad_ones(redis, settings):
    stream, group = f"loopwise:test-quality-{uuid.uuid4().hex[:10]}", "test-quality"
    await redis.xgroup_create(stream, group, id="0", mkstream=True)
    received: list[QualityEventBase] = []

    async def handler(batch: list[Delivery[QualityEvent]]) -> None:
        received.extend(d.event.root for d in batch)

    bus = Bus(settings.model_copy(update={"poll_ms": 20}), "test")
    bus.consume(stream, group, QualityEvent, handler)
    bad = {
        "unknown": _valid_flag(type="labeler_shrug"),
        "missing": {k: v for k, v in _valid_flag().items() if k != "pause"},
    }
    await bus.start()
    try:
        pipe = redis.pipeline(transaction=True)
        for event in EVENTS:
            pipe.xadd(stream, encode_event(event.to_json()))
        for body in bad.values():
            pipe.xadd(stream, {"data": orjson.dumps(body)})
        ids = [i.decode() for i in await pipe.execute()]

        async def dead_letters() -> list[dict]:
            rows = await redis.xrevrange(streams.DEADLETTER, count=200)
            letters = [orjson.loads(fields[b"data"]) for _, fields in rows]
            return [d for d in letters if d["stream"] == stream]

        async def settled() -> bool:
            return len(received) == len(EVENTS) and len(await dead_letters()) == len(bad)

        await wait_for(settled, timeout=30, what="the events and dead letters")
    finally:
        await bus.close()
        await redis.delete(stream)
    assert received == EVENTS
    reasons = {d["entry_id"]: d["reason"] for d in await dead_letters()}
    assert set(reasons) == set(ids[len(EVENTS):])
    unknown, missing = (reasons[i] for i in ids[len(EVENTS):])
    assert "type: Input tag 'labeler_shrug' found using 'type' does not match" in unknown
    assert missing == "labeler_flag.pause: Field required"

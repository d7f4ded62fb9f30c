"""Label Studio JSON exports in and out, against files Label Studio really wrote."""

from __future__ import annotations

import copy
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# `services` is not installed into the venv and the repo has no root conftest,
# so make the repository root importable when pytest runs from the script.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pytest

from services.labels.labelstudio import (
    ImportResult,
    LabelStudioFormatError,
    annotator_email,
    parse_export,
    to_export,
)
from shared.events import LabelEvent, LabelSource, ReviewMode

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "label-studio"
ALL_FIXTURES = [
    "choices-with-history.json",
    "choices-odd-characters.json",
    "rectangles-reviews-predictions.json",
    "polygons-completed-by-id.json",
]
ODD_LABEL = 'Yes " "" \n \t \t а б в \n'


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_tasks(name: str) -> list[dict[str, Any]]:
    return json.loads(fixture_bytes(name))


def as_choices(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same export with every region result turned into a choices result of its labels.

    Lets the real files' predictions, origins, reviews and bare-id annotators be
    exercised on a result type loopwise imports.
    """
    tasks = copy.deepcopy(tasks)

    def convert(results: list[dict[str, Any]]) -> None:
        for result in results:
            kind = result["type"]
            if kind.endswith("labels"):
                result["type"] = "choices"
                result["value"] = {"choices": result["value"][kind]}

    for task in tasks:
        for prediction in task.get("predictions", []):
            convert(prediction["result"])
        for annotation in task.get("annotations", []):
            convert(annotation["result"])
            if annotation.get("prediction"):
                convert(annotation["prediction"]["result"])
    return tasks


def provenance(result: ImportResult) -> set[tuple[Any, ...]]:
    return {
        (
            e.item_id,
            e.label,
            e.labeler_id,
            e.created_at,
            e.duration_ms,
            e.shown_prelabel,
            e.agreed_with_prelabel,
            e.model_version,
        )
        for e in result.events
    }


def reimport(result: ImportResult, **export_options: Any) -> ImportResult:
    exported = to_export(result.events, result.items, **export_options)
    item_key = export_options.get("item_key")
    return parse_export(json.dumps(exported), project="p", item_key=item_key)


# --- the four real files -------------------------------------------------------------------


def test_choices_with_history_gives_one_attributed_timed_label() -> None:
    result = parse_export(fixture_bytes("choices-with-history.json"), project="tweets")

    [event] = result.events
    assert event.project == "tweets"
    assert event.item_id == "6141"
    assert event.task_id == "ls:6141"
    assert event.label == "Positive"
    assert event.labeler_id == "ls:sergei@heartex.e2e"
    assert event.source is LabelSource.imported
    assert event.created_at == datetime(2024, 5, 15, 12, 9, 16, 789563, tzinfo=UTC)
    assert event.duration_ms == 1849
    # origin "manual" on a task without predictions: labeled blind, no pre-label shown
    assert event.mode is ReviewMode.blind
    assert event.shown_prelabel is None
    assert event.agreed_with_prelabel is None
    assert event.model_version is None
    assert event.batch_id == result.batch_id
    assert result.items == {
        "6141": {
            "text": "Calif. wildfires signal the arrival of a planetary fire age "
            "https://t.co/Vvo9noqQfA"
        }
    }
    ref = result.refs[event.event_id]
    assert (ref.from_name, ref.to_name, ref.annotation_id) == ("sentiment", "text", 18047)
    assert result.skipped == []
    assert result.ignored == []


def test_labels_with_quotes_tabs_newlines_and_cyrillic_survive_exactly() -> None:
    result = parse_export(fixture_bytes("choices-odd-characters.json"), project="works")

    [event] = result.events
    assert event.label == ODD_LABEL
    assert event.labeler_id == "ls:test@heartex.com"
    assert event.duration_ms == 10744
    ref = result.refs[event.event_id]
    assert (ref.from_name, ref.to_name) == ("uri_selection", "$uri")
    assert result.items["4"]["writers"][1]["name"] == "YI XIONG HUANG"

    again = parse_export(
        json.dumps(to_export(result.events, result.items, refs=result.refs)), project="works"
    )
    assert [e.label for e in again.events] == [ODD_LABEL]


def test_rectangles_are_reported_as_skipped_and_nothing_is_half_imported() -> None:
    result = parse_export(fixture_bytes("rectangles-reviews-predictions.json"), project="cars")

    assert result.events == []
    assert [(s.task_id, s.item_id, s.annotation_id) for s in result.skipped] == [
        ("ls:1", "1", "7"),
        ("ls:2", "2", "8"),
    ]
    assert all("rectanglelabels" in s.reason for s in result.skipped)
    # the tasks' payloads are still readable items, with no label attached to them
    assert set(result.items) == {"1", "2"}
    assert result.items["1"]["image"].endswith("0030019819f25b28.jpg")


def test_annotations_rejected_in_review_are_skipped_with_the_reviewer() -> None:
    tasks = as_choices(fixture_tasks("rectangles-reviews-predictions.json"))

    result = parse_export(tasks, project="cars")

    assert result.events == []
    reasons = {s.annotation_id: s.reason for s in result.skipped}
    assert "rejected in review by ls:review@heartex.com" in reasons["7"]
    # annotation 8 holds two results on one control, which alone rules it out
    assert "2 choices results for control label" in reasons["8"]


def test_confirmed_and_corrected_prelabels_keep_the_model_version() -> None:
    tasks = as_choices(fixture_tasks("rectangles-reviews-predictions.json"))
    for task in tasks:
        for annotation in task["annotations"]:
            annotation["reviews"] = []
    # task 1: origin "prediction-changed", the labeler corrected the model's "Car"
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["Truck"]
    # task 2: keep the pre-label result (origin "prediction"), drop the hand-drawn second one
    tasks[1]["annotations"][0]["result"] = tasks[1]["annotations"][0]["result"][:1]

    result = parse_export(tasks, project="cars")

    by_item = {e.item_id: e for e in result.events}
    corrected, confirmed = by_item["1"], by_item["2"]
    assert corrected.mode is ReviewMode.prelabel
    assert (corrected.label, corrected.shown_prelabel) == ("Truck", "Car")
    assert corrected.agreed_with_prelabel is False
    assert corrected.model_version == "model 0"
    assert corrected.duration_ms == 7662
    assert corrected.labeler_id == "ls:hakan@heartex.com"
    assert confirmed.mode is ReviewMode.prelabel
    assert (confirmed.label, confirmed.shown_prelabel) == ("Car", "Car")
    assert confirmed.agreed_with_prelabel is True
    assert confirmed.model_version == "model 0"
    assert confirmed.created_at == datetime(2022, 10, 31, 21, 19, 54, 970729, tzinfo=UTC)
    assert result.skipped == []


def test_two_results_on_one_control_are_skipped_not_guessed() -> None:
    tasks = as_choices(fixture_tasks("rectangles-reviews-predictions.json"))
    tasks[1]["annotations"][0]["reviews"] = []

    result = parse_export(tasks[1:], project="cars")

    assert result.events == []
    [skipped] = result.skipped
    assert "2 choices results for control label" in skipped.reason


def test_polygons_are_skipped_with_the_reason() -> None:
    result = parse_export(fixture_bytes("polygons-completed-by-id.json"), project="planes")

    assert result.events == []
    [skipped] = result.skipped
    assert (skipped.task_id, skipped.item_id, skipped.annotation_id) == ("ls:87", "87", "22")
    assert "polygonlabels" in skipped.reason
    assert result.items == {"87": {"image": "/data/upload/29/example.png"}}


def test_a_bare_user_id_becomes_the_labeler() -> None:
    tasks = as_choices(fixture_tasks("polygons-completed-by-id.json"))

    [event] = parse_export(tasks, project="planes").events

    assert event.label == "Airplane"
    assert event.labeler_id == "ls:1"
    assert event.created_at == datetime(2024, 1, 30, 2, 40, 43, 893578, tzinfo=UTC)
    assert event.duration_ms == 8650


# --- round trip ----------------------------------------------------------------------------


def round_trip_inputs() -> list[Any]:
    return [
        *(pytest.param(fixture_tasks(name), id=name) for name in ALL_FIXTURES),
        pytest.param(
            as_choices(fixture_tasks("polygons-completed-by-id.json")), id="polygons-as-choices"
        ),
    ]


@pytest.mark.parametrize("tasks", round_trip_inputs())
def test_import_export_import_keeps_every_label(tasks: list[dict[str, Any]]) -> None:
    first = parse_export(tasks, project="p")

    second = reimport(first, refs=first.refs)

    assert provenance(second) == provenance(first)
    assert {e.event_id for e in second.events} == {e.event_id for e in first.events}
    assert second.items == first.items
    assert [(r.from_name, r.to_name) for r in second.refs.values()] == [
        (r.from_name, r.to_name) for r in first.refs.values()
    ]


def test_round_trip_keeps_prelabel_provenance() -> None:
    tasks = as_choices(fixture_tasks("rectangles-reviews-predictions.json"))
    for task in tasks:
        task["annotations"][0]["reviews"] = []
        task["annotations"][0]["result"] = task["annotations"][0]["result"][:1]
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["Truck"]
    first = parse_export(tasks, project="cars")
    assert len(first.events) == 2

    second = reimport(first)

    assert provenance(second) == provenance(first)
    assert {e.mode for e in second.events} == {ReviewMode.prelabel}


def test_without_refs_the_given_control_names_are_written() -> None:
    first = parse_export(fixture_bytes("choices-with-history.json"), project="p")

    exported = to_export(first.events, first.items, from_name="sentiment", to_name="text")
    [result] = exported[0]["annotations"][0]["result"]
    second = parse_export(exported, project="p")

    assert (result["from_name"], result["to_name"], result["type"]) == (
        "sentiment",
        "text",
        "choices",
    )
    assert exported[0]["annotations"][0]["completed_by"] == {"email": "sergei@heartex.e2e"}
    assert provenance(second) == provenance(first)


def test_item_ids_survive_label_studio_renumbering_through_item_key() -> None:
    label = LabelEvent(
        project="p",
        item_id="doc-7",
        label="spam",
        labeler_id="alice",
        source="human",
        mode="blind",
        created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration_ms=1500,
    )
    exported = to_export([label], {"doc-7": {"text": "buy now"}}, item_key="loopwise_item_id")
    exported[0]["id"] = 901  # Label Studio assigns its own task ids on import

    [event] = parse_export(exported, project="p", item_key="loopwise_item_id").events

    # a loopwise labeler goes to Label Studio as <labeler>@loopwise.local (a member's email)
    assert exported[0]["annotations"][0]["completed_by"] == {"email": "alice@loopwise.local"}
    # ... and comes back as the same labeler, not as a new one
    assert (event.item_id, event.label, event.labeler_id) == ("doc-7", "spam", "alice")
    assert event.created_at == label.created_at
    assert event.duration_ms == 1500
    assert event.task_id == "ls:901"


def test_auto_labels_are_exported_as_predictions_not_annotations() -> None:
    auto = LabelEvent(
        project="p",
        item_id="1",
        label="cat",
        labeler_id="model:m3",
        source="auto",
        model_version="m3",
        confidence=0.97,
    )

    [task] = to_export([auto], {"1": {"text": "meow"}})

    assert task["annotations"] == []
    [prediction] = task["predictions"]
    assert prediction["model_version"] == "m3"
    assert prediction["score"] == 0.97
    assert prediction["result"][0]["value"] == {"choices": ["cat"]}
    assert parse_export([task], project="p").events == []


def test_exporting_a_label_without_its_item_payload_is_refused() -> None:
    label = LabelEvent(project="p", item_id="x", label="a", labeler_id="u", source="import")

    with pytest.raises(ValueError, match="no item payload"):
        to_export([label], {})


# --- idempotence ---------------------------------------------------------------------------


def test_reimporting_the_same_file_gives_the_same_events() -> None:
    raw = fixture_bytes("choices-with-history.json")

    first = parse_export(raw, project="p")
    second = parse_export(io.BytesIO(raw), project="p")

    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert first.batch_id == second.batch_id
    assert parse_export(raw, project="p", batch_id="b-42").events[0].batch_id == "b-42"


def test_an_annotation_edited_since_the_last_import_is_a_new_event() -> None:
    tasks = fixture_tasks("choices-with-history.json")
    before = parse_export(tasks, project="p").events[0]
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["Negative"]

    after = parse_export(tasks, project="p").events[0]

    assert after.event_id != before.event_id


# --- what does not map ---------------------------------------------------------------------


def test_cancelled_and_multi_choice_annotations_are_skipped_with_reasons() -> None:
    tasks = fixture_tasks("choices-with-history.json")
    cancelled = copy.deepcopy(tasks[0]["annotations"][0])
    cancelled.update(id=1, was_cancelled=True, result=[])
    multi = copy.deepcopy(tasks[0]["annotations"][0])
    multi["id"] = 2
    multi["result"][0]["value"]["choices"] = ["Positive", "Negative"]
    tasks[0]["annotations"] += [cancelled, multi]

    result = parse_export(tasks, project="p")

    assert [e.label for e in result.events] == ["Positive"]
    reasons = {s.annotation_id: s.reason for s in result.skipped}
    assert "cancelled" in reasons["1"]
    assert "multi-label" in reasons["2"]


def test_several_choice_controls_need_a_label_key() -> None:
    tasks = fixture_tasks("choices-with-history.json")
    topic = copy.deepcopy(tasks[0]["annotations"][0]["result"][0])
    topic.update(id="t1", from_name="topic", value={"choices": ["Climate"]})
    tasks[0]["annotations"][0]["result"].append(topic)

    unkeyed = parse_export(tasks, project="p")
    keyed = parse_export(tasks, project="p", label_key="topic")

    assert unkeyed.events == []
    assert "pass label_key" in unkeyed.skipped[0].reason
    assert [e.label for e in keyed.events] == ["Climate"]
    [ignored] = keyed.ignored
    assert (ignored.annotation_id, ignored.from_name, ignored.result_type) == (
        "18047",
        "sentiment",
        "choices",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"this is not json", "not JSON"),
        ('{"id": 1, "data": {}}', "expected a JSON list of tasks, got an object"),
        ([{"id": 1, "annotations": []}], "task #0 (id 1): no 'data'"),
        ([{"data": {"text": "x"}}], "task #0: no 'id'"),
        ([{"id": 1, "data": "x"}], "'data' must be an object"),
        ([{"id": 1, "data": {}}, 5], "task #1: expected a task object, got a number"),
        ([{"id": 1, "data": {}}, {"id": 1, "data": {}}], "item id '1' already used by task #0"),
        ([{"id": 1, "data": {}, "annotations": [{"result": []}]}], "annotations[0]: no 'id'"),
    ],
)
def test_malformed_input_is_refused_with_the_problem_and_task_index(
    data: Any, message: str
) -> None:
    with pytest.raises(LabelStudioFormatError) as caught:
        parse_export(data, project="p")
    assert message in str(caught.value)


def test_every_problem_of_a_malformed_file_is_listed_before_anything_is_imported() -> None:
    tasks = [*fixture_tasks("choices-with-history.json"), {"id": 2}, {"data": {}}]

    with pytest.raises(LabelStudioFormatError) as caught:
        parse_export(tasks, project="p")

    assert caught.value.problems == ["task #1 (id 2): no 'data'", "task #2: no 'id'"]
    assert isinstance(caught.value, ValueError)


# --- who an annotation is by -------------------------------------------------------------------


def _annotated_by(*who: object) -> list[dict]:
    return [{"id": 100 + i, "data": {"text": f"t{i}"}, "annotations": [{
        "id": 200 + i, "completed_by": by, "created_at": "2026-01-02T03:04:05Z",
        "result": [{"id": f"r{i}", "type": "choices", "from_name": "label", "to_name": "text",
                    "value": {"choices": ["cat"]}}]}]} for i, by in enumerate(who)]


def _labelers(tasks: list[dict], **options: object) -> list[str]:
    events = parse_export(tasks, project="p", **options).events  # type: ignore[arg-type]
    return [e.labeler_id for e in sorted(events, key=lambda e: e.item_id)]


def test_one_label_studio_user_is_one_labeler_whatever_form_the_export_names_them_in() -> None:
    # 1.23 and JSON-MIN write the bare id; older exports an object with the email
    assert _labelers(_annotated_by(14, {"id": 14, "email": "ann@x.org"}, "14")) == [
        "ls:ann@x.org"] * 3
    # with Label Studio's user list, a bare id alone is known by its email too
    assert _labelers(_annotated_by(14, 15), users={14: "ann@x.org"}) == [
        "ls:ann@x.org", "ls:15"]
    assert _labelers(_annotated_by({"email": "ann@x.org"}, 16)) == ["ls:ann@x.org", "ls:16"]


def test_an_annotator_email_of_the_annotator_domain_is_the_loopwise_labeler_again() -> None:
    for labeler in ("alice", "john.doe", "a b", "a=20b", ".x", "Ünï"):
        completed_by = annotator_email(labeler)
        assert _labelers(_annotated_by(completed_by)) == [labeler]
        # as Label Studio exports it after the import: its own id, its user list
        assert _labelers(_annotated_by(7), users={7: completed_by["email"]}) == [labeler]
    assert _labelers(_annotated_by({"email": "bob@lab.example"}),
                     annotator_domain="lab.example") == ["bob"]


def test_an_export_may_come_with_label_studios_user_list() -> None:
    users = [{"id": 2, "email": "alice@loopwise.local", "username": "alice"},
             {"id": 3, "email": "ann@x.org"}, {"id": 4}]
    body = json.dumps({"tasks": _annotated_by(2, 3, 4), "users": users}).encode()
    assert [e.labeler_id for e in sorted(parse_export(body, project="p").events,
                                          key=lambda e: e.item_id)] == [
        "alice", "ls:ann@x.org", "ls:4"]

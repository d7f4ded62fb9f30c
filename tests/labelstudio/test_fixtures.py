"""Label Studio 1.23 exports, as a real server wrote them, read without a server.

The files under ``fixtures/`` come from ``make labelstudio`` (see their README); the
``ls-1.23.2`` ones from the shared fixtures. These run in ``make test``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.labels.labelstudio import (
    LabelStudioFormatError,
    annotator_email,
    parse_export,
    to_export,
)
from shared.events import LabelEvent, ReviewMode

HERE = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "label-studio" / "ls-1.23.2"
ITEM_KEY = "loopwise_item_id"


def raw(name: str, where: Path = HERE) -> bytes:
    return (where / name).read_bytes()


def triples(events: list[LabelEvent]) -> set[tuple[str, str, str]]:
    return {(e.item_id, e.labeler_id, e.label) for e in events}


# --- predictions as ids (the export API's JSON) ----------------------------------------------


def test_json_with_predictions_as_ids_imports_every_annotation_and_reports_the_skip() -> None:
    tasks = json.loads(raw("ls-1.23-JSON.json"))
    assert all(isinstance(p, int) for t in tasks for p in t["predictions"])

    result = parse_export(tasks, project="p")

    assert triples(result.events) == {("6", "ls:4", "cat"), ("7", "ls:4", "dog"),
                                      ("7", "ls:5", "cat"), ("8", "ls:5", "dog")}
    [skipped] = result.skipped
    assert (skipped.item_id, skipped.annotation_id) == ("9", "11")
    assert "cancelled" in skipped.reason
    assert set(result.items) == {"6", "7", "8", "9", "10"}
    assert result.items["8"] == {"text": 'She said "hi"\nthen left.\tTab 🙂 Привет', "ref": "t-3"}


def test_the_pre_label_comes_from_the_prediction_copied_on_the_annotation() -> None:
    """With predictions as bare ids, the prediction an annotation started from is the copy
    Label Studio stores on the annotation itself."""
    by_key = {(e.item_id, e.labeler_id): e
              for e in parse_export(raw("ls-1.23-JSON.json"), project="p").events}

    kept, changed, manual = by_key[("6", "ls:4")], by_key[("7", "ls:4")], by_key[("7", "ls:5")]
    assert (kept.mode, kept.shown_prelabel, kept.agreed_with_prelabel, kept.model_version) == (
        ReviewMode.prelabel, "cat", True, "m-1")
    assert (changed.mode, changed.shown_prelabel, changed.agreed_with_prelabel) == (
        ReviewMode.prelabel, "cat", False)
    assert changed.duration_ms == 15500
    # a manual label on a task with predictions: whether one was shown is not known
    assert (manual.mode, manual.shown_prelabel) == (None, None)


def test_the_shared_1_23_2_exports_with_predictions_as_ids_import() -> None:
    result = parse_export(raw("text-classification-JSON.json", SHARED), project="p")

    assert len(result.events) == 8
    assert [s.item_id for s in result.skipped] == ["5"]


@pytest.mark.parametrize("entry", [None, True, 1.5, []])
def test_a_prediction_that_is_neither_an_object_nor_an_id_is_refused(entry: Any) -> None:
    task = {"id": 1, "data": {"text": "x"}, "predictions": [3, {"result": []}, entry]}

    with pytest.raises(LabelStudioFormatError, match=r"predictions\[2\] must be an object"):
        parse_export([task], project="p")


# --- JSON-MIN ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("json_file", "min_file", "where"), [
    ("ls-1.23-JSON.json", "ls-1.23-JSON_MIN.json", HERE),
    ("text-classification-JSON.json", "text-classification-JSON_MIN.json", SHARED),
    ("image-classification-JSON.json", "image-classification-JSON_MIN.json", SHARED),
    ("drafts-and-empty-JSON.json", "drafts-and-empty-JSON_MIN.json", SHARED),
])
def test_json_min_gives_the_same_label_events_as_json(json_file: str, min_file: str,
                                                      where: Path) -> None:
    """Same event ids: importing both exports of one project stores each label once."""
    options = ["cat", "dog", "positive", "negative", "neutral"]
    full = parse_export(raw(json_file, where), project="p")
    minimal = parse_export(raw(min_file, where), project="p", label_options=options)

    assert {e.event_id for e in minimal.events} == {e.event_id for e in full.events}
    assert {(e.event_id, e.labeler_id, e.created_at, e.duration_ms) for e in minimal.events} == {
        (e.event_id, e.labeler_id, e.created_at, e.duration_ms) for e in full.events}
    assert minimal.skipped == []
    for item_id, payload in minimal.items.items():
        assert payload == full.items[item_id]
    assert all(e.mode is None for e in minimal.events)  # JSON-MIN does not say


def test_json_min_finds_its_label_column_by_the_projects_labels_or_is_told() -> None:
    data = raw("ls-1.23-JSON_MIN.json")

    found = parse_export(data, project="p", label_options=["cat", "dog"])
    told = parse_export(data, project="p", label_key="label")
    with pytest.raises(LabelStudioFormatError, match="pass label_key") as unknown:
        parse_export(data, project="p")

    assert triples(found.events) == triples(told.events) == {
        ("6", "ls:4", "cat"), ("7", "ls:4", "dog"), ("7", "ls:5", "cat"), ("8", "ls:5", "dog")}
    assert "columns: label, ref, text" in str(unknown.value)
    assert found.items["10"] == {"text": "Nobody looked at this one", "ref": "t-5"}


def test_json_min_refuses_to_guess_between_two_columns_of_labels() -> None:
    rows = json.loads(raw("ls-1.23-JSON_MIN.json"))
    for row in rows:
        row["second_opinion"] = row.get("label")

    with pytest.raises(LabelStudioFormatError, match="label, second_opinion all hold"):
        parse_export(rows, project="p", label_options=["cat", "dog"])


# --- loopwise -> Label Studio -> loopwise ------------------------------------------------------


def test_label_studios_export_of_a_loopwise_export_keeps_item_ids_and_labels() -> None:
    ours = json.loads(raw("loopwise-export.json"))
    back = parse_export(raw("from-loopwise-JSON.json"), project="p", item_key=ITEM_KEY)

    sent = {(t["data"][ITEM_KEY], a["completed_by"]["email"], a["result"][0]["value"]["choices"][0])
            for t in ours for a in t["annotations"]}
    users = {"alice@loopwise.local": "ls:2", "bob@loopwise.local": "ls:3"}  # LS's ids
    assert triples(back.events) == {(item, users[email], label) for item, email, label in sent}
    assert back.items == {t["data"][ITEM_KEY]: {k: v for k, v in t["data"].items()
                                                if k != ITEM_KEY} for t in ours}


def test_a_loopwise_export_names_annotators_by_email_and_keeps_prediction_payloads() -> None:
    tasks = {t["data"][ITEM_KEY]: t for t in json.loads(raw("loopwise-export.json"))}

    assert {a["completed_by"]["email"] for t in tasks.values() for a in t["annotations"]} == {
        "alice@loopwise.local", "bob@loopwise.local"}
    # items that only ever came as predictions have their data
    assert tasks["pred-1"]["data"]["text"] == "something small and furry"
    assert tasks["auto-1"]["predictions"][0]["score"] == 0.97
    assert tasks["auto-1"]["annotations"] == []


# --- annotators --------------------------------------------------------------------------------


@pytest.mark.parametrize(("labeler", "completed_by"), [
    ("alice", {"email": "alice@loopwise.local"}),
    ("john.doe", {"email": "john.doe@loopwise.local"}),
    ("ann@example.com", {"email": "ann@example.com"}),
    ("ls:7", 7),
    ("ls:ann@x.org", {"email": "ann@x.org"}),
    ("a b", {"email": "a=20b@loopwise.local"}),
    ("a=20b", {"email": "a=3D20b@loopwise.local"}),
    (".x", {"email": "=2Ex@loopwise.local"}),
    ("Ünï", {"email": "=C3=9Cn=C3=AF@loopwise.local"}),
])
def test_annotators_map_to_what_label_studio_resolves(labeler: str, completed_by: Any) -> None:
    assert annotator_email(labeler) == completed_by


def test_the_annotator_domain_is_a_choice() -> None:
    event = LabelEvent(project="p", item_id="1", label="cat", labeler_id="alice",
                       source="human", mode="blind")

    [task] = to_export([event], {"1": {"text": "x"}}, annotator_domain="example.org")

    assert task["annotations"][0]["completed_by"] == {"email": "alice@example.org"}


def test_the_models_guess_recorded_on_a_review_is_exported_as_a_prediction() -> None:
    blind = [LabelEvent(project="p", item_id="1", label=label, labeler_id=who, source="human",
                        mode="blind", model_label="dog", model_version="m-3")
             for who, label in (("alice", "cat"), ("bob", "dog"))]

    [task] = to_export(blind, {"1": {"text": "x"}})

    [prediction] = task["predictions"]  # one per model version and label, not per review
    assert (prediction["model_version"], prediction["result"][0]["value"]) == (
        "m-3", {"choices": ["dog"]})
    assert [a["result"][0]["origin"] for a in task["annotations"]] == ["manual", "manual"]

"""The pure rules of the label store: precedence, diffs, revert selection and effects, trace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.labels.revert import RevertSelector, effect_of, revert_changes, unrevert_changes
from services.labels.trace import trace_item
from services.labels.versions import current_by_item, diff_labels, excluded_ids
from shared.projects import unknown_labels

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(event_id, item, label, source="human", minutes=0, **kw):
    row = {
        "event_id": event_id,
        "item_id": item,
        "label": label,
        "source": source,
        "labeler_id": kw.pop("labeler_id", "alice"),
        "created_at": T0 + timedelta(minutes=minutes),
        "stored_at": T0 + timedelta(minutes=minutes),
        "batch_id": None,
        "guideline_version": None,
        "shown_prelabel": None,
        "model_version": None,
        "agreed_with_prelabel": None,
    }
    row.update(kw)
    return row


def test_precedence_adjudicated_consensus_human_auto_then_newest() -> None:
    events = [
        ev("1", "i", "a", "auto", 9),
        ev("2", "i", "b", "human", 1),
        ev("3", "i", "c", "human", 2),
        ev("4", "j", "x", "consensus", 0),
        ev("5", "j", "y", "human", 5),
        ev("6", "j", "z", "adjudicated", -5),
    ]
    assert {k: v["label"] for k, v in current_by_item(events).items()} == {"i": "c", "j": "z"}


def test_exclusions_follow_the_sum_of_changes() -> None:
    assert excluded_ids([("a", 1), ("b", 1), ("a", -1)]) == {"b"}
    assert excluded_ids([("a", 1), ("a", -1), ("a", 1)]) == {"a"}


def test_diff_reports_added_removed_and_changed_by_item() -> None:
    before = {"i": ev("1", "i", "a"), "j": ev("2", "j", "b"), "k": ev("3", "k", "c")}
    after = {"i": ev("4", "i", "a"), "j": ev("5", "j", "B"), "l": ev("6", "l", "d")}
    d = diff_labels(before, after)
    assert [c.item_id for c in d.added] == ["l"]
    assert [c.item_id for c in d.removed] == ["k"]
    assert [(c.item_id, c.before, c.after) for c in d.changed] == [("j", "b", "B")]


def test_a_selector_must_select_and_all_criteria_hold() -> None:
    with pytest.raises(ValidationError, match="say what to revert"):
        RevertSelector()
    with pytest.raises(ValidationError, match="before created_to"):
        RevertSelector(created_from=T0, created_to=T0)
    s = RevertSelector(labeler_id="bob", created_from=T0 + timedelta(minutes=1))
    assert s.matches(ev("1", "i", "a", minutes=2, labeler_id="bob"))
    assert not s.matches(ev("1", "i", "a", minutes=0, labeler_id="bob"))
    assert not s.matches(ev("1", "i", "a", minutes=2, labeler_id="amy"))


def test_unrevert_undoes_only_what_still_stands() -> None:
    reverted = revert_changes(["a", "b"])
    assert unrevert_changes(reverted, excluded_now={"a", "b"}) == {"a": -1, "b": -1}
    assert unrevert_changes(reverted, excluded_now={"b"}) == {"b": -1}
    assert unrevert_changes({"a": -1}, excluded_now=set()) == {"a": 1}


def test_effect_shows_each_items_label_before_and_after() -> None:
    events = [ev("1", "i", "a", "auto"), ev("2", "i", "b", "human"), ev("3", "j", "c")]
    effects = effect_of(events, excluded_now=set(), changes={"2": 1, "3": 1})
    assert [(e.item_id, e.before, e.after) for e in effects] == [("i", "b", "a"), ("j", "c", None)]


def test_trace_explains_the_winner_and_marks_excluded_history() -> None:
    events = [
        ev("1", "i", "a", "auto", labeler_id="model:m1"),
        ev("2", "i", "b", "human", 1),
        ev("3", "i", "c", "adjudicated", 2, labeler_id="rev"),
    ]
    t = trace_item("i", events, counted={"1", "2"}, excluded_by={"3": 4})
    assert (t["label"], t["labeler_id"]) == ("b", "alice")
    assert t["reason"] == "source 'human' outranks auto"
    assert [(h["event_id"], h["counts"], h["excluded_by_version"]) for h in t["history"]] == [
        ("3", False, 4),
        ("2", True, None),
        ("1", True, None),
    ]


def test_unknown_labels_only_when_a_schema_is_declared() -> None:
    assert unknown_labels(None, ["anything"]) == []
    assert unknown_labels(["cat", "dog"], ["cat", "emu", "emu"]) == ["emu"]

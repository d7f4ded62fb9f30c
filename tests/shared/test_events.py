import uuid

import pytest
from pydantic import ValidationError

from shared.events import ItemEvent, LabelEvent, PredictionEvent


def test_resent_event_without_id_gets_the_same_derived_id():
    body = {"project": "digits", "item_id": "a1", "model_version": "m1",
            "probs": {"3": 0.91, "8": 0.09}}
    assert PredictionEvent.model_validate(body).event_id == PredictionEvent.model_validate(
        dict(body)).event_id


def test_explicit_event_id_is_kept():
    eid = uuid.uuid4()
    e = ItemEvent.model_validate({"event_id": str(eid), "project": "p", "item_id": "1",
                                  "text": "hi"})
    assert e.event_id == eid


@pytest.mark.parametrize("probs, message", [
    ({"a": 0.7, "b": 0.7}, "sum to"),
    ({"a": 1.5, "b": -0.5}, r"not in \[0, 1\]"),
])
def test_prediction_probs_must_be_a_distribution(probs, message):
    with pytest.raises(ValidationError, match=message):
        PredictionEvent(project="p", item_id="1", model_version="m", probs=probs)


def test_item_needs_features_or_text():
    with pytest.raises(ValidationError, match="features"):
        ItemEvent(project="p", item_id="1")


def test_unknown_schema_version_is_refused():
    with pytest.raises(ValidationError, match="schema_version"):
        ItemEvent(project="p", item_id="1", text="x", schema_version=99)


def test_project_names_are_restricted():
    with pytest.raises(ValidationError):
        ItemEvent(project="bad name/../", item_id="1", text="x")


def test_auto_label_must_be_attributed_to_a_model():
    with pytest.raises(ValidationError, match="model:"):
        LabelEvent(project="p", item_id="1", label="a", labeler_id="alice", source="auto")


def test_human_label_must_state_its_mode():
    with pytest.raises(ValidationError, match="mode"):
        LabelEvent(project="p", item_id="1", label="a", labeler_id="alice", source="human")


def test_top_label_and_no_model():
    p = PredictionEvent(project="p", item_id="1", model_version="m", probs={"a": 0.2, "b": 0.8})
    assert p.top() == ("b", 0.8)
    empty = PredictionEvent(project="p", item_id="1", model_version="none", probs={})
    assert empty.top() == (None, 0.0)


def test_stable_ids_are_uuid5_in_the_event_namespace():
    from shared.events import EVENT_NAMESPACE, stable_id, stable_key

    for parts in [("a",), ("task", "x" * 40), ("é", "", "z")]:
        expected = uuid.uuid5(EVENT_NAMESPACE, "\x1f".join(parts))
        got = stable_id(*parts)
        assert got == expected and hash(got) == hash(expected) and got.version == 5
        assert stable_key(*parts) == str(expected)

"""The limits of shared.limits: the same in every model as in its table, and applied.

The column lengths are read back from the SQLAlchemy tables, the models' limits from
their JSON schemas (what producers read too), so that neither can change alone.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import String, Table

from services.labels.api import TokenIn, UserIn, VersionIn
from services.labels.tables import label_events, label_versions
from services.quality.tables import quality_consensus, quality_label_votes
from services.router.api import SubmitIn
from services.router.gold import GoldItem
from services.scorer.api import ItemIn
from services.scorer.tables import items, models
from shared.events import (
    DeadLetterEvent,
    ItemEvent,
    LabelEvent,
    ModelTrainedEvent,
    PredictionEvent,
    QualityEvent,
)
from shared.limits import JSON_DEPTH_MAX, PROJECT_MAX, PROJECT_PATTERN
from shared.projects import ProjectSettings, ProjectSettingsChanged
from shared.tables import api_tokens, users

# model -> (table, {model field: column}) for every string field the table stores.
STORED = [
    (LabelEvent, label_events, {}),
    (LabelEvent, quality_label_votes, {}),
    (LabelEvent, quality_consensus, {"item_id": "item_id", "label": "label"}),
    (ItemEvent, items, {}),
    (ItemIn, items, {"item_id": "item_id"}),
    (PredictionEvent, label_events, {"item_id": "item_id", "model_version": "model_version"}),
    (ModelTrainedEvent, models, {"model_version": "version"}),
    (SubmitIn, label_events, {"label": "label", "guideline_version": "guideline_version"}),
    (GoldItem, label_events, {"item_id": "item_id", "label": "label",
                              "wrong_prelabel": "shown_prelabel"}),
    (UserIn, users, {}),
    (TokenIn, api_tokens, {"user_id": "user_id"}),
    (VersionIn, label_versions, {"name": "name"}),
]


def _max_length(model: type[BaseModel], field: str) -> int | None:
    schema = model.model_json_schema(by_alias=False)
    prop = schema["properties"][field]
    options = prop.get("anyOf", [prop])
    lengths = {o["maxLength"] for o in options if "maxLength" in o}
    assert len(lengths) <= 1, (model.__name__, field, lengths)
    return lengths.pop() if lengths else None


def _pairs(model: type[BaseModel], table: Table, mapping: dict[str, str]):
    names = mapping or {f: f for f in model.model_fields if f in table.c}
    for field, column in names.items():
        if isinstance(table.c[column].type, String) and table.c[column].type.length:
            yield field, table.c[column]


@pytest.mark.parametrize(("model", "table", "mapping"), STORED,
                         ids=[f"{m.__name__}-{t.name}" for m, t, _ in STORED])
def test_every_stored_string_field_has_its_columns_length(model, table, mapping) -> None:
    pairs = list(_pairs(model, table, mapping))
    assert pairs, "nothing compared"
    for field, column in pairs:
        if field == "project":
            assert column.type.length == PROJECT_MAX
            continue
        if field in ("source", "mode", "event_id"):  # enums and UUIDs: fit by construction
            continue
        assert _max_length(model, field) == column.type.length, (model.__name__, field)


def test_a_project_name_is_as_long_as_its_column() -> None:
    assert re.fullmatch(PROJECT_PATTERN, "p" * PROJECT_MAX)
    assert not re.fullmatch(PROJECT_PATTERN, "p" * (PROJECT_MAX + 1))
    assert label_events.c.project.type.length == PROJECT_MAX


PREDICTION = {"project": "p", "item_id": "i", "model_version": "m", "probs": {"a": 1.0}}
LABEL = {"project": "p", "item_id": "i", "label": "a", "labeler_id": "al", "source": "human",
         "mode": "blind"}


def _refused(model: type[BaseModel], doc: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(json.dumps(doc))
    return str(caught.value)


@pytest.mark.parametrize("payload", [
    {"x": math.nan}, {"x": [1, {"y": math.inf}]}, {"x": -math.inf}, {"x": "a\x00b"},
    {"k\x00": 1}, {"big": 2**64}, {"big": -(2**63) - 1},
], ids=["nan", "nested-inf", "minus-inf", "nul-value", "nul-key", "int65", "int-below-64"])
def test_a_payload_no_store_can_hold_is_refused(payload) -> None:
    assert "payload" in _refused(PredictionEvent, {**PREDICTION, "payload": payload})
    assert "payload" in _refused(ItemEvent, {"project": "p", "item_id": "i", "text": "t",
                                             "payload": payload})


def test_a_payload_nested_too_deep_is_refused_but_one_level_less_passes() -> None:
    def deep(levels: int) -> Any:
        doc: Any = 1
        for _ in range(levels):
            doc = {"d": doc}
        return doc

    assert "nested deeper" in _refused(PredictionEvent,
                                       {**PREDICTION, "payload": deep(JSON_DEPTH_MAX + 1)})
    PredictionEvent.model_validate_json(json.dumps({**PREDICTION,
                                                    "payload": deep(JSON_DEPTH_MAX)}))


def test_nan_literals_as_json_parsers_accept_them_are_refused_in_float_fields() -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = json.dumps(PREDICTION)[:-1] + f', "priority": {literal}}}'
        with pytest.raises(ValidationError, match="priority"):
            PredictionEvent.model_validate_json(body)
        flag = ('{"type": "labeler_flag", "project": "p", "labeler_id": "al", "pause": true, '
                f'"statistic": {literal}, "threshold": 1, "tasks_in_evidence": 1}}')
        with pytest.raises(ValidationError, match="statistic"):
            QualityEvent.model_validate_json(flag)


def test_settings_that_would_be_written_as_null_are_refused() -> None:
    """pydantic writes an infinity as null, which the next reader refuses: a settings
    change with one would be dead-lettered by every service that keeps settings."""
    with pytest.raises(ValidationError, match="recalibration_seconds"):
        ProjectSettings.model_validate({"routing": {"recalibration_seconds": math.inf}})
    with pytest.raises(ValidationError, match="settings"):
        ProjectSettings.model_validate({"settings": {"note": math.nan}})
    with pytest.raises(ValidationError, match="revision"):
        ProjectSettingsChanged.model_validate({"project": "p", "settings": {},
                                               "revision": 2**60})


@pytest.mark.parametrize("field", ["item_id", "labeler_id", "task_id", "batch_id",
                                   "model_version", "guideline_version", "supersedes"])
@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\n", "\t"])
def test_ids_refuse_every_control_character(field: str, char: str) -> None:
    assert field in _refused(LabelEvent, {**LABEL, field: f"a{char}b"})


@pytest.mark.parametrize("field", ["label", "shown_prelabel", "model_label", "gold_label"])
def test_labels_keep_tabs_and_newlines_but_refuse_other_control_characters(field) -> None:
    LabelEvent.model_validate({**LABEL, field: 'Yes "" \n \t а'})  # a Label Studio label
    for char in ("\x00", "\x01", "\x7f"):
        assert field in _refused(LabelEvent, {**LABEL, field: f"a{char}b"})
    assert "probs" in _refused(PredictionEvent, {**PREDICTION, "probs": {"a\x00": 1.0}})


def test_an_over_long_value_is_refused_with_the_field_named() -> None:
    assert "labeler_id" in _refused(LabelEvent, {**LABEL, "labeler_id": "u" * 257})
    assert "item_id" in _refused(ItemEvent, {"project": "p", "item_id": "i" * 257, "text": "t"})
    assert "text" in _refused(ItemEvent, {"project": "p", "item_id": "i", "text": "a\x00"})


def test_a_dead_letter_keeps_the_refused_entry_as_it_came() -> None:
    dead = DeadLetterEvent(stream="s", entry_id="1-0", group="g", reason="why",
                           fields={"data": '{"item_id": "a\\u0000", "x": NaN}\x00'})
    assert DeadLetterEvent.model_validate_json(dead.to_json()).fields == dead.fields

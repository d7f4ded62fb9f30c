"""A project's settings: the one definition, kept by the labels service, read by all.

The labels service owns them (``GET/PUT/PATCH :8003/v1/projects/{project}``) and
publishes every change as a :class:`ProjectSettingsChanged` on ``loopwise:projects``;
the router, scorer and quality service keep their own copy of the newest one (each in
its own keys) and never read the labels service's tables. One model per section, so
that a setting is validated once, at the door, with the same rules everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.events import NONE_OF_THESE, Event, utcnow
from shared.limits import LABEL_MAX, JsonObject, Label, Project, Text, UserId, Version
from shared.settings import get_settings

# The scorer's query strategies by name (services/scorer/strategies.py registers the
# functions; a test keeps the two lists equal). Settings name them, so they are checked
# where settings are written, not when a selection first runs.
STRATEGY_NAMES = ("random", "least_confidence", "margin", "entropy", "vote_entropy",
                  "consensus_kl")
SECTIONS = ("routing", "selection", "quality", "review")

# A Redis script for the services that keep a copy of a project's settings (each in a
# hash of its own): store ARGV[2] only if its revision ARGV[1] is newer than the kept one,
# so that a change delivered late or twice never undoes a newer one.
KEEP_NEWEST = """
local kept = redis.call('HGET', KEYS[1], 'revision')
if kept and tonumber(kept) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'revision', ARGV[1], 'settings', ARGV[2])
return 1
"""


class RoutingPolicy(BaseModel):
    """How confident is auto, how tasks are shown, how gold is salted (the router applies it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["fixed", "target_precision"] = "fixed"
    auto_accept_threshold: float = Field(
        default_factory=lambda: get_settings().auto_accept_threshold, ge=0.0, le=1.0,
        description="used when fixed (default: LOOPWISE_AUTO_ACCEPT_THRESHOLD)")
    target_precision: float | None = Field(None, gt=0.0, lt=1.0)
    audit_rate: float = Field(0.02, ge=0.0, le=1.0,
                              description="share of would-be auto-accepts audited blind")
    default_threshold: float = Field(0.99, ge=0.0, le=1.0,
                                     description="conservative threshold until calibrated")
    min_audits: int = Field(
        30, ge=1, description="effective observations a candidate threshold needs to be tested")
    recalibration_seconds: float = Field(
        600.0, ge=0.0, description="a new threshold is decided at most this often, from the "
                                   "reviews since the last decision")
    overlap: int = Field(default_factory=lambda: get_settings().overlap, ge=1, le=5,
                         description="labelers per item (default: LOOPWISE_OVERLAP)")
    mode: Literal["blind", "prelabel"] = "blind"
    choice_margin: float | None = Field(
        None, ge=0.0, le=1.0, description="top-2 margin below which a task is shown as a choice"
    )
    choice_top_k: int = Field(3, ge=2, le=10)
    gold_rate: float = Field(0.05, ge=0.0, le=1.0)
    gold_planted_share: float = Field(0.5, ge=0.0, le=1.0)
    queue_cap: int = Field(100_000, ge=1)
    guideline_version: Version | None = None

    @model_validator(mode="after")
    def _target_needs_a_value(self) -> RoutingPolicy:
        if self.kind == "target_precision" and self.target_precision is None:
            raise ValueError("kind 'target_precision' needs target_precision (e.g. 0.98)")
        return self


class SelectionSettings(BaseModel):
    """How the scorer picks examples for people and what it trains on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: str = "margin"
    diversity: Literal["kmeanspp", "coreset"] | None = "kmeanspp"
    include_auto: bool = Field(False, description="train on auto-accepted labels too (opt in)")
    select_every_seconds: int | None = Field(
        None, ge=10, description="select a batch on this schedule (None: only on request)"
    )
    select_budget: int = Field(50, ge=1, le=10_000, description="batch size of scheduled selection")

    @field_validator("strategy")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in STRATEGY_NAMES:
            known = ", ".join(sorted(STRATEGY_NAMES))
            raise ValueError(f"unknown strategy {name!r}; known: {known}")
        return name


class QualitySettings(BaseModel):
    """How the quality service measures the project: level of measurement, alert, pauses."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    level: Literal["nominal", "ordinal", "interval"] = "nominal"
    categories: list[Label] | None = Field(None, description="class order (ordinal, interval)")
    guideline_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="class agreement alert level (default: the service's)")
    auto_pause: bool | None = Field(None, description="pause flagged labelers (default: service's)")


# ``image WxH``: a flat list of W*H numbers (an item's ``features``) is drawn row by row.
DISPLAY_PATTERN = re.compile(r"^image ([1-9][0-9]{0,3})x([1-9][0-9]{0,3})$")
IMAGE_PIXELS_MAX = 1_048_576  # what a reviewer's browser draws without strain


@dataclass(frozen=True, slots=True)
class ImageShape:
    width: int
    height: int


def image_shape(display: str | None) -> ImageShape | None:
    """The image a ``display`` declaration asks for, None when it asks for none."""
    found = DISPLAY_PATTERN.match(display) if display else None
    return ImageShape(int(found[1]), int(found[2])) if found else None


class ReviewSettings(BaseModel):
    """What the reviewer page shows with each task: how to draw the item and the guideline
    labelers follow (its version is ``routing.guideline_version``, stamped on every label)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    display: str | None = Field(
        None, description="how to show an item's `features`: 'image WxH' draws a flat list of "
                          "W*H numbers as a W by H greyscale image (e.g. 'image 8x8' for the "
                          "digits); null shows them as numbers")
    guideline: Text | None = Field(
        None, description="the labeling guideline, plain text, shown beside every task")

    @field_validator("display")
    @classmethod
    def _known_display(cls, display: str | None) -> str | None:
        if display is None:
            return None
        shape = image_shape(display)
        if shape is None:
            raise ValueError(f"display {display[:40]!r}: expected 'image WxH', e.g. 'image 8x8'")
        if shape.width * shape.height > IMAGE_PIXELS_MAX:
            raise ValueError(f"display {display!r}: at most {IMAGE_PIXELS_MAX} pixels")
        return display


class ProjectSettings(BaseModel):
    """Everything a project declares, in one document."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    label_options: list[Label] | None = Field(
        None, description="allowed labels; null accepts any label"
    )
    sensitive: bool = Field(False, description="only members see item payloads")
    routing: RoutingPolicy = Field(default_factory=RoutingPolicy)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    settings: JsonObject = Field(default_factory=dict, description="free notes of the team")

    @field_validator("label_options")
    @classmethod
    def _distinct(cls, options: list[str] | None) -> list[str] | None:
        if options is not None:
            if not options:  # each is a Label: 1-LABEL_MAX characters, no control character
                raise ValueError(f"label options must be 1-{LABEL_MAX} characters, at least one")
            if len(set(options)) != len(options):
                raise ValueError("label options must be distinct")
        return options

    def merged(self, changes: dict[str, Any]) -> ProjectSettings:
        """These settings with ``changes`` applied: top-level fields replaced, the sections
        (routing, selection, quality, review) updated field by field; validated as a whole."""
        current = self.model_dump()
        for key, value in changes.items():
            if key in SECTIONS and isinstance(value, dict):
                current[key] = {**current[key], **value}
            else:
                current[key] = value
        return ProjectSettings.model_validate(current)


class ProjectSettingsChanged(Event):
    """A project's settings as they are now (the whole document, not a diff), so that a
    consumer that missed a change is right again with the next one."""

    kind: ClassVar[str] = "project_settings"

    project: Project
    settings: ProjectSettings
    revision: int = Field(ge=0, le=2**53, description="the project's settings revision (1, 2, "
                          "...); a Lua number holds it exactly")
    changed_by: UserId | None = None
    created_at: datetime = Field(default_factory=utcnow)


def unknown_labels(options: list[str] | None, labels: Iterable[str]) -> list[str]:
    """Labels outside the project's schema; a project without a schema accepts any label.

    The one rule every door applies: the router at submit (a 422), the labels service at
    its HTTP and stream doors, the quality service before it counts a vote."""
    if options is None:
        return []
    allowed = {*options, NONE_OF_THESE}  # a choice task's "none of the offered labels"
    return sorted({label for label in labels if label not in allowed})


def label_problems(project: str, options: list[str] | None, labels: Iterable[str]) -> list[str]:
    """:func:`unknown_labels` as messages for a 4xx or a dead letter."""
    return [f"label {label!r} is not in project {project!r}'s labels {options}"
            for label in unknown_labels(options, labels)]

"""The one definition of every event on the loopwise streams (design contract).

Each model validates what arrives from any producer; unknown fields are
ignored so that older consumers tolerate newer producers, and every event
carries ``schema_version`` so a consumer can refuse what it cannot read.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    RootModel,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.limits import (
    FINITE,
    LABEL_MAX,
    BatchId,
    CandidateId,
    Count,
    EventRef,
    GuidelineName,
    ItemId,
    JsonObject,
    Label,
    Message,
    Name,
    Note,
    Project,
    TaskId,
    Text,
    UserId,
    Version,
    label_characters,
)

SCHEMA_VERSION = 1
NONE_OF_THESE = "__none_of_these__"  # a choice-mode answer: the true label is not offered
EVENT_NAMESPACE = uuid.UUID("6f1c3c52-7d0e-4a53-9a59-2d1f6f0b7a10")


def utcnow() -> datetime:
    return datetime.now(UTC)


def session_batch_id(door: str, user_id: str, at: datetime | None = None) -> str:
    """The batch of the labels one person gives through one door in one UTC day
    (``review:alice:2026-12-02``): what "revert a bad batch" selects for human labels."""
    day = (at or utcnow()).astimezone(UTC).strftime("%Y-%m-%d")
    return f"{door}:{user_id[:64 - len(door) - 12]}:{day}"


_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes
_VERSION5 = (0xF000 << 64) | (0xC000 << 48)  # the bits uuid5 overwrites
_VERSION5_SET = (5 << 76) | (0x8000 << 48)


def _stable_int(parts: tuple[str, ...]) -> int:
    digest = hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()
    return (int.from_bytes(digest[:16]) & ~_VERSION5) | _VERSION5_SET


def stable_key(*parts: str) -> str:
    """``str(stable_id(*parts))``, without making the UUID: for ids that go straight to text."""
    h = f"{_stable_int(parts):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stable_id(*parts: str) -> uuid.UUID:
    """A deterministic UUID, so that a resend or a retry yields the same event id.

    Exactly ``uuid.uuid5(EVENT_NAMESPACE, "\\x1f".join(parts))``, built without the
    UUID constructor's checks: the router derives one for every prediction it routes.
    """
    out = object.__new__(uuid.UUID)
    value = _stable_int(parts)
    object.__setattr__(out, "int", value)
    object.__setattr__(out, "is_safe", uuid.SafeUUID.unknown)
    return out


class Event(BaseModel):
    """Common envelope: an idempotency key and the schema version."""

    # No NaN or infinity in any float field (shared.limits); the nested models say so too.
    model_config = ConfigDict(extra="ignore", frozen=False, allow_inf_nan=False)
    kind: ClassVar[str] = "event"

    # Never None once validated: an absent id is derived (below). Declared so, because
    # every consumer reads it as the event's id.
    event_id: uuid.UUID = Field(None, description="idempotency key; derived when absent")  # type: ignore[assignment]
    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"unsupported schema_version {version}; this build reads {SCHEMA_VERSION}"
            )
        return version

    @model_validator(mode="after")
    def _derive_event_id(self, info: ValidationInfo) -> Any:
        """Without an explicit id, derive one from what the producer sent: a resend is harmless.

        A stream entry validated from its bytes (``context={"raw": bytes}``) hashes those
        bytes as they came; otherwise the fields the producer set, in canonical JSON.
        An after-validator, so that validating JSON never has to build the input as
        Python objects first (a before-validator would, at about half again the cost).
        """
        if self.event_id is None:
            raw = info.context.get("raw") if info.context else None
            if raw is not None:
                text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                self.event_id = stable_id("entry", text)
            else:
                sent = self.model_dump(mode="json", exclude_unset=True, exclude={"event_id"})
                self.event_id = stable_id(self.kind, json.dumps(sent, sort_keys=True))
        return self

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)


class ItemEvent(Event):
    """An item to score: numeric features or text, plus what reviewers are shown."""

    kind: ClassVar[str] = "item"

    project: Project
    item_id: ItemId
    features: list[float] | None = None  # finite (the config)
    text: Text | None = None
    payload: JsonObject | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ItemEvent:
        if self.features is None and self.text is None:
            raise ValueError("an item needs 'features' (list of numbers) or 'text'")
        return self


def check_distribution(probs: dict[str, float]) -> dict[str, float]:
    """Class probabilities the store and the scripts can hold: storable labels, each in
    [0, 1] (no NaN or infinity), summing to 1; empty means no model yet."""
    if not probs:
        return probs
    for label in probs:  # every label may become a stored label
        if not 0 < len(label) <= LABEL_MAX:
            raise ValueError(f"label {label[:40]!r}: 1-{LABEL_MAX} characters")
        try:
            label_characters(label)
        except ValueError as exc:
            raise ValueError(f"label {label[:40]!r}: {exc}") from None
    values = probs.values()
    if not (min(values) >= 0 and max(values) <= 1):  # builtins first: the common case
        for label, p in probs.items():
            if not math.isfinite(p) or p < 0 or p > 1:
                raise ValueError(f"probability of {label!r} is {p}, not in [0, 1]")
    total = sum(values)
    if not abs(total - 1.0) <= 1e-3:  # written so that a NaN fails too
        raise ValueError(f"probabilities sum to {total:.6f}, not 1")
    return probs


class PredictionEvent(Event):
    """A model's class probabilities for one item. Empty ``probs``: no model yet."""

    kind: ClassVar[str] = "prediction"

    project: Project
    item_id: ItemId
    model_version: Version
    probs: dict[str, float]
    payload: JsonObject | None = None
    review: bool = Field(False, description="selected for human review: never auto-accepted")
    priority: float | None = Field(  # finite (the config): the enqueue script sorts by it
        None, description="active-learning priority; default uncertainty"
    )
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("probs")
    @classmethod
    def _is_distribution(cls, probs: dict[str, float]) -> dict[str, float]:
        return check_distribution(probs)

    def top(self) -> tuple[str | None, float]:
        """The most probable label and its probability (None, 0.0 without a model)."""
        if not self.probs:
            return None, 0.0
        label = max(self.probs, key=self.probs.__getitem__)
        return label, self.probs[label]


class LabelSource(StrEnum):
    human = "human"
    auto = "auto"
    adjudicated = "adjudicated"
    consensus = "consensus"
    imported = "import"


class ReviewMode(StrEnum):
    blind = "blind"
    prelabel = "prelabel"
    choice = "choice"
    adjudication = "adjudication"
    comparison = "comparison"  # a preference between candidate outputs (loopwise:comparisons)


# A preference's verdict: which candidate is better, a full ranking, a tie, or none is good.
TIE = "__tie__"
BOTH_BAD = "__both_bad__"
CANDIDATES_MAX = 8


class Verdict(StrEnum):
    better = "better"  # one candidate is the best; the others are not ranked among themselves
    ranked = "ranked"  # every candidate in order, best first
    tie = "tie"  # as good as each other
    both_bad = "both_bad"  # none is acceptable: no preference to learn from


class Candidate(BaseModel):
    """One output to compare: what the reviewer reads, and (hidden until the submit) which
    model wrote it."""

    model_config = FINITE
    candidate_id: CandidateId
    text: Text
    model: Name | None = Field(None, description="the model that wrote it; never shown "
                                                 "before the submit")
    features: list[float] | None = Field(
        None, description="numeric features for the reward model (else it hashes the text)")


def _distinct_candidates(candidates: list[Candidate]) -> list[Candidate]:
    ids = [c.candidate_id for c in candidates]
    if len(set(ids)) != len(ids):
        raise ValueError(f"candidate ids must be distinct (got {ids})")
    return candidates


class ComparisonEvent(Event):
    """A prompt and two or more candidate outputs to compare (``loopwise:comparisons``).

    The router queues it as a comparison task, like a prediction it sends to review; the
    scorer keeps it for the reward model. ``gold_choice`` (a known better candidate) makes
    it a gold pair: reviewers are not told, the quality service scores them on it.
    """

    kind: ClassVar[str] = "comparison"

    project: Project
    comparison_id: ItemId
    prompt: Text
    candidates: list[Candidate] = Field(min_length=2, max_length=CANDIDATES_MAX)
    payload: JsonObject | None = None
    priority: float | None = Field(
        None, description="higher is reviewed first (the active pair selector's score)")
    gold_choice: CandidateId | None = Field(
        None, description="the candidate known to be better: a gold pair")
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, candidates: list[Candidate]) -> list[Candidate]:
        return _distinct_candidates(candidates)

    @model_validator(mode="after")
    def _gold_is_a_candidate(self) -> ComparisonEvent:
        if self.gold_choice is not None and self.gold_choice not in {
                c.candidate_id for c in self.candidates}:
            raise ValueError(f"gold_choice {self.gold_choice!r} is not one of the candidates")
        return self


class Preference(BaseModel):
    """What a comparison's label event records beyond the label: what was shown, in which
    order, which models wrote it (revealed after the submit), and the verdict in full.

    The event's ``label`` is the verdict in one string, so that agreement, versions, diff
    and rollback treat preferences like any label: the better candidate's id, the ranking
    joined by ``>`` (best first), ``__tie__`` or ``__both_bad__``.
    """

    model_config = FINITE
    verdict: Verdict
    ranking: list[CandidateId] = Field(
        default_factory=list, max_length=CANDIDATES_MAX,
        description="best first: one id for 'better', every candidate for 'ranked'")
    shown_order: list[CandidateId] = Field(min_length=2, max_length=CANDIDATES_MAX,
                                           description="the order the reviewer saw")
    prompt: Text
    texts: dict[CandidateId, Text] = Field(description="candidate id -> its text")
    models: dict[CandidateId, Name] = Field(default_factory=dict,
                                            description="candidate id -> the model")
    reason: Note | None = None
    gold_choice: CandidateId | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Preference:
        shown = set(self.shown_order)
        if len(shown) != len(self.shown_order) or shown != set(self.texts):
            raise ValueError("shown_order must list every candidate once")
        if not set(self.ranking) <= shown or len(set(self.ranking)) != len(self.ranking):
            raise ValueError("the ranking must name distinct shown candidates")
        want = {Verdict.better: 1, Verdict.ranked: len(shown), Verdict.tie: 0,
                Verdict.both_bad: 0}[self.verdict]
        if len(self.ranking) != want:
            raise ValueError(f"a '{self.verdict.value}' verdict ranks {want} candidate(s), "
                             f"not {len(self.ranking)}")
        return self

    def label(self) -> str:
        """The verdict as the label store holds it."""
        if self.verdict is Verdict.tie:
            return TIE
        if self.verdict is Verdict.both_bad:
            return BOTH_BAD
        return ">".join(self.ranking)

    def pairs(self) -> list[tuple[str, str]]:
        """(chosen, rejected) pairs the verdict implies: the best over each other one, or
        every ordered pair of a ranking; none for a tie or both bad."""
        if self.verdict is Verdict.better:
            best = self.ranking[0]
            return [(best, c) for c in self.shown_order if c != best]
        if self.verdict is Verdict.ranked:
            r = self.ranking
            return [(r[i], r[j]) for i in range(len(r)) for j in range(i + 1, len(r))]
        return []

    def first_shown_chosen(self) -> bool | None:
        """Whether the reviewer preferred the candidate shown first (position bias); None
        when the verdict prefers none."""
        if not self.ranking:
            return None
        return self.ranking[0] == self.shown_order[0]


class LabelEvent(Event):
    """One label with the full provenance of the design contract.

    Its limits are the label store's (column lengths, no NUL byte, which PostgreSQL text
    cannot hold), so that a label the store would refuse is refused where it is made
    (a 4xx at submit), never acknowledged and dead-lettered later.
    """

    kind: ClassVar[str] = "label"

    project: Project
    item_id: ItemId
    label: Label
    labeler_id: UserId
    source: LabelSource
    mode: ReviewMode | None = None
    shown_prelabel: Label | None = None
    agreed_with_prelabel: bool | None = None
    revised_after_reveal: bool = False
    model_version: Version | None = None
    guideline_version: Version | None = None
    task_id: TaskId | None = None
    batch_id: BatchId | None = None
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    created_at: datetime = Field(default_factory=utcnow)
    duration_ms: Count | None = None
    # Review bookkeeping for the quality service; never shown to reviewers.
    model_label: Label | None = Field(None, description="the model's top label for the item")
    gold_label: Label | None = Field(
        None, description="known answer when the task was a gold item")
    planted_prelabel: bool = Field(False, description="the shown pre-label was deliberately wrong")
    audit_sample: bool = Field(False, description="would have been auto-accepted; audited blind")
    late_submit: bool = Field(False, description="submitted after the lease had expired")
    supersedes: EventRef | None = Field(
        None, description="event id this one revises (after reveal)")
    preference: Preference | None = Field(
        None, description="a comparison's verdict in full (mode 'comparison')")

    @model_validator(mode="after")
    def _attribution_is_consistent(self) -> LabelEvent:
        if self.source is LabelSource.auto and not self.labeler_id.startswith("model:"):
            raise ValueError("an auto label's labeler_id must be 'model:<version>'")
        if self.source is LabelSource.human and self.mode is None:
            raise ValueError("a human label must say its review mode")
        if self.preference is not None and self.label != self.preference.label():
            raise ValueError(f"a preference's label must be {self.preference.label()!r}, "
                             f"its verdict")
        return self


def _iso(at: datetime) -> str:
    return at.isoformat()


# The quality service has always written its findings' times with ``isoformat`` (what
# its records and HTTP answers hold); pydantic's own JSON form would say "Z" for UTC.
IsoDatetime = Annotated[datetime, PlainSerializer(_iso, return_type=str, when_used="json")]
AdjudicationReason = Literal["split_vote", "low_posterior"]
_ENVELOPE = frozenset({"event_id", "schema_version", "type", "project", "created_at"})


class QualityEventBase(Event):
    """What every finding of the quality service on ``loopwise:quality`` carries.

    Each type is its own model below; consumers validate with :class:`QualityEvent`,
    which picks the model by ``type``.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    kind: ClassVar[str] = "quality"

    project: Project
    created_at: datetime = Field(default_factory=utcnow)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False, by_alias=True)

    def finding(self) -> dict[str, Any]:
        """The typed fields without the envelope, as JSON values: what the quality service
        records of the finding (``quality_findings.detail``) and shows over HTTP."""
        return self.model_dump(mode="json", by_alias=True, exclude=set(_ENVELOPE))


class LabelerFlagEvent(QualityEventBase):
    """A labeler defers to the model's pre-labels: the sequential test crossed its threshold.

    The router pauses the labeler when ``pause`` is set (and unpauses them when it is
    not); the evidence fields are for the reviewer who decides whether to clear the flag.
    """

    kind: ClassVar[str] = "labeler_flag"
    type: Literal["labeler_flag"] = "labeler_flag"
    labeler_id: UserId
    pause: bool = Field(description="stop handing the labeler tasks until the flag is cleared")
    evidence_since: IsoDatetime | None = Field(
        None, description="when the run of evidence that raised the flag began")
    flagged_at: IsoDatetime | None = Field(None, description="the label that crossed the line")
    statistic: float = Field(description="the test statistic when the flag was raised")
    threshold: float = Field(description="the statistic's flagging threshold")
    test: Note = "cusum-sprt: defers to pre-labels vs judges them"
    tasks_in_evidence: Count = Field(description="pre-labelled tasks in the evidence run")
    gold_catch_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="share of planted wrong pre-labels caught")
    correction_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="share of shown pre-labels the labeler changed")
    model_error_rate: float | None = Field(
        None, ge=0.0, le=1.0, description="the model's (cautious) error rate, for comparison")
    re_review_items: list[ItemId] = Field(
        default_factory=list, description="items the labeler labelled since the evidence began")


class FlagSummary(BaseModel):
    """The flag a clearing resolved, as it stood (fields absent from old records: None)."""

    model_config = ConfigDict(allow_inf_nan=False)
    flagged_at: IsoDatetime | None = None
    evidence_since: IsoDatetime | None = None
    statistic: float | None = None
    tasks_in_evidence: Count | None = None


class LabelerFlagClearedEvent(QualityEventBase):
    """A reviewer looked at the evidence and cleared a labeler's flag: unpause them."""

    kind: ClassVar[str] = "labeler_flag_cleared"
    type: Literal["labeler_flag_cleared"] = "labeler_flag_cleared"
    labeler_id: UserId
    cleared_by: UserId = Field(description="the admin who cleared it")
    note: Note | None = None
    cleared_at: IsoDatetime
    pause: Literal[False] = Field(False, description="a cleared labeler is never paused")
    tasks_seen: Count = Field(
        description="the monitor's task count at the clear: a restart replays it there")
    flag: FlagSummary


class AdjudicationRequestEvent(QualityEventBase):
    """An item the consensus should not settle alone: the router makes it a reviewer task."""

    kind: ClassVar[str] = "adjudication_request"
    type: Literal["adjudication_request"] = "adjudication_request"
    item_id: ItemId
    labels: dict[UserId, Label] = Field(
        description="labeler -> label: the votes an adjudicator sees")
    consensus: Label = Field(description="the aggregator's label for the item")
    confidence: float = Field(ge=0.0, le=1.0, description="its posterior; low goes first")
    reason: AdjudicationReason


class GuidelineAlertEvent(QualityEventBase):
    """Agreement on a class under one guideline version fell below the threshold."""

    kind: ClassVar[str] = "guideline_alert"
    type: Literal["guideline_alert"] = "guideline_alert"
    label_class: Label = Field(alias="class")
    guideline_version: GuidelineName
    agreement: float
    threshold: float
    items: Count = Field(description="items with overlap behind the agreement figure")
    advice: Message = "sharpen the guideline for this class"


AnyQualityEvent = Annotated[
    LabelerFlagEvent | LabelerFlagClearedEvent | AdjudicationRequestEvent | GuidelineAlertEvent,
    Field(discriminator="type"),
]


class QualityEvent(RootModel[AnyQualityEvent]):
    """The one way to read ``loopwise:quality``: picks the model by ``type`` and validates
    it, so an unknown type or a missing field is refused like any invalid event.
    The event itself is ``.root``."""


class ModelTrainedEvent(Event):
    """A new model version became the project's serving model."""

    kind: ClassVar[str] = "model"

    project: Project
    model_version: Version
    label_set: JsonObject = Field(description="which labels it was trained on")
    strategy: Name
    metrics: JsonObject
    created_at: datetime = Field(default_factory=utcnow)


class DeadLetterEvent(Event):
    """An entry a consumer could not accept: the original, where it came from, and why.

    Not held to the limits of :mod:`shared.limits`: it carries the refused entry as it
    came (NUL bytes and all) to a capped stream nobody stores, so that nothing of it is
    lost.
    """

    kind: ClassVar[str] = "deadletter"

    stream: str
    entry_id: str
    group: str
    reason: str
    fields: dict[str, str]
    created_at: datetime = Field(default_factory=utcnow)

"""What the labels service's routes answer: one model per answer, the OpenAPI document's
response schemas and the shape FastAPI validates each answer against.

Rows read from the tables keep the columns' names; a model allows fields it does not
name (``extra="allow"``) where a row may grow a column, so that a new column is shown,
not dropped, and is added here when it is part of the contract.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.projects import QualitySettings, RoutingPolicy, SelectionSettings

OPEN = ConfigDict(extra="allow")


class StoredLabel(BaseModel):
    """A stored label event with its whole provenance (reviewers and admins)."""

    model_config = OPEN
    event_id: str
    project: str | None = None
    item_id: str
    label: str
    labeler_id: str
    source: str = Field(description="human, auto, adjudicated, consensus or import")
    mode: str | None = None
    shown_prelabel: str | None = None
    agreed_with_prelabel: bool | None = None
    revised_after_reveal: bool | None = None
    model_version: str | None = None
    guideline_version: str | None = None
    task_id: str | None = None
    batch_id: str | None = None
    confidence: float | None = None
    created_at: datetime
    duration_ms: int | None = None
    model_label: str | None = None
    gold_label: str | None = None
    planted_prelabel: bool | None = None
    audit_sample: bool | None = None
    late_submit: bool | None = None
    supersedes: str | None = None
    stored_at: datetime | None = None


class OwnLabel(BaseModel):
    """A labeler's own label: nothing that tells the model's guess or a gold task."""

    event_id: str
    item_id: str
    label: str
    labeler_id: str
    source: str
    mode: str | None = None
    revised_after_reveal: bool | None = None
    supersedes: str | None = None
    late_submit: bool | None = None
    guideline_version: str | None = None
    task_id: str | None = None
    batch_id: str | None = None
    duration_ms: int | None = None
    created_at: datetime
    stored_at: datetime | None = None


class LabelsOut(BaseModel):
    """The current labels of a project (or of a version or moment). A labeler gets their
    own labels (``labeler_id`` set, no ``events_by_source``); reviewers every item's."""

    project: str
    view: str = Field(description="which labels: head, a version, or as of a moment")
    version: int | None
    count: int
    labeler_id: str | None = Field(None, description="set when these are a labeler's own")
    events_by_source: dict[str, int] | None = None
    labels: list[StoredLabel] | list[OwnLabel]


class LabelsStored(BaseModel):
    inserted: int = Field(description="events new to the store (a repeat inserts nothing)")
    event_ids: list[str]


class ProjectOut(BaseModel):
    """A project's settings document and when it changed."""

    name: str
    label_options: list[str] | None
    sensitive: bool
    routing: RoutingPolicy
    selection: SelectionSettings
    quality: QualitySettings
    settings: dict[str, Any] = Field(description="free notes of the team")
    revision: int
    created_at: datetime
    updated_at: datetime


class Member(BaseModel):
    model_config = OPEN
    project: str
    user_id: str
    role: str
    added_at: datetime


class MembersOut(BaseModel):
    project: str
    members: list[Member]


class MemberOut(BaseModel):
    project: str
    user_id: str
    role: str


class MemberRemoved(BaseModel):
    project: str
    user_id: str
    removed: bool
    revoked_tokens: list[int] = Field(description="ids of their tokens for the project, "
                                      "revoked with the membership")


class Version(BaseModel):
    """A named, immutable label-set version: which events count in it."""

    model_config = OPEN
    project: str
    number: int
    name: str | None
    parent: int | None
    kind: str = Field(description="snapshot, revert or unrevert")
    author: str
    message: str
    created_at: datetime
    cutoff: datetime = Field(description="events stored by then are its candidates")
    selector: dict[str, Any] | None
    reverts: int | None
    excluded: int
    included: int


class VersionsOut(BaseModel):
    project: str
    versions: list[Version]


class ItemChange(BaseModel):
    item_id: str
    before: str | None
    after: str | None
    before_event: str | None
    after_event: str | None


class DiffCounts(BaseModel):
    added: int
    removed: int
    changed: int


class DiffOut(BaseModel):
    project: str
    from_: str = Field(alias="from")
    to: str
    counts: DiffCounts
    added: list[ItemChange]
    removed: list[ItemChange]
    changed: list[ItemChange]

    model_config = ConfigDict(populate_by_name=True)


class RevertOut(BaseModel):
    """What a revert (or its preview) changes; ``version`` is the new version (None for a
    dry run)."""

    dry_run: bool
    events: int
    items: int
    effects: list[dict[str, Any]]
    version: Version | None


class TraceOut(BaseModel):
    """Which event, labeler, batch, guideline and pre-label gave the item its label."""

    model_config = OPEN
    project: str
    view: str
    item_id: str
    label: str | None
    decided_by: dict[str, Any] | None
    labeler_id: str | None = None
    batch_id: str | None = None
    guideline_version: str | None = None
    model_prelabel: dict[str, Any] | None = None
    reason: str | None = None
    history: list[dict[str, Any]]


class SkippedAnnotation(BaseModel):
    task_id: str
    item_id: str
    annotation_id: str
    reason: str


class ImportOut(BaseModel):
    batch_id: str
    tasks: int
    annotations: int
    skipped: list[SkippedAnnotation]
    ignored: int
    dry_run: bool
    inserted: int


class UserOut(BaseModel):
    user_id: str
    display_name: str | None


class User(BaseModel):
    model_config = OPEN
    user_id: str
    display_name: str | None
    created_at: datetime
    disabled_at: datetime | None


class UsersOut(BaseModel):
    users: list[User]


class UserDisabled(BaseModel):
    user_id: str
    disabled: bool


class TokenCreated(BaseModel):
    """The token itself, shown this once (only its SHA-256 is stored)."""

    token: str
    id: int
    user_id: str
    role: str
    project: str
    ttl_days: float | None


class Token(BaseModel):
    id: int
    user_id: str
    role: str
    project: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokensOut(BaseModel):
    tokens: list[Token]


class TokenRevoked(BaseModel):
    id: int
    revoked: bool
    was_live: bool


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_role: str | None
    client: str | None
    action: str
    project: str | None
    target: str | None
    detail: Any


class AuditOut(BaseModel):
    entries: list[AuditEntry]
    next_after_id: int = Field(description="pass as after_id for the next page")

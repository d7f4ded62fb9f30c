"""Tables of the quality service (schema owned by migrations 0003_quality, 0005 and 0009).

* ``quality_label_votes``: every label event with the provenance the quality
  measures need (mode, pre-label shown, gold, planted, guideline version...);
* ``quality_consensus``: the consensus label last published per item, with its
  revision, so a restart neither republishes nor loses track;
* ``quality_findings``: what was said on ``loopwise:quality`` (adjudication
  requests, labeler flags, guideline alerts), one row per (kind, key), so a
  finding is said once and its resolution is remembered;
* ``quality_checkpoints``: each project's in-memory state as of one stored batch
  (``stored_seq``), so a restart replays only the votes stored after it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from shared.limits import (
    EVENT_ID_MAX,
    FINDING_KEY_MAX,
    ID_MAX,
    LABEL_MAX,
    PROJECT_MAX,
    SOURCE_MAX,
    VERSION_MAX,
)
from shared.tables import metadata

quality_label_votes = Table(
    "quality_label_votes",
    metadata,
    Column("event_id", String(EVENT_ID_MAX), primary_key=True),
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("item_id", String(ID_MAX), nullable=False),
    Column("labeler_id", String(ID_MAX), nullable=False),
    Column("label", String(LABEL_MAX), nullable=False),
    Column("source", String(SOURCE_MAX), nullable=False),
    Column("mode", String(SOURCE_MAX), nullable=True),
    Column("shown_prelabel", String(LABEL_MAX), nullable=True),
    Column("model_label", String(LABEL_MAX), nullable=True),
    Column("gold_label", String(LABEL_MAX), nullable=True),
    Column("planted_prelabel", Boolean, nullable=False, default=False),
    Column("revised_after_reveal", Boolean, nullable=False, default=False),
    Column("guideline_version", String(VERSION_MAX), nullable=True),
    Column("supersedes", String(EVENT_ID_MAX), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # What the evaluation of review needs (migration 0005): audits, human time, the model.
    Column("audit_sample", Boolean, nullable=False, default=False),
    Column("duration_ms", Integer, nullable=True),
    Column("model_version", String(64), nullable=True),
    Column("confidence", Float, nullable=True),
    # A comparison's pick (migration 0011): was it the first-shown candidate, of how many
    # shown; null when the verdict names no best one (tie, both bad) or it is no comparison.
    Column("first_shown_chosen", Boolean, nullable=True),
    Column("candidates_shown", Integer, nullable=True),
    # The consumer's batch number when the vote was stored (migration 0009): a restart
    # replays the votes stored after its project's checkpoint. NULL: stored before 0009.
    Column("stored_seq", BigInteger, nullable=True),
    Index("ix_quality_label_votes_project_created", "project", "created_at"),
    Index("ix_quality_label_votes_project_seq", "project", "stored_seq"),
)

quality_consensus = Table(
    "quality_consensus",
    metadata,
    Column("project", String(PROJECT_MAX), primary_key=True),
    Column("item_id", String(ID_MAX), primary_key=True),
    Column("label", String(LABEL_MAX), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

quality_findings = Table(
    "quality_findings",
    metadata,
    Column("project", String(PROJECT_MAX), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("key", String(FINDING_KEY_MAX), primary_key=True),
    Column("detail", JSON, nullable=False),
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
)

quality_checkpoints = Table(
    "quality_checkpoints",
    metadata,
    Column("project", String(PROJECT_MAX), primary_key=True),
    Column("stored_seq", BigInteger, nullable=False),  # every batch up to it is in ``state``
    Column("format", Integer, nullable=False),  # :data:`checkpoint.FORMAT` it was written in
    Column("votes", BigInteger, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    Column("state", LargeBinary, nullable=False),
)

"""Database tables (SQLAlchemy Core). Alembic migrations under shared/migrations own the schema.

Each service writes only its own tables: tokens (labels service / CLI),
items and models (scorer), label_events (labels). Tables only one service uses live
with it (services/labels/tables.py, services/quality/tables.py) on the same metadata.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", String(256), nullable=False),
    Column("role", String(32), nullable=False),
    Column("project", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

items = Table(
    "items",
    metadata,
    Column("project", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("features", JSON, nullable=True),
    Column("text", Text, nullable=True),
    Column("payload", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("project", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("label_count", Integer, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("blob", LargeBinary, nullable=False),
)

label_events = Table(
    "label_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("project", String(64), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("label", String(256), nullable=False),
    Column("labeler_id", String(256), nullable=False),
    Column("source", String(16), nullable=False),
    Column("mode", String(16), nullable=True),
    Column("shown_prelabel", String(256), nullable=True),
    Column("agreed_with_prelabel", Boolean, nullable=True),
    Column("revised_after_reveal", Boolean, nullable=False, default=False),
    Column("model_version", String(64), nullable=True),
    Column("guideline_version", String(64), nullable=True),
    Column("task_id", String(64), nullable=True),
    Column("batch_id", String(64), nullable=True),
    Column("confidence", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=True),
    Column("model_label", String(256), nullable=True),
    Column("gold_label", String(256), nullable=True),
    Column("planted_prelabel", Boolean, nullable=False, default=False),
    Column("audit_sample", Boolean, nullable=False, default=False),
    Column("late_submit", Boolean, nullable=False, default=False),
    Column("supersedes", String(36), nullable=True),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Index("ix_label_events_project_item", "project", "item_id"),
    Index("ix_label_events_project_created", "project", "created_at"),
)

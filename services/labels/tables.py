"""The labels service's tables: label events, projects, versions, import refs, audit.

Declared on the shared metadata so that one Alembic history owns the schema;
migration ``0003_labels`` creates them. Label versions, version changes and the
audit log are append-only (database triggers refuse UPDATE and DELETE).

Partitioned by project (migration ``0008_partitioned_label_store``): on PostgreSQL the event
tables are ``PARTITION BY HASH (project)``, so every key holds the project, an event id
is unique within its project (not across projects), and every query names the project
so that it reads one partition. SQLite keeps plain tables with the same keys.
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
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from shared.limits import (
    BATCH_ID_MAX,
    CLIENT_MAX,
    EVENT_ID_MAX,
    ID_MAX,
    LABEL_MAX,
    PROJECT_MAX,
    ROLE_MAX,
    SOURCE_MAX,
    TASK_ID_MAX,
    VERSION_MAX,
    VERSION_NAME_MAX,
)
from shared.tables import metadata

PARTITION_BY_PROJECT = "HASH (project)"
"""How PostgreSQL partitions the event tables (the partitions themselves: migration 0008)."""

label_events = Table(
    "label_events",
    metadata,
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("item_id", String(ID_MAX), nullable=False),
    Column("label", String(LABEL_MAX), nullable=False),
    Column("labeler_id", String(ID_MAX), nullable=False),
    Column("source", String(SOURCE_MAX), nullable=False),
    Column("mode", String(SOURCE_MAX), nullable=True),
    Column("shown_prelabel", String(LABEL_MAX), nullable=True),
    Column("agreed_with_prelabel", Boolean, nullable=True),
    Column("revised_after_reveal", Boolean, nullable=False, default=False),
    Column("model_version", String(VERSION_MAX), nullable=True),
    Column("guideline_version", String(VERSION_MAX), nullable=True),
    Column("task_id", String(TASK_ID_MAX), nullable=True),
    Column("batch_id", String(BATCH_ID_MAX), nullable=True),
    Column("confidence", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=True),
    Column("model_label", String(LABEL_MAX), nullable=True),
    Column("gold_label", String(LABEL_MAX), nullable=True),
    Column("planted_prelabel", Boolean, nullable=False, default=False),
    Column("audit_sample", Boolean, nullable=False, default=False),
    Column("late_submit", Boolean, nullable=False, default=False),
    Column("supersedes", String(EVENT_ID_MAX), nullable=True),
    # a comparison's verdict in full (shared.events.Preference); null for other labels
    Column("preference", JSON(none_as_null=True), nullable=True),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("project", "event_id", name="label_events_pkey"),
    Index("ix_label_events_project_item", "project", "item_id"),
    Index("ix_label_events_project_created", "project", "created_at"),
    Index("ix_label_events_project_stored", "project", "stored_at"),
    postgresql_partition_by=PARTITION_BY_PROJECT,
)

projects = Table(
    "projects",
    metadata,
    Column("name", String(PROJECT_MAX), primary_key=True),
    # null: the project declares no label schema and any label is accepted
    Column("label_options", JSON, nullable=True),
    Column("sensitive", Boolean, nullable=False, default=False),
    Column("settings", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

label_versions = Table(
    "label_versions",
    metadata,
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("number", Integer, nullable=False),
    Column("name", String(VERSION_NAME_MAX), nullable=True),
    Column("parent", Integer, nullable=True),
    Column("kind", String(16), nullable=False),  # snapshot | revert | unrevert
    Column("author", String(ID_MAX), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # events stored at or before the cutoff are the candidates of this version
    Column("cutoff", DateTime(timezone=True), nullable=False),
    Column("selector", JSON, nullable=True),
    Column("reverts", Integer, nullable=True),  # the version an unrevert undoes
    Column("excluded", Integer, nullable=False, default=0),
    Column("included", Integer, nullable=False, default=0),
    PrimaryKeyConstraint("project", "number"),
    Index("ux_label_versions_name", "project", "name", unique=True),
)

# delta +1: the event stops counting from this version on; -1: it counts again.
label_version_changes = Table(
    "label_version_changes",
    metadata,
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("delta", Integer, nullable=False),
    PrimaryKeyConstraint("project", "version", "event_id", name="label_version_changes_pkey"),
    Index("ix_label_version_changes_event", "project", "event_id"),
    postgresql_partition_by=PARTITION_BY_PROJECT,
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(ID_MAX), nullable=False),
    Column("actor_role", String(ROLE_MAX), nullable=True),
    Column("client", String(CLIENT_MAX), nullable=True),
    Column("action", String(64), nullable=False),
    Column("project", String(PROJECT_MAX), nullable=True),
    Column("target", String(ID_MAX), nullable=True),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_log_project", "project", "id"),
)

# Where an imported label sat in Label Studio, so an export writes it back in place.
import_refs = Table(
    "label_import_refs",
    metadata,
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("event_id", String(EVENT_ID_MAX), nullable=False),
    Column("ref", JSON, nullable=False),
    PrimaryKeyConstraint("project", "event_id", name="label_import_refs_pkey"),
)

# Item payloads that arrived with an import (the scorer's ``items`` holds streamed ones).
item_payloads = Table(
    "label_item_payloads",
    metadata,
    Column("project", String(PROJECT_MAX), nullable=False),
    Column("item_id", String(ID_MAX), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("project", "item_id"),
)

APPEND_ONLY_TABLES = ("label_events", "label_versions", "label_version_changes", "audit_log")

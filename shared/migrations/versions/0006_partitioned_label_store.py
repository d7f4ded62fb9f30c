"""label store partitioned by project: unique per (project, event_id), not globally

Revision ID: 0006_partitioned_labels
Revises: 0005_quality_eval

Why: a global ``UNIQUE(event_id)`` cannot survive partitioning (PostgreSQL requires
every unique constraint of a partitioned table to contain the partition key; Citus the
distribution column). Every query of the label store names its project, so the project
is the key: on PostgreSQL ``label_events`` and ``label_version_changes`` become
``PARTITION BY HASH (project)`` with ``PARTITIONS`` partitions (no DDL when a project is
created, and a project's rows stay together: one partition per query), and
``label_import_refs`` gains the project. SQLite keeps plain tables with the same keys.

Every row is copied into the new tables inside the migration's transaction, and the
append-only triggers are recreated on them. Downgrading fails if two projects came to
share an event id (the old schema cannot hold that).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_partitioned_labels"
down_revision = "0005_quality_eval"
branch_labels = None
depends_on = None

PARTITIONS = 16
APPEND_ONLY = ("label_events", "label_version_changes")


def _event_columns() -> list[sa.Column]:
    """label_events as of 0005 (frozen here: a migration never imports today's tables)."""
    return [
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(256), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("labeler_id", sa.String(256), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("shown_prelabel", sa.String(256), nullable=True),
        sa.Column("agreed_with_prelabel", sa.Boolean(), nullable=True),
        sa.Column("revised_after_reveal", sa.Boolean(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("guideline_version", sa.String(64), nullable=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_label", sa.String(256), nullable=True),
        sa.Column("gold_label", sa.String(256), nullable=True),
        sa.Column("planted_prelabel", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("audit_sample", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("late_submit", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("supersedes", sa.String(36), nullable=True),
    ]


def _change_columns() -> list[sa.Column]:
    return [
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
    ]


EVENT_INDEXES = {
    "ix_label_events_project_item": ["project", "item_id"],
    "ix_label_events_project_created": ["project", "created_at"],
    "ix_label_events_project_stored": ["project", "stored_at"],
}
CHANGE_INDEXES = {"ix_label_version_changes_event": ["project", "event_id"]}


def _dialect() -> str:
    return op.get_bind().dialect.name


def _drop_append_only(table: str) -> None:
    if _dialect() == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")


def _append_only(table: str) -> None:
    """The same refusal 0003 installs; on a partitioned table PostgreSQL (13+) clones the
    row trigger onto every partition, present and future."""
    if _dialect() == "postgresql":
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION loopwise_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'table {table} is append-only'); END"
            )


def _rebuild(
    table: str,
    columns: list[sa.Column],
    key: list[str],
    indexes: dict[str, list[str]],
    *,
    partitioned: bool,
) -> None:
    """Move ``table`` aside, create it anew with primary key ``key`` (partitioned by
    project on PostgreSQL when asked), copy every row, drop the old one."""
    postgres = _dialect() == "postgresql"
    old = f"{table}_before_0006"
    _drop_append_only(table)
    for name in indexes:
        op.drop_index(name, table_name=table)
    op.rename_table(table, old)
    if postgres:
        # The old primary key's name would clash with the new table's.
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {table}_pkey TO {old}_pkey")
    options: dict[str, Any] = {"postgresql_partition_by": "HASH (project)"} if postgres and partitioned else {}
    op.create_table(table, *columns, sa.PrimaryKeyConstraint(*key, name=f"{table}_pkey"),
                    **options)
    if postgres and partitioned:
        for remainder in range(PARTITIONS):
            op.execute(
                f"CREATE TABLE {table}_p{remainder:02d} PARTITION OF {table} "
                f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {remainder})"
            )
    names = ", ".join(c.name for c in columns)
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {old}")
    op.drop_table(old)
    for name, cols in indexes.items():
        op.create_index(name, table, cols)
    _append_only(table)


def _import_refs(*, with_project: bool) -> None:
    """label_import_refs keyed by (project, event_id): each ref takes its event's project."""
    old = "label_import_refs_before_0006"
    op.rename_table("label_import_refs", old)
    if _dialect() == "postgresql":
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT label_import_refs_pkey TO {old}_pkey")
    if with_project:
        op.create_table(
            "label_import_refs",
            sa.Column("project", sa.String(64), nullable=False),
            sa.Column("event_id", sa.String(36), nullable=False),
            sa.Column("ref", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("project", "event_id", name="label_import_refs_pkey"),
        )
        # A ref is written in the transaction of its event, so every ref has one; the
        # old schema's event ids were globally unique, so the join finds exactly one.
        op.execute(
            f"INSERT INTO label_import_refs (project, event_id, ref) "
            f"SELECT e.project, r.event_id, r.ref FROM {old} r "
            f"JOIN label_events e ON e.event_id = r.event_id"
        )
    else:
        op.create_table(
            "label_import_refs",
            sa.Column("event_id", sa.String(36), nullable=False),
            sa.Column("ref", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("event_id", name="label_import_refs_pkey"),
        )
        op.execute(
            f"INSERT INTO label_import_refs (event_id, ref) SELECT event_id, ref FROM {old}"
        )
    op.drop_table(old)


def upgrade() -> None:
    _rebuild("label_events", _event_columns(), ["project", "event_id"], EVENT_INDEXES,
             partitioned=True)
    _rebuild("label_version_changes", _change_columns(), ["project", "version", "event_id"],
             CHANGE_INDEXES, partitioned=True)
    _import_refs(with_project=True)


def downgrade() -> None:
    _import_refs(with_project=False)
    _rebuild("label_version_changes", _change_columns(), ["project", "version", "event_id"],
             CHANGE_INDEXES, partitioned=False)
    _rebuild("label_events", _event_columns(), ["event_id"], EVENT_INDEXES, partitioned=False)

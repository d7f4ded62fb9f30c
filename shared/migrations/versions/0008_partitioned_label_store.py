"""label store partitioned by project: unique per (project, event_id), not globally

Revision ID: 0008_partitioned_label_store
Revises: 0011_preference_learning

Why: a global ``UNIQUE(event_id)`` cannot survive partitioning (PostgreSQL requires
every unique constraint of a partitioned table to contain the partition key; Citus the
distribution column). Every query of the label store names its project, so the project
is the key: on PostgreSQL ``label_events`` and ``label_version_changes`` become
``PARTITION BY HASH (project)`` with ``PARTITIONS`` partitions (no DDL when a project is
created, and a project's rows stay together: one partition per query), and
``label_import_refs`` gains the project. SQLite keeps plain tables with the same keys.

Every row is copied into the new tables inside the migration's transaction, and the
append-only triggers are recreated on them. The columns and indexes are read from the
database at upgrade time, not frozen here: a migration before this one (``0007_preferences``
adds ``label_events.preference``) may have added some, and every one of them is carried
over with its type, nullability, default and data. Downgrading fails if two projects came to
share an event id (the old schema cannot hold that).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008_partitioned_label_store"
down_revision = "0011_preference_learning"
branch_labels = None
depends_on = None

PARTITIONS = 16
OLD = "{}_before_0008"


def _dialect() -> str:
    return op.get_bind().dialect.name


def _columns(table: str) -> list[sa.Column[Any]]:
    """The table's columns as the database has them now, in their order."""
    found = []
    for c in sa.inspect(op.get_bind()).get_columns(table):
        default = c.get("default")
        found.append(sa.Column(c["name"], c["type"], nullable=c["nullable"],
                               server_default=sa.text(default) if default is not None else None))
    return found


def _indexes(table: str) -> list[dict[str, Any]]:
    """The table's secondary indexes (not its primary key) as the database has them now."""
    return [dict(i) for i in sa.inspect(op.get_bind()).get_indexes(table)
            if i["name"] and not i["name"].startswith("sqlite_autoindex")]


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


def _move_aside(table: str) -> str:
    old = OLD.format(table)
    op.rename_table(table, old)
    if _dialect() == "postgresql":
        # The old primary key's name would clash with the new table's.
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT {table}_pkey TO {old}_pkey")
    return old


def _rebuild(table: str, key: list[str], *, partitioned: bool, append_only: bool = True) -> None:
    """Move ``table`` aside, create it anew with the same columns and primary key ``key``
    (partitioned by project on PostgreSQL when asked), copy every row, drop the old one,
    recreate its indexes."""
    postgres = _dialect() == "postgresql"
    columns = _columns(table)
    indexes = _indexes(table)
    if append_only:
        _drop_append_only(table)
    for index in indexes:
        op.drop_index(index["name"], table_name=table)
    old = _move_aside(table)
    options: dict[str, Any] = (
        {"postgresql_partition_by": "HASH (project)"} if postgres and partitioned else {})
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
    for index in indexes:
        op.create_index(index["name"], table, index["column_names"],
                        unique=bool(index.get("unique")))
    if append_only:
        _append_only(table)


def _import_refs(*, with_project: bool) -> None:
    """label_import_refs keyed by (project, event_id): each ref takes its event's project."""
    columns = [c for c in _columns("label_import_refs") if c.name != "project"]
    old = _move_aside("label_import_refs")
    names = ", ".join(c.name for c in columns)
    if with_project:
        op.create_table(
            "label_import_refs",
            sa.Column("project", sa.String(64), nullable=False),
            *columns,
            sa.PrimaryKeyConstraint("project", "event_id", name="label_import_refs_pkey"),
        )
        # A ref is written in the transaction of its event, so every ref has one; the
        # old schema's event ids were globally unique, so the join finds exactly one.
        picked = ", ".join(f"r.{c.name}" for c in columns)
        op.execute(
            f"INSERT INTO label_import_refs (project, {names}) "
            f"SELECT e.project, {picked} FROM {old} r "
            f"JOIN label_events e ON e.event_id = r.event_id"
        )
    else:
        op.create_table(
            "label_import_refs", *columns,
            sa.PrimaryKeyConstraint("event_id", name="label_import_refs_pkey"),
        )
        op.execute(f"INSERT INTO label_import_refs ({names}) SELECT {names} FROM {old}")
    op.drop_table(old)


def upgrade() -> None:
    _rebuild("label_events", ["project", "event_id"], partitioned=True)
    _rebuild("label_version_changes", ["project", "version", "event_id"], partitioned=True)
    _import_refs(with_project=True)


def downgrade() -> None:
    _import_refs(with_project=False)
    _rebuild("label_version_changes", ["project", "version", "event_id"], partitioned=False)
    _rebuild("label_events", ["event_id"], partitioned=False)

"""labels: projects, users, memberships, label-set versions, audit log; append-only triggers

Revision ID: 0003_labels
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_labels"
down_revision = "0002"
branch_labels = None
depends_on = None

APPEND_ONLY = ("label_events", "label_versions", "label_version_changes", "audit_log")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("label_options", sa.JSON(), nullable=True),
        sa.Column("sensitive", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("display_name", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "project_members",
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project", "user_id"),
    )
    op.create_index("ix_project_members_user", "project_members", ["user_id"])
    op.create_table(
        "label_versions",
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("parent", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=True),
        sa.Column("reverts", sa.Integer(), nullable=True),
        sa.Column("excluded", sa.Integer(), nullable=False),
        sa.Column("included", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("project", "number"),
    )
    op.create_index("ux_label_versions_name", "label_versions", ["project", "name"], unique=True)
    op.create_table(
        "label_version_changes",
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("project", "version", "event_id"),
    )
    op.create_index(
        "ix_label_version_changes_event", "label_version_changes", ["project", "event_id"]
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=True),
        sa.Column("client", sa.String(512), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=True),
        sa.Column("target", sa.String(256), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_project", "audit_log", ["project", "id"])
    op.create_table(
        "label_import_refs",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("ref", sa.JSON(), nullable=False),
    )
    op.create_table(
        "label_item_payloads",
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(256), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project", "item_id"),
    )
    # The item index of label_events serves per-item trace and the current-label window.
    op.create_index(
        "ix_label_events_project_stored", "label_events", ["project", "stored_at"]
    )
    _append_only_triggers()


def _append_only_triggers() -> None:
    """History tables refuse UPDATE and DELETE in the database itself, not only in the code."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION loopwise_append_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION loopwise_append_only()"
            )
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'table {table} is append-only'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        elif dialect == "sqlite":
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS loopwise_append_only()")
    op.drop_table("label_item_payloads")
    op.drop_table("label_import_refs")
    op.drop_index("ix_label_events_project_stored", table_name="label_events")
    op.drop_index("ix_audit_log_project", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_label_version_changes_event", table_name="label_version_changes")
    op.drop_table("label_version_changes")
    op.drop_index("ux_label_versions_name", table_name="label_versions")
    op.drop_table("label_versions")
    op.drop_index("ix_project_members_user", table_name="project_members")
    op.drop_table("project_members")
    op.drop_table("users")
    op.drop_table("projects")


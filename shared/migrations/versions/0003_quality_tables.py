"""quality service tables: label votes with provenance, published consensus, findings

Revision ID: 0003_quality
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_quality"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quality_label_votes",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(256), nullable=False),
        sa.Column("labeler_id", sa.String(256), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("shown_prelabel", sa.String(256), nullable=True),
        sa.Column("model_label", sa.String(256), nullable=True),
        sa.Column("gold_label", sa.String(256), nullable=True),
        sa.Column("planted_prelabel", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("revised_after_reveal", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("guideline_version", sa.String(64), nullable=True),
        sa.Column("supersedes", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_quality_label_votes_project_created", "quality_label_votes", ["project", "created_at"]
    )
    op.create_table(
        "quality_consensus",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "quality_findings",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("quality_findings")
    op.drop_table("quality_consensus")
    op.drop_index("ix_quality_label_votes_project_created", "quality_label_votes")
    op.drop_table("quality_label_votes")

"""merge the labels and quality branches; drop quality_votes (replaced by quality_label_votes)

Revision ID: 0004
Revises: 0003_labels, 0003_quality
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = ("0003_labels", "0003_quality")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_quality_votes_project_item", table_name="quality_votes")
    op.drop_table("quality_votes")


def downgrade() -> None:
    op.create_table(
        "quality_votes",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(256), nullable=False),
        sa.Column("labeler_id", sa.String(256), nullable=False),
        sa.Column("label", sa.String(256), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_quality_votes_project_item", "quality_votes", ["project", "item_id"])

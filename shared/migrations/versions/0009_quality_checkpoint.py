"""quality: a checkpoint of each project's in-memory state, and the order votes were stored

``quality_label_votes.stored_seq`` numbers the consumer's batches as they are stored, so
a restart that loads a checkpoint (``quality_checkpoints``: the state as of one batch
number) replays only the votes stored after it. Rows stored before this revision have
no number: a project without a checkpoint replays them all, as before.

Revision ID: 0009_quality_checkpoint
Revises: 0008_partitioned_label_store
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_quality_checkpoint"
down_revision = "0008_partitioned_label_store"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quality_label_votes") as batch:
        batch.add_column(sa.Column("stored_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_quality_label_votes_project_seq", "quality_label_votes",
                    ["project", "stored_seq"])
    op.create_table(
        "quality_checkpoints",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("stored_seq", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("votes", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quality_checkpoints")
    op.drop_index("ix_quality_label_votes_project_seq", table_name="quality_label_votes")
    with op.batch_alter_table("quality_label_votes") as batch:
        batch.drop_column("stored_seq")

"""label events: review bookkeeping (model label, gold, planted pre-label, audit, late, revision)

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

FLAGS = ("planted_prelabel", "audit_sample", "late_submit")


def upgrade() -> None:
    with op.batch_alter_table("label_events") as batch:
        batch.add_column(sa.Column("model_label", sa.String(256), nullable=True))
        batch.add_column(sa.Column("gold_label", sa.String(256), nullable=True))
        for flag in FLAGS:
            batch.add_column(sa.Column(flag, sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
        batch.add_column(sa.Column("supersedes", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("label_events") as batch:
        for column in ("supersedes", *reversed(FLAGS), "gold_label", "model_label"):
            batch.drop_column(column)

"""quality votes: what the evaluation of a project's review needs (audit, time, model)

Revision ID: 0005_quality_eval
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_quality_eval"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quality_label_votes") as batch:
        batch.add_column(sa.Column("audit_sample", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("duration_ms", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("model_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("confidence", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quality_label_votes") as batch:
        for column in ("confidence", "model_version", "duration_ms", "audit_sample"):
            batch.drop_column(column)

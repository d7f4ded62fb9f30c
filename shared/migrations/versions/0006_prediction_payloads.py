"""scorer: keep the payload of items that arrived only as predictions

Revision ID: 0006_prediction_payloads
Revises: 0005_quality_eval
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_prediction_payloads"
down_revision = "0005_quality_eval"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_payloads",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.String(256), primary_key=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prediction_payloads")

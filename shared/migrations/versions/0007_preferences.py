"""label events: a comparison's preference (verdict, order shown, candidates, models)

Revision ID: 0007_preferences
Revises: 0006_prediction_payloads
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_preferences"
down_revision = "0006_prediction_payloads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("label_events") as batch:
        batch.add_column(sa.Column("preference", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("label_events") as batch:
        batch.drop_column("preference")

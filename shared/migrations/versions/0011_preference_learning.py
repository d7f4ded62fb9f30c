"""preference learning: the scorer's Bradley-Terry reward-model versions; the quality
service's record of whether a comparison's pick was the first-shown candidate

Revision ID: 0011_preference_learning
Revises: 0007_preferences
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_preference_learning"
down_revision = "0007_preferences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_models",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pair_count", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_reward_models_project", "reward_models", ["project"])
    with op.batch_alter_table("quality_label_votes") as batch:
        batch.add_column(sa.Column("first_shown_chosen", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("candidates_shown", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quality_label_votes") as batch:
        batch.drop_column("candidates_shown")
        batch.drop_column("first_shown_chosen")
    op.drop_index("ix_reward_models_project", table_name="reward_models")
    op.drop_table("reward_models")

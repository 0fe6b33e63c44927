"""The toy analyzer's results, and a log of every store (to count them).

Revision ID: toy_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision = "toy_0001"
down_revision = None
branch_labels = ("toy",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table(
        "toy_results",
        sa.Column(
            "content_id",
            sa.Text,
            sa.ForeignKey("contents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("embedding", Vector(3), nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("worker_pid", sa.Integer, nullable=False),
    )
    op.create_table(
        "toy_stores",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("content_id", sa.Text, nullable=False),
        sa.Column("worker_pid", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("toy_stores")
    op.drop_table("toy_results")

"""The known-vector analyzer's results.

Revision ID: vectors_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision = "vectors_0001"
down_revision = None
branch_labels = ("vectors",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table(
        "vector_results",
        sa.Column(
            "content_id",
            sa.Text,
            sa.ForeignKey("contents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("embedding", Vector(8), nullable=False),
        sa.Column("tag", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vector_results")

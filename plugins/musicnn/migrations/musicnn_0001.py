"""MusiCNN results: every tag's probability, the top tags, and the embedding (HNSW, cosine).

Revision ID: musicnn_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB

revision = "musicnn_0001"
down_revision = None
branch_labels = ("musicnn",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table(
        "musicnn_results",
        sa.Column(
            "content_id",
            sa.Text,
            sa.ForeignKey("contents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("tags", JSONB, nullable=False),  # {tag: mean probability} for every tag
        sa.Column("top_tags", JSONB, nullable=False),  # [[tag, probability], ...] best first
        sa.Column("embedding", Vector(200), nullable=False),
        sa.Column("patches", sa.Integer, nullable=False),
        sa.Column(
            "analyzed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute(
        "CREATE INDEX musicnn_results_embedding ON musicnn_results"
        " USING hnsw (embedding vector_cosine_ops)"
    )


def downgrade() -> None:
    op.drop_table("musicnn_results")

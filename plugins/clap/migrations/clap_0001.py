"""CLAP results: one 512-d text-audio embedding per content (HNSW, cosine).

Revision ID: clap_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector

revision = "clap_0001"
down_revision = None
branch_labels = ("clap",)
depends_on = "0001_library"

DIMENSION = 512  # every LAION CLAP projects to 512


def upgrade() -> None:
    op.create_table(
        "clap_results",
        sa.Column(
            "content_id",
            sa.Text,
            sa.ForeignKey("contents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("embedding", Vector(DIMENSION), nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column(
            "analyzed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute(
        "CREATE INDEX clap_results_embedding ON clap_results"
        " USING hnsw (embedding vector_cosine_ops)"
    )


def downgrade() -> None:
    op.drop_table("clap_results")

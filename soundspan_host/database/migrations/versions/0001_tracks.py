"""The core catalogue of tracks.

Revision ID: 0001_tracks
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_tracks"
down_revision = None
branch_labels = ("core",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracks",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("artist", sa.Text),
        sa.Column("album", sa.Text),
        sa.Column("duration", sa.Float),
        sa.Column(
            "added_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("tracks_path", "tracks", ["path"], unique=True)
    op.create_index("tracks_fingerprint", "tracks", ["fingerprint"])


def downgrade() -> None:
    op.drop_table("tracks")

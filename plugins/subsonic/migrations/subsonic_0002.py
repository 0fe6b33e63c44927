"""Playlists sent to server users (so the next send updates the same one) and fresh
playlists defined through the API.

Revision ID: subsonic_0002
Revises: subsonic_0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "subsonic_0002"
down_revision = "subsonic_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subsonic_playlists",
        sa.Column("name", sa.Text, primary_key=True),  # ours
        sa.Column("server_user", sa.Text, primary_key=True),
        sa.Column("playlist_id", sa.Text, nullable=False),  # the server's
        sa.Column("songs", sa.Integer, nullable=False),
        sa.Column("unmatched", sa.Integer, nullable=False),  # tracks left out: no song for them
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "subsonic_fresh_playlists",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("server_user", sa.Text, primary_key=True),
        sa.Column("definition", JSONB, nullable=False),  # a FreshPlaylist, as the API took it
        sa.Column(
            "defined_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("subsonic_fresh_playlists")
    op.drop_table("subsonic_playlists")

"""Which Jellyfin audio item is which of our tracks, with the item's artist (the server's ids).

Revision ID: jellyfin_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "jellyfin_0001"
down_revision = None
branch_labels = ("jellyfin",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table(
        "jellyfin_matches",
        sa.Column("item_id", sa.Text, primary_key=True),  # Jellyfin's, a GUID
        sa.Column(
            "track_id", sa.Text, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("artist_id", sa.Text),  # its first ArtistItems entry, a MusicArtist's id
        sa.Column("artist_name", sa.Text),
        sa.Column("path", sa.Text, nullable=False),  # as Jellyfin reports it
        sa.Column(
            "matched_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("jellyfin_matches_track", "jellyfin_matches", ["track_id"])
    op.create_index("jellyfin_matches_artist", "jellyfin_matches", ["artist_id"])


def downgrade() -> None:
    op.drop_table("jellyfin_matches")

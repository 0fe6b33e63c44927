"""Which LMS track is which of ours, with the track's artist (the server's ids).

Revision ID: lyrion_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "lyrion_0001"
down_revision = None
branch_labels = ("lyrion",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table(
        "lyrion_matches",
        sa.Column("item_id", sa.Text, primary_key=True),  # LMS's track id, a number, as text
        sa.Column(
            "track_id", sa.Text, sa.ForeignKey("tracks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("artist_id", sa.Text),  # its first artist's LMS id
        sa.Column("artist_name", sa.Text),
        sa.Column("path", sa.Text, nullable=False),  # the path of its file:// URL, decoded
        sa.Column(
            "matched_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("lyrion_matches_track", "lyrion_matches", ["track_id"])
    op.create_index("lyrion_matches_artist", "lyrion_matches", ["artist_id"])


def downgrade() -> None:
    op.drop_table("lyrion_matches")

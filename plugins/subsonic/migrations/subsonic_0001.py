"""Which server song each of our tracks is, or why none is (the music server's ids).

Revision ID: subsonic_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "subsonic_0001"
down_revision = None
branch_labels = ("subsonic",)
depends_on = "0001_library"


def upgrade() -> None:
    op.create_table(
        "subsonic_matches",
        sa.Column(
            "track_id", sa.Text, sa.ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("song_id", sa.Text),  # NULL: unmatched, and `reason` says why
        sa.Column("method", sa.Text),  # path | musicbrainz | tags
        sa.Column("reason", sa.Text),
        # what the match was made from: a change to either asks for a new look
        sa.Column("track_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("song_signature", sa.Text),
        sa.Column(
            "checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("subsonic_matches_song", "subsonic_matches", ["song_id"])


def downgrade() -> None:
    op.drop_table("subsonic_matches")

"""Richer tags on tracks (for matching with a music server, and for the API): MusicBrainz
recording id, ISRC, album artist, track and disc number, year, genre.

`tags_version` says which tag set a row was read with; rows from before this revision have
none, so the next reconcile reads their tags once (content unchanged: nothing is re-analyzed).

Revision ID: 0002_track_tags
Revises: 0001_library
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_track_tags"
down_revision = "0001_library"
branch_labels = None
depends_on = None

COLUMNS = (
    sa.Column("album_artist", sa.Text),
    sa.Column("track_number", sa.Integer),
    sa.Column("disc_number", sa.Integer),
    sa.Column("year", sa.Integer),
    sa.Column("genre", sa.Text),
    sa.Column("isrc", sa.Text),
    sa.Column("musicbrainz_recording_id", sa.Text),
    sa.Column("tags_version", sa.Integer),
)


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("tracks", column)
    op.create_index("tracks_musicbrainz_recording", "tracks", ["musicbrainz_recording_id"])


def downgrade() -> None:
    op.drop_index("tracks_musicbrainz_recording", "tracks")
    for column in reversed(COLUMNS):
        op.drop_column("tracks", column.name)

"""Views that plugins read in place of the host's tables, so the tables stay the host's to
change: library_tracks, recorded_tracks and analysis_states (soundspan_hooks/library_views.py
says what each holds).

Plain views, which PostgreSQL inlines into each query: plugins' queries use the tables'
indexes exactly as before. The workers' role reads them through its grant on every table of
the schema. PostgreSQL refuses to drop or retype a column a view shows: a later revision that
does drops the view first and creates it again; one that adds a tag column adds it to the
track views with CREATE OR REPLACE VIEW (which appends columns).

The column lists are written out, not taken from the hook contract: a revision must go on
creating what it created when later revisions add columns.

Revision ID: 0005_library_views
Revises: 0004_job_reasons
"""

from alembic import op

revision = "0005_library_views"
down_revision = "0004_job_reasons"
branch_labels = None
depends_on = None

TRACK_COLUMNS = (
    "id, content_id, path, raw_path, title, artist, album, duration, album_artist, track_number,"
    " disc_number, year, genre, isrc, musicbrainz_recording_id, added_at, updated_at"
)
VIEWS = {
    "library_tracks": f"SELECT {TRACK_COLUMNS} FROM tracks WHERE missing_since IS NULL",
    "recorded_tracks": f"SELECT {TRACK_COLUMNS}, missing_since FROM tracks",
    "analysis_states": (
        "SELECT content_id, analyzer, version, state, attempts, error, queued_because,"
        " created_at, finished_at FROM analysis_jobs"
    ),
}


def upgrade() -> None:
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")

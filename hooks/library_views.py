"""What a plugin may read of the host's database: these views, never the tables behind them.

The host's tables (tracks, contents, analysis_jobs, analysis_workers) are its own to change;
the views are the contract, kept when the tables change. PostgreSQL inlines a view into the
query that reads it, so the tables' indexes serve plugins' queries as before.

    library_tracks    the tracks present in the music dir now, one row per file:
                      id, content_id, path, raw_path, each of TRACK_TAGS, added_at, updated_at
    recorded_tracks   every track on record, those gone missing too: library_tracks' columns
                      and missing_since (NULL while present)
    analysis_states   each analyzer's job per content, whether or not a track holds it now:
                      content_id, analyzer, version, state, attempts, error, queued_because,
                      created_at, finished_at

`path` is readable text, `raw_path` the file name's exact bytes (for opening or writing it).
Duplicated files share a `content_id`, which keys every analyzer's results (`<name>_results`).
`state` is pending, running, done or failed. A plugin's own tables may keep a foreign key to
`tracks.id` or `contents.id` (a view cannot hold one); its queries name the views.
"""

from __future__ import annotations

from soundspan_hooks.types import TRACK_TAGS

LIBRARY_TRACKS = "library_tracks"
RECORDED_TRACKS = "recorded_tracks"
ANALYSIS_STATES = "analysis_states"

LIBRARY_TRACK_COLUMNS = (
    "id", "content_id", "path", "raw_path", *TRACK_TAGS, "added_at", "updated_at",
)  # fmt: skip
RECORDED_TRACK_COLUMNS = (*LIBRARY_TRACK_COLUMNS, "missing_since")
ANALYSIS_STATE_COLUMNS = (
    "content_id", "analyzer", "version", "state", "attempts", "error", "queued_because",
    "created_at", "finished_at",
)  # fmt: skip

VIEW_COLUMNS = {
    LIBRARY_TRACKS: LIBRARY_TRACK_COLUMNS,
    RECORDED_TRACKS: RECORDED_TRACK_COLUMNS,
    ANALYSIS_STATES: ANALYSIS_STATE_COLUMNS,
}
"""Each view's columns, by name (a column a later migration adds goes last in the database):
a test holds the database's views to these."""

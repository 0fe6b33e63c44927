"""The library views are the contract plugins read (hooks/library_views.py): the database has
them with the columns the contract names, a downgrade removes them, and a query through them
is planned exactly as the same query on the tables, indexes included."""

import re

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_hooks.library_views import VIEW_COLUMNS
from soundspan_host.database import async_url, prepare_schema
from soundspan_host.database.migrations import HERE
from tests.harness.library import rows

BEFORE_VIEWS = "0004_job_reasons"


@pytest.fixture
async def engine(database_url):
    engine = create_async_engine(async_url(database_url))
    await prepare_schema(engine)
    yield engine
    await engine.dispose()


async def view_columns(engine) -> dict[str, set[str]]:
    found = await rows(
        engine,
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.views v USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public'",
    )
    columns: dict[str, set[str]] = {}
    for row in found:
        columns.setdefault(row.table_name, set()).add(row.column_name)
    return columns


def downgrade_core(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("version_locations", str(HERE / "versions"))
    config.set_main_option("path_separator", "space")
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def test_the_views_have_the_columns_the_contract_names(engine):
    """A tag added to TrackFacts without a migration adding it to the views fails here."""
    assert await view_columns(engine) == {
        view: set(columns) for view, columns in VIEW_COLUMNS.items()
    }


async def test_the_views_migration_is_reversible(engine):
    async with engine.begin() as connection:
        await connection.run_sync(downgrade_core, BEFORE_VIEWS)
    assert await view_columns(engine) == {}
    assert await rows(engine, "SELECT id FROM tracks") == []  # the tables stay
    await prepare_schema(engine)
    assert set(await view_columns(engine)) == set(VIEW_COLUMNS)


# hot queries of the plugins, written once for the views and once for the tables
HOT_QUERIES = (
    # vibe_api's nearest neighbours: the HNSW index, each candidate checked by tracks_content
    "SELECT e.content_id FROM probe_results e WHERE EXISTS (SELECT 1 FROM {tracks} t"
    " WHERE t.content_id = e.content_id{present}) ORDER BY e.embedding <=> '[1,0,0]' LIMIT 10",
    # vibe_api's representative tracks
    "SELECT DISTINCT ON (t.content_id) t.id, t.path FROM {tracks} t"
    " WHERE t.content_id = ANY('{{c1,c2}}'){present} ORDER BY t.content_id, t.path",
    # vibe_api's playlist tracks, and subsonic's tracks for songs
    "SELECT t.id, t.raw_path FROM {tracks} t WHERE t.id = ANY('{{t1,t2}}'){present}",
    # vibe_api's track by MusicBrainz id (missing tracks too)
    "SELECT t.id FROM {all_tracks} t WHERE t.musicbrainz_recording_id = 'mb'"
    " ORDER BY t.missing_since NULLS FIRST, t.path LIMIT 1",
    # instant_mix's analyzed tracks of an artist
    "SELECT t.id FROM {tracks} t WHERE lower(t.artist) = 'a'{present} AND EXISTS"
    " (SELECT 1 FROM {jobs} j WHERE j.content_id = t.content_id AND j.state = 'done')"
    " ORDER BY t.path LIMIT 50",
)
THROUGH_VIEWS = {
    "tracks": "library_tracks",
    "present": "",
    "all_tracks": "recorded_tracks",
    "jobs": "analysis_states",
}
ON_TABLES = {
    "tracks": "tracks",
    "present": " AND t.missing_since IS NULL",
    "all_tracks": "tracks",
    "jobs": "analysis_jobs",
}


async def plan(engine, query: str) -> str:
    """The query's plan, its tables' aliases and columns' qualifiers left out (a view's
    inlined table has no alias, so PostgreSQL names it otherwise)."""
    async with engine.begin() as connection:
        # the indexes whenever they can serve: a small test table would otherwise be scanned
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
        found = await connection.execute(text(f"EXPLAIN (COSTS OFF) {query}"))
        lines = (re.sub(r"( on \w+) \w+$", r"\1", row[0]) for row in found)
        return "\n".join(re.sub(r"\b[a-z_]\w*\.(?=[a-z_])", "", line) for line in lines)


async def test_queries_through_the_views_are_planned_as_on_the_tables(engine):
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE probe_results (content_id text PRIMARY KEY REFERENCES contents(id),"
                " embedding vector(3) NOT NULL)"
            )
        )
        await connection.execute(
            text(
                "CREATE INDEX probe_hnsw ON probe_results USING hnsw (embedding vector_cosine_ops)"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO contents (id, size) SELECT 'c' || n, 1 FROM generate_series(1, 500) n"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO tracks (id, raw_path, path, content_id, size, mtime, artist,"
                " musicbrainz_recording_id, missing_since) SELECT 't' || n,"
                " convert_to('f' || n, 'UTF8'), 'f' || n, 'c' || n, 1, 0, 'a', 'mb' || n % 50,"
                " CASE WHEN n % 10 = 0 THEN now() END FROM generate_series(1, 500) n"
            )
        )
        await connection.execute(
            text(
                "INSERT INTO probe_results SELECT 'c' || n, ARRAY[n % 7, n % 5, 1]::vector"
                " FROM generate_series(1, 500) n"
            )
        )
        await connection.execute(text("ANALYZE"))
    for query in HOT_QUERIES:
        through_views = await plan(engine, query.format(**THROUGH_VIEWS))
        assert through_views == await plan(engine, query.format(**ON_TABLES)), through_views
    nearest = await plan(engine, HOT_QUERIES[0].format(**THROUGH_VIEWS))
    # the present-track check reads the partial index of present tracks (migration 0006)
    assert "probe_hnsw" in nearest and "tracks_present_content" in nearest, nearest

"""Switching plugins off and on in the settings, across restarts of a real host process: every
start serves, every row stays, and nothing is analyzed again.

Each plugin's migrations are a branch of their own in the database; a host started without a
plugin does not know that branch's scripts (alembic refused it: "Can't locate revision
identified by 'clap_0001'")."""

import os

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from soundspan_host.database import async_url, prepare_schema
from soundspan_plugins.clap import plugin as clap
from soundspan_plugins.subsonic import plugin as subsonic
from tests.harness.library import eventually, jobs, rows, scalar, stores_per_content, write_wav
from tests.harness.processes import start_host_process, wait_healthy

CLAP_MIGRATIONS = clap.soundspan_migrations()
SUBSONIC_MIGRATIONS = subsonic.soundspan_migrations()


async def version_rows(engine) -> set[str]:
    stored = await rows(engine, "SELECT version_num FROM alembic_version")
    return {row.version_num for row in stored}


async def test_a_plugins_branch_waits_while_it_is_off(database_url):
    """Off, on, off, on: the schema of a plugin switched off keeps its revision and its rows."""
    engine = create_async_engine(async_url(database_url))
    try:
        await prepare_schema(engine, [CLAP_MIGRATIONS, SUBSONIC_MIGRATIONS])
        everything = await version_rows(engine)
        assert {revision.split("_")[0] for revision in everything} >= {"clap", "subsonic"}
        async with engine.begin() as connection:
            await connection.exec_driver_sql(
                "INSERT INTO subsonic_playlists (name, server_user, playlist_id, songs, unmatched,"
                " sent_at) VALUES ('kept', 'u', '1', 0, 0, now())"
            )

        for enabled in ([], [CLAP_MIGRATIONS], [SUBSONIC_MIGRATIONS], []):
            await prepare_schema(engine, enabled)
            assert await version_rows(engine) == everything
        await prepare_schema(engine, [CLAP_MIGRATIONS, SUBSONIC_MIGRATIONS])

        assert await version_rows(engine) == everything
        assert await scalar(engine, "SELECT name FROM subsonic_playlists") == "kept"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("first", [True, False], ids=["on-off-on", "off-on-off-on"])
async def test_switching_plugins_off_and_on_across_restarts(
    first, tmp_path, music_dir, database_url, toy_analyzer
):
    """CLAP (the repro: on by default) and the toy analyzer, switched together; a track added
    while the analyzer was off is analyzed when it is back, and the first one is not again."""
    write_wav(music_dir / "first.wav", 440)
    engine = create_async_engine(async_url(database_url))
    switched = [True, False, True] if first else [False, True, False, True]
    try:
        for run, enabled in enumerate(switched):
            if run == 1:
                write_wav(music_dir / "added while switched.wav", 660)
            switch = str(enabled).lower()
            process, port = start_host_process(
                tmp_path,
                music_dir,
                SOUNDSPAN_DATABASE_URL=database_url,
                PYTHONPATH=os.pathsep.join([str(toy_analyzer), os.environ.get("PYTHONPATH", "")]),
                SOUNDSPAN_CLAP__ENABLED=switch,
                SOUNDSPAN_TOY__ENABLED=switch,
                SOUNDSPAN_TOY__POLL_INTERVAL="0.2",
            )
            try:
                wait_healthy(process, port)
                if enabled:
                    tracks = 1 if run == 0 else 2
                    await eventually(
                        lambda tracks=tracks: analyzed(engine, tracks),
                        what="the toy analyzer to analyze every track",
                    )
            finally:
                process.terminate()
                output, _ = process.communicate(timeout=60)
            assert process.returncode == 0, output

        assert set((await jobs(engine)).values()) == {("done", None)}
        assert list((await stores_per_content(engine)).values()) == [1, 1]
        attempts = await rows(engine, "SELECT attempts FROM analysis_jobs WHERE analyzer = 'toy'")
        assert [row.attempts for row in attempts] == [1, 1]
    finally:
        await engine.dispose()


async def analyzed(engine, count: int) -> bool:
    done = [state for state in (await jobs(engine)).values() if state == ("done", None)]
    return len(done) == count

"""The library map is drawn in a process of its own (plugins/vibe_api/map_process.py), and a
map process that dies leaves no request hanging and the last good map served.

To catch the process at work, the test locks the embedding table: the host's signature query
goes through (the lock is taken again right after it), then the map process's read waits on
the lock, and pg_stat_activity names that process by its pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator

import asyncpg
import psutil
import pytest

from soundspan_hooks import HOST
from soundspan_plugins.shared.pool import ModelPool, WorkerCrashed
from soundspan_plugins.vibe_api.api import MAPS
from soundspan_plugins.vibe_api.exclusions import NOTHING_EXCLUDED
from soundspan_plugins.vibe_api.map_process import (
    APPLICATION_NAME,
    Drawing,
    DrawingLost,
    contents,
    draw,
)
from tests.harness.library import eventually, settled
from tests.harness.vector_library import (
    ARC,
    OTHERS,
    analyzed_library,
    axis,
    unit,
    write_vector_wav,
)

TRACKS = ARC + len(OTHERS)
TABLE = "vector_results"  # the vectors test analyzer's embedding table


async def waiting_on_lock(connection: asyncpg.Connection, like: str) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT application_name, query FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND query LIKE $1",
        like,
    )


async def ended(process: psutil.Process) -> bool:
    return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


@contextlib.asynccontextmanager
async def map_process_caught(database_url: str) -> AsyncIterator[asyncio.Task[int]]:
    """The embedding table locked while the context lasts, and a task that ends with the pid of
    the map process once the host has read the map's signature and that process's read waits
    on the lock. Start the computation (a request, a refresh) inside the context."""
    locker = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)

    async def signature_waits() -> bool:
        return bool(await waiting_on_lock(watcher, "SELECT count(*)%"))

    async def map_process_reads() -> int | None:
        for row in await waiting_on_lock(watcher, "%vector_send%"):
            found = re.fullmatch(rf"{APPLICATION_NAME} \(pid (\d+)\)", row["application_name"])
            if found:
                return int(found.group(1))
        return None

    async def catch() -> int:
        await eventually(signature_waits, what="the host's signature query")
        # the signature goes through, and the lock is queued behind it before the map
        # process (spawned after it, a fraction of a second later) asks to read
        await locker.execute(f"COMMIT; BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        return await eventually(map_process_reads, what="the map process")

    try:
        await locker.execute(f"BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        caught = asyncio.create_task(catch())
        try:
            yield caught
        finally:
            caught.cancel()
    finally:
        await locker.close()  # the lock goes with it
        await watcher.close()


@pytest.fixture
async def library(fast_host, vector_analyzer, music_dir):
    # the refresher left to the tests, which call it themselves
    return await analyzed_library(fast_host, music_dir, "[vibe_api]\nmap_refresh_seconds = 3600\n")


async def test_the_map_is_drawn_in_a_process_of_its_own_that_ends_with_it(library, database_url):
    async with map_process_caught(database_url) as caught:
        asked = asyncio.create_task(library.get("/api/vibe/map"))
        drawer = psutil.Process(await caught)
        assert drawer.pid != os.getpid() and drawer.ppid() == os.getpid()
        # the host answers meanwhile
        health = await asyncio.wait_for(library.get("/healthz"), timeout=5)
        assert health.status == 200 and not asked.done()
    answer = await asyncio.wait_for(asked, timeout=60)
    assert answer.status == 200
    body = await answer.json()
    assert (body["analyzer"], body["method"], len(body["points"])) == ("vectors", "pca", TRACKS)
    assert {point["label"] for point in body["points"]} == {"north", "south"}
    await eventually(lambda: ended(drawer), what="the map process to end")


async def test_a_killed_map_process_fails_the_first_request_with_a_503_that_says_so(
    library, database_url
):
    async with map_process_caught(database_url) as caught:
        asked = asyncio.create_task(library.get("/api/vibe/map"))
        os.kill(await caught, signal.SIGKILL)
        answer = await asyncio.wait_for(asked, timeout=30)
    assert answer.status == 503
    message = (await answer.json())["error"]["message"]
    assert "library map of vectors could not be drawn" in message
    assert "killed by SIGKILL" in message
    again = await asyncio.wait_for(library.get("/api/vibe/map"), timeout=60)
    assert again.status == 200 and len((await again.json())["points"]) == TRACKS


async def test_a_refresh_whose_map_process_dies_keeps_the_last_map(
    library, database_url, music_dir
):
    first = await (await library.get("/api/vibe/map")).json()
    assert len(first["points"]) == TRACKS
    write_vector_wav(music_dir / "late.wav", unit(axis(0) + axis(3)))
    engine = library.app[HOST].engine
    await eventually(lambda: settled(engine, TRACKS + 1), what="the new track analyzed")
    maps = library.app[MAPS]
    async with map_process_caught(database_url) as caught:
        refreshing = asyncio.create_task(maps.refresh())
        pid = await caught
        served = await asyncio.wait_for(library.get("/api/vibe/map"), timeout=5)
        assert await served.json() == first  # the last map, while the new one is drawn
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(refreshing, timeout=30)  # a failed refresh is logged, not raised
    assert await (await library.get("/api/vibe/map")).json() == first
    await asyncio.wait_for(maps.refresh(), timeout=60)  # the next refresh tries again
    refreshed = await (await library.get("/api/vibe/map")).json()
    assert len(refreshed["points"]) == TRACKS + 1


def map_process_pid(drawing: Drawing) -> int:
    """A task for the map's process: its pid."""
    return os.getpid()


async def test_a_map_process_lost_between_steps_fails_the_next_rather_than_drawing_nothing(
    library,
):
    """Killed while the host fetches labels (the process is idle then), the pool starts a fresh
    process, which has drawn nothing: the next step says so instead of answering an empty map."""
    database_url = library.app[HOST].engine.url.render_as_string(hide_password=False)
    drawing = ModelPool("vibe map", 1, Drawing, doing="drawing the library map")
    try:
        assert await drawing.run(draw, database_url, TABLE, NOTHING_EXCLUDED, "pca") == TRACKS
        assert len(await drawing.run(contents, 0, 10)) == 10
        os.kill(await drawing.run(map_process_pid), signal.SIGKILL)
        # the pool may yet send the step to the dying process, whose loss it then reports
        with pytest.raises((DrawingLost, WorkerCrashed), match="replaced|stopped"):
            await drawing.run(contents, 10, 20)
    finally:
        await drawing.close()

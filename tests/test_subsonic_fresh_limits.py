"""Fresh playlists within bounds, whatever a request or a stored row says: a floor on the
refresh interval, a cap per user, a back-off that never overflows, a refresher that is
restarted (and shown) when it dies, and a stored definition that no longer validates skipped
and listed instead of stopping every start. Refused or failing before any server matters, so
the server is a port nothing listens on; the host and its database are real."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_hooks.coordinator import KeptRunning
from soundspan_plugins.subsonic.playlists_api import PLAYLISTS
from tests.harness.library import eventually
from tests.harness.subsonic_settings import hostile_settings

# a port nothing listens on: these playlists are refused or fail before any server matters
DEAD = "http://127.0.0.1:9"


@pytest.fixture
async def dead_host(fast_host):
    return await fast_host(hostile_settings(DEAD, "max_fresh_playlists_per_user = 2\n"))


def fresh(name: str, **fields) -> dict:
    return {"name": name, "user": "alice", "search": "rain", **fields}


async def test_a_fresh_playlist_refreshes_once_a_minute_at_most_and_a_user_has_few(dead_host):
    """`refresh_seconds: 0.001` made 1,346 server updates in 20 s; and there was no cap."""
    host = dead_host
    too_often = await host.post("/api/subsonic/playlists", json=fresh("a", refresh_seconds=1))
    assert too_often.status == 400
    assert "refresh_seconds" in (await too_often.json())["error"]["message"]
    for name in ("a", "b"):
        assert (await host.post("/api/subsonic/playlists", json=fresh(name))).status == 202
    assert (await host.post("/api/subsonic/playlists", json=fresh("a", limit=5))).status == 202
    third = await host.post("/api/subsonic/playlists", json=fresh("c"))
    assert third.status == 409
    assert "max_fresh_playlists_per_user" in (await third.json())["error"]["message"]


async def test_a_thousand_failures_in_a_row_do_not_stop_the_refresher(dead_host):
    """After 1,024 failures `2 ** failures` overflowed a float and the task died, silently."""
    host = dead_host
    await host.post("/api/subsonic/playlists", json=fresh("a"))
    coordinator = host.app[PLAYLISTS]
    status = coordinator.entries[("a", "alice")].status
    await eventually(lambda: _true(status.failures >= 1), what="a first failure")
    status.failures = 1_100

    for expected in (1_101, 1_102):  # the second needs the refresher alive after the first
        coordinator.refresh_soon()
        await eventually(lambda n=expected: _true(status.failures >= n), what=f"failure {expected}")
    assert status.next_attempt is not None
    background = (await (await host.get("/api/subsonic/status")).json())["background"]
    assert [task["crashes"] for task in background] == [0, 0]


async def _true(value: bool) -> bool:
    return value


async def test_a_background_task_that_dies_is_logged_shown_and_restarted(caplog):
    restarted = asyncio.Event()
    runs = []

    async def work() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OverflowError("int too large to convert to float")
        restarted.set()
        await asyncio.Event().wait()

    task = KeptRunning("test refresher", work)
    task.start()
    try:
        await asyncio.wait_for(restarted.wait(), 30)
    finally:
        await task.stop()
    assert task.shown() == {
        "name": "test refresher",
        "crashes": 1,
        "last_crash": "OverflowError: int too large to convert to float",
    }
    assert "the test refresher stopped on an error; restarted" in caplog.text


async def test_a_stored_fresh_playlist_that_no_longer_validates_never_stops_a_start(
    dead_host, fast_host, caplog
):
    """A row stored as {"refresh_seconds": null} made every start die on a ValidationError."""
    engine = dead_host.app[HOST].engine
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO subsonic_fresh_playlists (name, server_user, definition)"
                " VALUES ('rain', 'alice', CAST(:definition AS jsonb))"
            ),
            {"definition": json.dumps({**fresh("rain"), "refresh_seconds": None})},
        )
    await dead_host.close()

    host = await fast_host(hostile_settings(DEAD))
    listed = await (await host.get("/api/subsonic/playlists")).json()
    [unreadable] = listed["unreadable"]
    assert (unreadable["name"], unreadable["server_user"]) == ("rain", "alice")
    assert "refresh_seconds" in unreadable["error"]
    assert "fresh playlist 'rain' of 'alice' skipped" in caplog.text

    deleted = await host.delete("/api/subsonic/playlists/alice/rain")
    assert (await deleted.json())["fresh_removed"] is True
    assert (await (await host.get("/api/subsonic/playlists")).json())["unreadable"] == []

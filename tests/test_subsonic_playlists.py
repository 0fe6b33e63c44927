"""Our playlists on a real Subsonic server (supysonic, its own process): sent from the API,
updated in place, read back in order, deleted; and playlists kept fresh, through a server that
goes down and comes back.

The library is the vector analyzer's (a WAV's first eight samples are its embedding), so the
lists are known in advance; the server holds the same files, so every track matches by path,
except one local-only file.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_plugins.subsonic.playlists_api import PLAYLISTS
from tests.harness.library import eventually, scalar, settled
from tests.harness.subsonic_library import (
    SERVED,
    SOUTH,
    matched_host,
    on_server,
    serving_vector_library,
    user_clients,
)
from tests.harness.vector_library import arc, arc_vector, ids, write_vector_wav


@pytest.fixture
def server(tmp_path, music_dir):
    with serving_vector_library(tmp_path, music_dir) as running:
        yield running


@pytest.fixture
async def host(fast_host, server, vector_analyzer):
    return await matched_host(fast_host, server)


@pytest.fixture
async def as_user():
    """The server as its users see it, through a client of their own."""
    async with user_clients() as as_user:
        yield as_user


async def send(host, **body) -> aiohttp.ClientResponse:
    return await host.post("/api/playlists", json={"send_to": {"server_user": "alice"}, **body})


async def test_a_playlist_is_sent_updated_in_place_read_back_in_order_and_deleted(
    host, server, as_user, music_dir
):
    by_path = await ids(host)
    alice = as_user(server, "alice")
    path = {"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 6}

    first = await send(host, name="Drift", path=path)
    assert first.status == 201
    sent = (await first.json())["sent"]
    assert (sent["created"], sent["songs"], sent["unmatched"]) == (True, 6, 0)
    assert await on_server(alice, "Drift") == [[arc(s) for s in (0, 2, 4, 6, 8, 10)]]
    assert not (music_dir / "Playlists").exists()  # not an M3U as well

    order = [arc(10), arc(5), "local/only.wav", arc(0), arc(10)]
    again = await send(host, name="Drift", track_ids=[by_path[p] for p in order])
    resent = (await again.json())["sent"]
    assert resent["playlist_id"] == sent["playlist_id"] and resent["created"] is False
    assert (resent["songs"], resent["unmatched"]) == (3, 1)
    assert await on_server(alice, "Drift") == [[arc(10), arc(5), arc(0)]]  # once, in order
    assert await on_server(as_user(server, "bob"), "Drift") == []

    listed = (await (await host.get("/api/subsonic/playlists")).json())["playlists"]
    assert [(p["name"], p["server_user"], p["songs"]) for p in listed] == [("Drift", "alice", 3)]

    deleted = await host.delete("/api/subsonic/playlists/alice/Drift")
    assert (await deleted.json()) == {"fresh_removed": False, "deleted_on_server": True}
    assert await on_server(alice, "Drift") == []
    assert (await host.delete("/api/subsonic/playlists/alice/Drift")).status == 404


async def test_a_playlist_deleted_on_the_server_is_made_again(host, server, as_user):
    by_path = await ids(host)
    alice = as_user(server, "alice")
    body = {"name": "Ends", "track_ids": [by_path[arc(0)], by_path[arc(10)]]}
    first = (await (await send(host, **body)).json())["sent"]
    await alice.delete_playlist(first["playlist_id"])

    again = (await (await send(host, **body)).json())["sent"]
    assert again["created"] is True and again["playlist_id"] != first["playlist_id"]
    assert await on_server(alice, "Ends") == [[arc(0), arc(10)]]


@pytest.mark.parametrize("source", ["similar", "search", "mix"])
async def test_every_kind_of_list_reaches_the_server_as_the_api_builds_it(
    host, server, as_user, source
):
    by_path = await ids(host)
    recipes = {
        "similar": ("GET", f"/api/vibe/similar/{by_path[arc(0)]}", {"limit": 4}),
        "search": ("POST", "/api/vibe/search", {"text": "south", "limit": 10}),
        "mix": ("POST", "/api/vibe/mix", {"add": [by_path[arc(2)], by_path[arc(8)]], "limit": 5}),
    }
    method, route, recipe = recipes[source]
    built = await (
        await (host.get(route, params=recipe) if method == "GET" else host.post(route, json=recipe))
    ).json()
    expected = [result["track"]["path"] for result in built["results"]]
    if source == "similar":
        recipe = {"track_id": by_path[arc(0)], **recipe}

    answer = await send(host, name=f"From {source}", **{source: recipe})
    assert answer.status == 201
    [songs] = await on_server(as_user(server, "alice"), f"From {source}")
    # as built, less what the server does not hold (the search finds non-ASCII paths too)
    assert expected and songs == [path for path in expected if path in SERVED]


async def test_a_send_that_cannot_be_made_says_why(host, server, as_user):
    by_path = await ids(host)
    unknown = await host.post(
        "/api/playlists",
        json={"name": "x", "track_ids": [by_path[arc(1)]], "send_to": {"server_user": "carol"}},
    )
    assert unknown.status == 404
    assert "no server user 'carol'" in (await unknown.json())["error"]["message"]

    local = await send(host, name="x", track_ids=[by_path["local/only.wav"]])
    assert local.status == 409
    assert "none of the 1 track(s)" in (await local.json())["error"]["message"]

    server.stop()
    down = await send(host, name="x", track_ids=[by_path[arc(1)]])
    assert down.status == 502
    assert "cannot reach" in (await down.json())["error"]["message"]


FRESH = """
[[subsonic.playlists]]
name = "Down south"
user = "alice"
search = "south"
limit = 10
refresh_seconds = 3600
[[subsonic.playlists]]
name = "More like my starred"
user = "bob"
starred = true
limit = 3
"""


async def fresh_state(host, name: str, state: str = "ok", **expected) -> dict | None:
    listed = (await (await host.get("/api/subsonic/playlists")).json())["playlists"]
    for playlist in listed:
        wanted = {"name": name, **expected}
        if (
            playlist["fresh"]
            and playlist["fresh"]["state"] == state
            and all(playlist.get(key) == value for key, value in wanted.items())
        ):
            return playlist
    return None


@pytest.fixture
async def fresh_host(fast_host, server, vector_analyzer, as_user):
    bob = as_user(server, "bob")
    songs = {song["path"]: song["id"] async for song in bob.songs()}
    await bob.call("star", id=songs[arc(0)])
    return await matched_host(fast_host, server, FRESH)


async def test_fresh_playlists_from_the_settings_are_sent_and_follow_new_analyses(
    fresh_host, server, as_user, music_dir
):
    host, alice = fresh_host, as_user(server, "alice")
    await eventually(lambda: fresh_state(host, "Down south", songs=2), what="the first send")
    [songs] = await on_server(alice, "Down south")
    assert sorted(songs) == sorted(SOUTH)

    # its first sends may come before every track is analyzed and matched: it follows them
    starred = await eventually(
        lambda: fresh_state(host, "More like my starred", songs=3), what="starred"
    )
    assert starred["fresh"]["source"] == "settings"
    assert await on_server(as_user(server, "bob"), "More like my starred") == [
        [arc(1), arc(2), arc(3)]
    ]

    # a new south track on both sides: matched, analyzed, and in the playlist, in place
    write_vector_wav(server.library / "south/new.wav", -arc_vector(5))
    server.scan()
    write_vector_wav(music_dir / "south/new.wav", -arc_vector(5))
    await eventually(lambda: fresh_state(host, "Down south", songs=3), what="the new track")
    [songs] = await on_server(alice, "Down south")
    assert sorted(songs) == sorted([*SOUTH, "south/new.wav"])

    refused = await host.delete("/api/subsonic/playlists/alice/Down south")
    assert refused.status == 409 and "settings.toml" in (await refused.json())["error"]["message"]


async def test_a_fresh_playlist_defined_through_the_api_and_deleted(host, server, as_user):
    by_path = await ids(host)
    bob = as_user(server, "bob")
    definition = {"name": "Arc", "user": "bob", "similar": by_path[arc(0)], "limit": 3}
    answer = await host.post("/api/subsonic/playlists", json=definition)
    assert answer.status == 202

    found = await eventually(lambda: fresh_state(host, "Arc", songs=3), what="the first send")
    assert found["fresh"]["source"] == "api" and found["fresh"]["next_attempt"]
    assert await on_server(bob, "Arc") == [[arc(1), arc(2), arc(3)]]

    bad = await host.post("/api/subsonic/playlists", json={**definition, "search": "x"})
    assert bad.status == 400 and "exactly one of" in (await bad.json())["error"]["message"]
    nobody = await host.post("/api/subsonic/playlists", json={**definition, "user": "carol"})
    assert nobody.status == 404

    deleted = await host.delete("/api/subsonic/playlists/bob/Arc")
    assert await deleted.json() == {"fresh_removed": True, "deleted_on_server": True}
    assert await on_server(bob, "Arc") == []
    assert (await (await host.get("/api/subsonic/playlists")).json())["playlists"] == []


async def test_a_server_down_during_a_refresh_keeps_the_last_playlist_and_retries(
    host, server, as_user
):
    by_path = await ids(host)
    alice = as_user(server, "alice")
    definition = {"name": "Arc", "user": "alice", "similar": by_path[arc(0)], "limit": 2}
    await host.post("/api/subsonic/playlists", json=definition)
    before = await eventually(lambda: fresh_state(host, "Arc", songs=2), what="the first send")

    server.stop()
    await host.post("/api/subsonic/playlists", json={**definition, "limit": 4})  # now 4 songs
    failed = await eventually(lambda: fresh_state(host, "Arc", "failed"), what="a failure")
    assert "cannot reach" in failed["fresh"]["error"] and server.url in failed["fresh"]["error"]
    assert (failed["playlist_id"], failed["songs"]) == (before["playlist_id"], 2)  # last good

    server.restart()
    after = await eventually(lambda: fresh_state(host, "Arc", songs=4), what="the retry")
    assert after["playlist_id"] == before["playlist_id"] and after["fresh"]["error"] is None
    assert await on_server(alice, "Arc") == [[arc(1), arc(2), arc(3), arc(4)]]


async def test_a_fresh_playlist_deleted_during_its_refresh_stays_deleted_on_the_server(
    host, server, as_user
):
    """The refresh had built its list and was about to send when the delete came: the delete
    removed the server's playlist, then the send made it again, an orphan no one refreshes.
    The test holds the refresh there with a real table lock on what the send reads next."""
    by_path = await ids(host)
    bob = as_user(server, "bob")
    definition = {"name": "Arc", "user": "bob", "similar": by_path[arc(0)], "limit": 2}
    await host.post("/api/subsonic/playlists", json=definition)
    await eventually(lambda: fresh_state(host, "Arc", songs=2), what="the first send")
    entry = host.app[PLAYLISTS].entries[("Arc", "bob")]
    engine = host.app[HOST].engine

    async with engine.connect() as locker, locker.begin():
        await locker.execute(text("LOCK TABLE subsonic_matches IN ACCESS EXCLUSIVE MODE"))
        await host.post("/api/subsonic/playlists/refresh")

        async def refresh_waits_on_the_lock() -> bool:
            waiting = await scalar(
                engine,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%same.content_id%'",  # songs_for, the send's first read
            )
            return bool(waiting) and entry.status.refreshing

        await eventually(refresh_waits_on_the_lock, what="the refresh to reach its send")
        deleted = await host.delete("/api/subsonic/playlists/bob/Arc")
        assert await deleted.json() == {"fresh_removed": True, "deleted_on_server": True}

    async def refresh_ended() -> bool:
        return not entry.status.refreshing

    await eventually(refresh_ended, what="the refresh to end")
    assert await on_server(bob, "Arc") == []
    assert (await (await host.get("/api/subsonic/playlists")).json())["playlists"] == []


async def test_a_search_whose_words_match_no_tag_says_so_and_warns_once(host, caplog):
    """It failed for ever with "found no tracks; are they analyzed?" and a WARNING per retry,
    while POST /api/vibe/search knew that no tag matched."""
    caplog.set_level(logging.INFO)
    definition = {"name": "Nothing", "user": "alice", "search": "zzz qqq"}
    assert (await host.post("/api/subsonic/playlists", json=definition)).status == 202
    failed = await eventually(lambda: fresh_state(host, "Nothing", "failed"), what="a failure")
    assert "no tag matches the words of 'zzz qqq'" in failed["fresh"]["error"]

    status = host.app[PLAYLISTS].entries[("Nothing", "alice")].status
    for failures in (2, 3):
        await host.post("/api/subsonic/playlists/refresh")
        await eventually(lambda n=failures: at_least(status.failures, n), what="a retry")
    warnings = [
        record
        for record in caplog.records
        if record.levelno >= logging.WARNING and "'Nothing'" in record.getMessage()
    ]
    assert len(warnings) == 1


async def at_least(value: int, wanted: int) -> bool:
    return value >= wanted


async def test_every_playlist_name_follows_one_rule_in_words(host):
    """A one-off send refused `/` with a raw regex message; a fresh playlist accepted it."""
    by_path = await ids(host)
    one_off = await send(host, name="AC/DC mix", track_ids=[by_path[arc(1)]])
    fresh = await host.post(
        "/api/subsonic/playlists", json={"name": "AC/DC mix", "user": "alice", "search": "x"}
    )
    rule = "use 1 to 60 characters, without slashes, backslashes or control characters"
    for answer in (one_off, fresh):
        assert answer.status == 400 and rule in (await answer.json())["error"]["message"]


async def test_the_similar_recipe_takes_the_caps_search_takes(host, server, as_user):
    by_path = await ids(host)
    caps = {"limit": 4, "max_per_artist": 1, "max_per_album": 1}
    built = await (await host.get(f"/api/vibe/similar/{by_path[arc(0)]}", params=caps)).json()

    answer = await send(host, name="Capped", similar={"track_id": by_path[arc(0)], **caps})
    assert answer.status == 201
    assert await on_server(as_user(server, "alice"), "Capped") == [
        [result["track"]["path"] for result in built["results"]]
    ]


async def test_sending_with_no_music_server_plugin_is_a_4xx_that_says_what_to_enable(
    fast_host, vector_analyzer, music_dir
):
    """It was a 503, which a client retries; the plugin is off, not away."""
    write_vector_wav(music_dir / arc(0), arc_vector(0))
    host = await fast_host()
    await eventually(lambda: settled(host.app[HOST].engine, 1), what="the analysis")
    answer = await send(host, name="Nowhere", track_ids=list((await ids(host)).values()))
    assert answer.status == 409
    assert "enable [subsonic]" in (await answer.json())["error"]["message"]

"""Jellyfin's ids: a real host on a real music folder and database matches our tracks to a
Jellyfin server's audio items by path, and the instant-mix API answers Jellyfin's AudioMuse-AI
plugin with Jellyfin item ids.

Fake only what no real server here can do, from recorded answers: no Jellyfin can run on this
machine, so a small aiohttp server answers `/Items` and `/System/Info` in the shape of
Jellyfin's API (BaseItemDto in a QueryResult, paged by StartIndex and Limit; 401 with an empty
body for a key it does not know), written by hand from its documentation, not captured from
a running Jellyfin. Everything else is real: the audio files, the analyses (the vectors test
analyzer: a WAV's first eight samples are its embedding), the host, its database and HTTP.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from soundspan_hooks import HOST
from soundspan_host.plugins import load_plugins
from soundspan_host.settings import read_settings
from soundspan_plugins.jellyfin import client as jellyfin_client
from soundspan_plugins.jellyfin.item_ids import is_ours
from soundspan_plugins.jellyfin.matching import (
    JellyfinItem,
    PathMapping,
    learnt_mapping,
    match_items,
)
from tests.harness.library import eventually, rows, settled
from tests.harness.vector_library import axis, unit, write_vector_wav

API_KEY = "0123456789abcdef0123456789abcdef"
ROOT = "/media/music"  # where Jellyfin's container sees the music
# our path -> (vector, artist); on the server too, under ROOT
LIBRARY = {
    "Aurora/1.wav": (unit(axis(0) + 0.05 * axis(2)), "Aurora"),
    "Aurora/2.wav": (unit(axis(0) + 0.05 * axis(3)), "Aurora"),
    "Borealis/1.wav": (unit(axis(0) + 0.3 * axis(6)), "Borealis"),
    "Cirrus/1.wav": (unit(axis(1) + 0.2 * axis(6)), "Cirrus"),
}
# ours only, the nearest to Aurora/2 of all: no answer may carry it
LOCAL_ONLY = {"local/only.wav": unit(axis(0) + 0.04 * axis(3))}


def item_id(name: str) -> str:
    """A Jellyfin id: a GUID, written without dashes."""
    return uuid.uuid5(uuid.NAMESPACE_URL, name).hex


def audio_item(path: str, artist: str) -> dict:
    """An audio item as GET /Items?Fields=Path lists it (BaseItemDto, trimmed)."""
    name = Path(path).stem
    return {
        "Name": name,
        "ServerId": "6e1c2f8d2c0a4c6f9b9a6f1b4c2d3e4f",
        "Id": item_id(path),
        "Path": path,
        "RunTimeTicks": 5500,
        "IsFolder": False,
        "Type": "Audio",
        "Artists": [artist],
        "ArtistItems": [{"Name": artist, "Id": item_id(f"artist:{artist}")}],
        "Album": "",
        "AlbumArtist": artist,
        "AlbumArtists": [{"Name": artist, "Id": item_id(f"artist:{artist}")}],
        "MediaType": "Audio",
        "LocationType": "FileSystem",
    }


ITEMS = [
    *(audio_item(f"{ROOT}/{path}", artist) for path, (_, artist) in LIBRARY.items()),
    audio_item("/media/podcasts/Talk/1.mp3", "Talker"),  # outside the mapping
    audio_item(f"{ROOT}/Gone/1.flac", "Nobody"),  # mapped, but no track of ours
]


class RecordedJellyfin:
    """Answers like Jellyfin; `down` makes it fail like a proxy before a dead one."""

    def __init__(self) -> None:
        self.down = False
        self.items = list(ITEMS)
        self.pages: list[tuple[int, int]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/Items", self.list_items)
        app.router.add_get("/System/Info", self.info)
        return app

    def refused(self, request: web.Request) -> web.Response | None:
        if self.down:
            return web.Response(status=502, text="<html>Bad Gateway</html>",
                                content_type="text/html")  # fmt: skip
        header = request.headers.get("Authorization", "")
        if not header.startswith("MediaBrowser ") or f'Token="{API_KEY}"' not in header:
            return web.Response(status=401)  # Jellyfin: no body
        return None

    async def list_items(self, request: web.Request) -> web.Response:
        if (refused := self.refused(request)) is not None:
            return refused
        query = request.query
        assert (query["IncludeItemTypes"], query["Recursive"]) == ("Audio", "true")
        assert "Path" in query["Fields"].split(",")
        start, limit = int(query.get("StartIndex", 0)), int(query.get("Limit", 100_000))
        self.pages.append((start, limit))
        page = self.items[start : start + limit]
        return web.json_response(
            {"Items": page, "TotalRecordCount": len(self.items), "StartIndex": start}
        )

    async def info(self, request: web.Request) -> web.Response:
        if (refused := self.refused(request)) is not None:
            return refused
        return web.json_response({"ServerName": "jellyfin", "Version": "10.11.0", "Id": "x"})


@pytest.fixture
async def jellyfin(aiohttp_server, monkeypatch):
    monkeypatch.setattr(jellyfin_client, "PAGE_SIZE", 4)  # ITEMS takes two pages
    recorded = RecordedJellyfin()
    server = await aiohttp_server(recorded.app())
    recorded.url = str(server.make_url("/")).rstrip("/")
    return recorded


def write_library(music_dir: Path) -> int:
    for path, (vector, _) in LIBRARY.items():
        write_vector_wav(music_dir / path, vector)
    for path, vector in LOCAL_ONLY.items():
        write_vector_wav(music_dir / path, vector)
    return len(LIBRARY) + len(LOCAL_ONLY)


def settings(jellyfin: RecordedJellyfin, key: str = API_KEY, extra: str = "") -> str:
    return (
        f'[jellyfin]\nenabled = true\nurl = "{jellyfin.url}"\napi_key = "{key}"\n'
        f'server_path_prefix = "{ROOT}/"\nchange_delay_seconds = 0.2\nretry_seconds = 0.2\n'
        "[instant_mix]\nenabled = true\n" + extra
    )


async def status_of(host) -> dict:
    answer = await host.get("/api/jellyfin/status")
    assert answer.status == 200
    return await answer.json()


@pytest.fixture
async def host(fast_host, jellyfin, music_dir, vector_analyzer):
    count = write_library(music_dir)
    client = await fast_host(settings(jellyfin))
    await eventually(lambda: settled(client.app[HOST].engine, count), what="the analyses")

    async def matched():
        status = await status_of(client)
        return status["matched"] == len(LIBRARY) and status["state"] == "ok"

    await eventually(matched, what="the matches")
    return client


async def test_items_whose_paths_map_onto_our_tracks_are_matched(host, jellyfin):
    status = await status_of(host)
    assert status["items_on_server"] == len(ITEMS)
    assert status["path_mapping"] == {
        "server_path_prefix": f"{ROOT}/", "library_path_prefix": "", "learnt": False,
    }  # fmt: skip
    assert (status["outside_mapping"], status["not_in_library"], status["without_path"]) == (
        1, 1, 0,
    )  # fmt: skip
    assert status["example_unmatched"] in ("/media/podcasts/Talk/1.mp3", f"{ROOT}/Gone/1.flac")
    assert jellyfin.pages[:2] == [(0, 4), (4, 4)]  # paged
    stored = await rows(
        host.app[HOST].engine,
        "SELECT m.item_id, t.path, m.artist_id FROM jellyfin_matches m"
        " JOIN library_tracks t ON t.id = m.track_id",
    )
    assert {(row.item_id, row.path, row.artist_id) for row in stored} == {
        (item_id(f"{ROOT}/{path}"), path, item_id(f"artist:{artist}"))
        for path, (_, artist) in LIBRARY.items()
    }


async def test_a_file_jellyfin_scans_later_is_matched_without_a_change_here(
    fast_host, jellyfin, music_dir, vector_analyzer
):
    """Our track has no item yet (Jellyfin has not scanned it): the refresh looks again soon,
    then less and less often, so the item is matched though nothing changes here."""
    later = item_id(f"{ROOT}/Cirrus/1.wav")
    jellyfin.items = [item for item in ITEMS if item["Id"] != later]
    count = write_library(music_dir)
    host = await fast_host(settings(jellyfin))
    await eventually(lambda: settled(host.app[HOST].engine, count), what="the analyses")
    await eventually(lambda: _matched(host, len(LIBRARY) - 1), what="the first matches")
    jellyfin.items = list(ITEMS)  # Jellyfin's scan found it
    await eventually(lambda: _matched(host, len(LIBRARY)), what="the file scanned later")


async def _matched(host, count: int) -> bool:
    return (await status_of(host))["matched"] == count


async def test_instant_mix_answers_jellyfins_plugin_with_item_ids(host):
    """NeptuneHub/audiomuse-ai-plugin asks by Jellyfin item id and reads `item_id` back:
    GET /api/similar_tracks?n=<k>&item_id=<id>. With jellyfin the only music server plugin,
    no `server=` is needed; `server=jellyfin` names it."""
    by_item = {item_id(f"{ROOT}/{path}"): path for path in LIBRARY}
    seed = item_id(f"{ROOT}/Aurora/2.wav")
    for server in ("&server=jellyfin", ""):
        answer = await host.get(
            f"/api/similar_tracks?item_id={seed}&n=5&eliminate_duplicates=false{server}"
        )
        assert answer.status == 200, await answer.text()
        songs = await answer.json()
        # nearest first; the local-only track (the nearest of all) is not on the server
        assert [by_item[song["item_id"]] for song in songs] == [
            "Aurora/1.wav", "Borealis/1.wav", "Cirrus/1.wav",
        ]  # fmt: skip
    unknown = await host.get(f"/api/similar_tracks?item_id={item_id('nope')}&server=jellyfin")
    assert unknown.status == 404
    hook = host.app[HOST].hook
    artist = item_id("artist:Borealis")
    name = hook.soundspan_server_artist_name(host=host.app[HOST], server="jellyfin",
                                             artist_id=artist)  # fmt: skip
    assert await name == "Borealis"
    ids = hook.soundspan_server_artist_ids(
        host=host.app[HOST], server="jellyfin", song_ids=[item_id(f"{ROOT}/Borealis/1.wav")]
    )
    assert await ids == {item_id(f"{ROOT}/Borealis/1.wav"): artist}


async def test_jellyfin_away_keeps_the_last_matches_with_one_warning(host, jellyfin, caplog):
    jellyfin.down = True
    with caplog.at_level(logging.INFO, logger="soundspan_plugins.jellyfin"):
        await host.post("/api/jellyfin/refresh")

        async def failed_twice():
            status = await status_of(host)
            return status if status["state"] == "failed" and len(attempts(caplog)) >= 2 else None

        status = await eventually(failed_twice, what="two failed refreshes")
    assert "HTTP 502" in status["error"] and status["matched"] == len(LIBRARY)
    warnings = [r for r in attempts(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in attempts(caplog)]
    assert "the last good matches stay" in warnings[0].getMessage()
    seed = item_id(f"{ROOT}/Aurora/2.wav")
    answer = await host.get(f"/api/similar_tracks?item_id={seed}&n=5&server=jellyfin")
    assert answer.status == 200 and len(await answer.json()) == 3

    jellyfin.down = False
    await host.post("/api/jellyfin/refresh")
    await eventually(lambda: _state_is(host, "ok"), what="a refresh that works again")


def attempts(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "jellyfin: refresh failed" in r.getMessage()]


async def _state_is(host, state: str) -> bool:
    return (await status_of(host))["state"] == state


async def test_a_bad_api_key_says_so(fast_host, jellyfin, music_dir, caplog):
    write_library(music_dir)
    with caplog.at_level(logging.WARNING, logger="soundspan_plugins.jellyfin"):
        host = await fast_host(settings(jellyfin, key="not-the-key"))

        async def failed():
            status = await status_of(host)
            return status if status["state"] == "failed" else None

        status = await eventually(failed, what="a refused refresh")
    assert "refuses the API key (HTTP 401)" in status["error"]
    assert "[jellyfin] api_key" in status["error"] and "not-the-key" not in status["error"]
    [warning] = attempts(caplog)
    assert "refuses the API key" in warning.getMessage()
    assert "not-the-key" not in caplog.text


def test_server_none_is_jellyfins_only_where_no_other_music_server_plugin_is_on(tmp_path):
    """The players' plugins send no `server=`: with subsonic on too, that stays subsonic's
    (as before jellyfin came), and Jellyfin's ids need `server=jellyfin`."""

    def hooks(text: str) -> SimpleNamespace:
        path = tmp_path / "settings.toml"
        path.write_text(text)
        return SimpleNamespace(hook=load_plugins(read_settings(path)).manager.hook)

    jellyfin = '[jellyfin]\nenabled = true\nurl = "http://jf:8096"\napi_key = "k"\n'
    subsonic = (
        '[subsonic]\nenabled = true\nurl = "http://nd:4533"\n'
        '[[subsonic.users]]\nname = "a"\npassword = "p"\n'
    )
    alone, both = hooks(jellyfin), hooks(jellyfin + subsonic)
    assert is_ours(alone, None) and is_ours(alone, "jellyfin")
    assert not is_ours(both, None) and is_ours(both, "jellyfin")
    assert not is_ours(alone, "subsonic")


def test_path_mapping_given_and_learnt():
    mapping = PathMapping("/media/music", "")
    assert mapping.ours("/media/music/A/1.flac") == "A/1.flac"
    assert mapping.ours("/media/musical/A/1.flac") is None  # a folder, not a string prefix
    assert PathMapping("D:\\Music\\", "Jazz").ours("D:\\Music\\A\\1.flac") == "Jazz/A/1.flac"
    ours = {"A/1.flac", "A/2.flac", "B/1.flac", "1.flac"}
    paths = ["/data/music/A/1.flac", "/data/music/A/2.flac", "/data/music/B/1.flac",
             "/elsewhere/1.flac"]  # fmt: skip
    assert learnt_mapping(paths, ours) == PathMapping("/data/music", "")
    items = [JellyfinItem(str(n), path, None, None) for n, path in enumerate(paths)]
    found = match_items(items, {path: f"t-{path}" for path in ours}, None)
    # the learnt folder holds: the stray "/elsewhere/1.flac" is not our top-level 1.flac
    assert [row["track_id"] for row in found.rows] == ["t-A/1.flac", "t-A/2.flac", "t-B/1.flac"]
    assert (found.learnt, found.outside_mapping, found.example_unmatched) == (
        True, 1, "/elsewhere/1.flac",
    )  # fmt: skip


async def test_its_routes_are_in_the_openapi_document(host):
    spec = await (await host.get("/api/openapi.json")).json()
    validate(spec)
    assert {"/api/jellyfin/status", "/api/jellyfin/refresh"} <= set(spec["paths"])
    served = {route.resource.canonical for route in host.app.router.routes()}
    assert {"/api/jellyfin/status", "/api/jellyfin/refresh"} <= served

"""Lyrion's ids: a real host on a real music folder and database matches our tracks to a Lyrion
Music Server's tracks by the path in their file:// URL, and the instant-mix API answers the
LMS AudioMuse-AI mixer with LMS track ids.

What the mixer sends and reads (CDrummond/lms-audiomuse-mixer): AudioMuseMixer/API.pm sends,
with `Authorization: Bearer <token>` and `Accept: application/json`,

    GET /api/similar_tracks?item_id=%s&n=%d&eliminate_duplicates=true&radius_similarity=true\
        &mood_similarity=true
    GET /api/find_path?start_song_id=%s&end_song_id=%s&max_steps=%d
    POST /api/alchemy {"items": [{"id": "<id>", "op": "ADD", "type": "song"}, ...], "n": <n>}

where an id is LMS's track id (`$track->id`), and its default single-seed API,
`POST /api/hyperbolic/similar`, falls back to similar_tracks on any error. AudioMuseMixer/
Plugin.pm reads an answer's list (a bare array, or its `results` or `path`), takes from each
song `item_id` (else `id`), keeps only digits (`/\\A\\d+\\z/`) and looks them up with
`Slim::Schema->find('Track', $id)`; an answer `{"error": ...}` is an error to it.

Fake only what no real server here can do: LMS is Perl and cannot run on this machine, so a
small aiohttp server answers `POST /jsonrpc.js` in the shape of LMS's JSON-RPC (a
`slim.request` whose `result` holds what the CLI returns: `titles` with `count` and
`titles_loop`, each title's `id` and `title` and the tags asked for, u: `url`, s:
`artist_id`, a: `artist`; `serverstatus`; 401 without the login), written by hand from LMS's
CLI documentation (LMS-Community/slimserver, HTML/EN/html/docs/cli-api.html) and its tag map
(Slim/Control/Queries.pm), as NeptuneHub/AudioMuse-AI's tasks/mediaserver/lyrion.py asks it;
not captured from a running LMS. Everything else is real: the audio files, the analyses (the
vectors test analyzer: a WAV's first eight samples are its embedding), the host, its database
and HTTP.
"""

from __future__ import annotations

import logging
import os
import re
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import BasicAuth, web

from soundspan_hooks import HOST
from soundspan_plugins.lyrion import client as lyrion_client
from soundspan_plugins.lyrion.doctor import server_check
from soundspan_plugins.lyrion.item_ids import is_ours
from soundspan_plugins.lyrion.matching import LyrionTitle, file_path
from soundspan_plugins.lyrion.settings import LyrionSettings
from tests.harness.library import eventually, rows, settled
from tests.harness.plugins import enabled_hooks
from tests.harness.vector_library import axis, unit, write_vector_wav

TOKEN = "a-token-of-sixteen-or-more-characters"
USER, PASSWORD = "lms", "s3cret-pass"
ROOT = "/mnt/Music Library"  # where LMS sees the music; our "Library" folder
# our path under Library/ -> (LMS track id, vector, artist); on the server too, under ROOT
LIBRARY = {
    "Aurora/01 Dawn.wav": (101, unit(axis(0) + 0.05 * axis(2)), "Aurora"),
    "Aurora/02 Über.wav": (102, unit(axis(0) + 0.05 * axis(3)), "Aurora"),
    "Borealis/100% Lights.wav": (103, unit(axis(0) + 0.3 * axis(6)), "Borealis"),
    "Cirrus/caf\udce9.wav": (104, unit(axis(1) + 0.2 * axis(6)), "Cirrus"),  # Latin-1 name
}
# ours only, the nearest to "02 Über" of all: no answer may carry it
LOCAL_ONLY = {"Elsewhere/only.wav": unit(axis(0) + 0.04 * axis(3))}
GONE, SPOTIFY, PODCAST = 201, 202, 203  # listed by LMS, matched to none of ours


def lms_id(path: str) -> str:
    return str(LIBRARY[path][0])


def file_url(path: str) -> str:
    """A file's URL as LMS writes it (URI::file): each byte of the path percent-encoded where
    a URL needs it."""
    return "file://" + quote(os.fsencode(path))


def title(track_id: int, url: str, artist: str) -> dict:
    """A track as `titles <start> <count> tags:usa` lists it: id and title, then the tags."""
    return {
        "id": track_id,
        "title": Path(url).stem,
        "url": url,
        "artist_id": str(sum(map(ord, artist))),
        "artist": artist,
    }


TITLES = [
    *(
        title(track_id, file_url(f"{ROOT}/{path}"), artist)
        for path, (track_id, _, artist) in LIBRARY.items()
    ),
    title(GONE, file_url(f"{ROOT}/Gone/1.flac"), "Nobody"),  # mapped, no track of ours
    title(SPOTIFY, "spotify:track:4uLU6hMCjMI75M1A2tKUQC", "Streamer"),  # no file path
    title(PODCAST, file_url("/mnt/podcasts/Talk/1.mp3"), "Talker"),  # outside the mapping
]


class RecordedLyrion:
    """Answers like LMS's JSON-RPC; `down` makes it fail like a proxy before a dead one,
    `scanning` says a scan is under way, as `titles` does then (`rescan: 1`)."""

    def __init__(self) -> None:
        self.down = False
        self.scanning = False
        self.titles = list(TITLES)
        self.pages: list[tuple[int, int]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/jsonrpc.js", self.jsonrpc)
        return app

    async def jsonrpc(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=502, text="<html>Bad Gateway</html>",
                                content_type="text/html")  # fmt: skip
        try:
            login = BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            login = None
        if login is None or (login.login, login.password) != (USER, PASSWORD):
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="LMS"'})
        body = await request.json()
        assert body["method"] == "slim.request"
        player, command = body["params"]
        assert player == ""  # server-wide: no player
        if command[0] == "titles":
            start, count, tags = command[1:]
            assert set("usa") <= set(tags.removeprefix("tags:"))
            self.pages.append((start, count))
            result = {"count": len(self.titles)}
            if page := self.titles[start : start + count]:
                result["titles_loop"] = page  # LMS leaves out an empty loop
            if self.scanning:
                result["rescan"] = 1
        else:
            assert command == ["serverstatus", 0, 0]
            result = {"version": "9.0.2", "info total songs": len(self.titles)}
        return web.json_response({**body, "result": result})


@pytest.fixture
async def lyrion(aiohttp_server, monkeypatch):
    monkeypatch.setattr(lyrion_client, "PAGE_SIZE", 4)  # TITLES takes two pages
    recorded = RecordedLyrion()
    recorded.url = str((await aiohttp_server(recorded.app())).make_url("")).rstrip("/")
    return recorded


def write_library(music_dir: Path) -> int:
    files = {f"Library/{path}": vector for path, (_, vector, _) in LIBRARY.items()} | LOCAL_ONLY
    for path, vector in files.items():
        write_vector_wav(music_dir / path, vector)
    return len(files)


def settings(lyrion: RecordedLyrion, password: str = PASSWORD) -> str:
    return (
        f'api_token = "{TOKEN}"\n'
        f'[lyrion]\nenabled = true\nurl = "{lyrion.url}"\n'
        f'username = "{USER}"\npassword = "{password}"\n'
        f'server_path_prefix = "{ROOT}"\nlibrary_path_prefix = "Library"\n'
        "change_delay_seconds = 0.2\nretry_seconds = 0.2\n"
        "[instant_mix]\nenabled = true\n"
    )


MIXER_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}


async def status_of(host) -> dict:
    answer = await host.get("/api/lyrion/status")
    assert answer.status == 200
    return await answer.json()


async def failed_status(host, why: str = "") -> dict | None:
    """The status where the last refresh failed (saying `why`), else None."""
    status = await status_of(host)
    return status if status["state"] == "failed" and why in status["error"] else None


async def start_host(fast_host, lyrion, music_dir, password: str = PASSWORD):
    count = write_library(music_dir)
    client = await fast_host(settings(lyrion, password), headers=MIXER_HEADERS)
    await eventually(lambda: settled(client.app[HOST].engine, count), what="the analyses")
    return client


async def all_matched(host) -> dict | None:
    status = await status_of(host)
    return status if status["matched"] == len(LIBRARY) and status["state"] == "ok" else None


@pytest.fixture
async def host(fast_host, lyrion, music_dir, vector_analyzer):
    client = await start_host(fast_host, lyrion, music_dir)
    await eventually(partial(all_matched, client), what="the matches")
    return client


async def test_tracks_whose_url_paths_map_onto_ours_are_matched(host, lyrion):
    status = await status_of(host)
    # the Spotify track has no file path, the podcast is outside ROOT, "Gone" is none of ours
    shown = ("items_on_server", "path_mapping", "without_path", "outside_mapping", "not_in_library")
    assert {key: status[key] for key in shown} == {
        "items_on_server": len(TITLES),
        "path_mapping": {"server_path_prefix": ROOT, "library_path_prefix": "Library",
                         "learnt": False},
        "without_path": 1,
        "outside_mapping": 1,
        "not_in_library": 1,
    }  # fmt: skip
    assert status["example_unmatched"] in (f"{ROOT}/Gone/1.flac", "/mnt/podcasts/Talk/1.mp3")
    assert lyrion.pages[:2] == [(0, 4), (4, 4)]  # paged
    stored = await rows(
        host.app[HOST].engine,
        "SELECT m.item_id, t.raw_path, m.artist_id FROM lyrion_matches m"
        " JOIN library_tracks t ON t.id = m.track_id",
    )
    # percent-encoded spaces, "%", UTF-8 and a Latin-1 byte all come back to our file names
    assert {(row.item_id, os.fsdecode(row.raw_path), row.artist_id) for row in stored} == {
        (str(track_id), f"Library/{path}", str(sum(map(ord, artist))))
        for path, (track_id, _, artist) in LIBRARY.items()
    }


async def test_each_mixer_request_answers_lms_track_ids_where_the_mixer_reads_them(host):
    seed = lms_id("Aurora/02 Über.wav")
    similar = await host.get(
        f"/api/similar_tracks?item_id={seed}&n=40&eliminate_duplicates=true"
        "&radius_similarity=true&mood_similarity=true"
    )
    assert similar.status == 200, await similar.text()
    songs = await similar.json()
    # nearest first; the local-only track (the nearest of all) is not on the server
    assert [song["item_id"] for song in songs] == [
        lms_id("Aurora/01 Dawn.wav"), lms_id("Borealis/100% Lights.wav"),
        lms_id("Cirrus/caf\udce9.wav"),
    ]  # fmt: skip
    start, end = lms_id("Aurora/01 Dawn.wav"), lms_id("Cirrus/caf\udce9.wav")
    path = await host.get(f"/api/find_path?start_song_id={start}&end_song_id={end}&max_steps=10")
    assert path.status == 200, await path.text()
    steps = (await path.json())["path"]
    assert (steps[0]["item_id"], steps[-1]["item_id"]) == (start, end)
    items = [{"id": seed, "op": "ADD", "type": "song"}, {"id": start, "op": "ADD", "type": "song"}]
    alchemy = await host.post("/api/alchemy", json={"items": items, "n": 40})
    assert alchemy.status == 200, await alchemy.text()
    mixed = (await alchemy.json())["results"]
    assert {song["item_id"] for song in mixed} == {
        lms_id("Borealis/100% Lights.wav"), lms_id("Cirrus/caf\udce9.wav"),
    }  # fmt: skip
    matched = {str(track_id) for track_id, _, _ in LIBRARY.values()}
    for song in songs + steps + mixed:  # Plugin.pm, _getTrackObjects: item_id, digits only
        assert isinstance(song["item_id"], str) and re.fullmatch(r"\d+", song["item_id"])
        assert song["item_id"] in matched
    # its default API is not ours: any error, and the mixer asks similar_tracks instead
    hyperbolic = {"item_id": seed, "mode": "similar", "limit": 40}
    assert (await host.post("/api/hyperbolic/similar", json=hyperbolic)).status != 200


async def test_an_unmatched_lms_id_is_a_404_with_an_error(host):
    for unmatched in (GONE, 999):
        answer = await host.get(f"/api/similar_tracks?item_id={unmatched}&n=40")
        assert answer.status == 404
        assert isinstance((await answer.json())["error"], str)
    hook = host.app[HOST].hook
    artist = str(sum(map(ord, "Borealis")))
    name = hook.soundspan_server_artist_name(host=host.app[HOST], server="lyrion",
                                             artist_id=artist)  # fmt: skip
    assert await name == "Borealis"


async def test_lyrion_away_or_scanning_keeps_the_last_matches(host, lyrion, caplog):
    seed = lms_id("Aurora/02 Über.wav")
    for trouble, said in (("scanning", "scanning its library"), ("down", "HTTP 502")):
        setattr(lyrion, trouble, True)
        with caplog.at_level(logging.INFO, logger="soundspan_plugins.lyrion"):
            await host.post("/api/lyrion/refresh")
            status = await eventually(partial(failed_status, host, said), what=trouble)
        assert said in status["error"] and status["matched"] == len(LIBRARY)
        answer = await host.get(f"/api/similar_tracks?item_id={seed}&n=40")
        assert answer.status == 200 and len(await answer.json()) == 3
        setattr(lyrion, trouble, False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the last good matches stay" in r.getMessage() for r in warnings)
    await host.post("/api/lyrion/refresh")
    await eventually(lambda: _state_is(host, "ok"), what="a refresh that works again")


async def _state_is(host, state: str) -> bool:
    return (await status_of(host))["state"] == state


async def test_a_wrong_password_says_what_to_set(fast_host, lyrion, music_dir):
    host = await start_host(fast_host, lyrion, music_dir, password="not-the-password")
    status = await eventually(lambda: failed_status(host), what="a refused refresh")
    assert "asks for a login (HTTP 401)" in status["error"]
    assert "[lyrion] username and password" in status["error"]
    assert "not-the-password" not in status["error"]


def test_server_none_is_lyrions_only_where_no_other_music_server_plugin_is_on(tmp_path):
    """The mixer sends no `server=`: with jellyfin on too, neither answers a request without
    one, and Lyrion's ids need `server=lyrion`."""

    lyrion = '[lyrion]\nenabled = true\nurl = "http://lms:9000"\n'
    jellyfin = '[jellyfin]\nenabled = true\nurl = "http://jf:8096"\napi_key = "k"\n'
    alone = enabled_hooks(tmp_path, lyrion)
    both = enabled_hooks(tmp_path, lyrion + jellyfin)
    assert is_ours(alone, None) and is_ours(alone, "lyrion")
    assert not is_ours(both, None) and is_ours(both, "lyrion")
    assert not is_ours(alone, "jellyfin")


async def test_default_server_picks_lyrion_where_several_music_servers_are_on(
    fast_host, lyrion, music_dir, vector_analyzer
):
    """With jellyfin on too, the mixer's requests (no `server=`) get a 409 that names the
    setting; `[instant_mix] default_server = "lyrion"` makes them Lyrion's."""
    count = write_library(music_dir)
    # jellyfin's server is away: its matches stay empty, its hooks still answer its requests
    jellyfin = '[jellyfin]\nenabled = true\nurl = "http://127.0.0.1:9"\napi_key = "k"\n'
    undecided = await fast_host(settings(lyrion) + jellyfin, headers=MIXER_HEADERS)
    await eventually(lambda: settled(undecided.app[HOST].engine, count), what="the analyses")
    await eventually(partial(all_matched, undecided), what="the matches")
    seed = lms_id("Aurora/01 Dawn.wav")
    answer = await undecided.get(f"/api/similar_tracks?item_id={seed}&n=40")
    assert answer.status == 409
    error = (await answer.json())["error"]
    assert "jellyfin, lyrion" in error and "[instant_mix] default_server" in error
    assert (await undecided.get(f"/api/similar_tracks?item_id={seed}&server=lyrion")).status == 200
    await undecided.close()

    chosen = settings(lyrion) + 'default_server = "lyrion"\n' + jellyfin
    host = await fast_host(chosen, headers=MIXER_HEADERS)
    await eventually(partial(all_matched, host), what="the matches")
    answer = await host.get(f"/api/similar_tracks?item_id={seed}&n=40")
    assert answer.status == 200
    assert {song["item_id"] for song in await answer.json()} <= {
        str(track_id) for track_id, _, _ in LIBRARY.values()
    }


def test_file_urls_become_paths_and_titles_items():
    assert file_path("file:///music/Bj%C3%B6rk/01%20J%C3%B3ga.flac") == "/music/Björk/01 Jóga.flac"
    assert file_path("file:///music/caf%E9.flac") == "/music/caf\udce9.flac"  # not UTF-8
    assert file_path("file:///C:/Music/A%20B/1.mp3") == "C:/Music/A B/1.mp3"
    assert file_path("file://nas/music/1.mp3") == "//nas/music/1.mp3"
    assert file_path("spotify:track:4uLU6hMCjMI75M1A2tKUQC") is None
    assert file_path(None) is None
    several = {"id": 7, "url": "file:///m/1.mp3", "artist_id": "3, 9", "artist": "A, B"}
    assert LyrionTitle.from_json(several) == LyrionTitle("7", "/m/1.mp3", "3", "A")
    one = {"id": "8", "url": "file:///m/2.mp3", "artist_id": 4, "artist": "Crosby, Stills"}
    assert LyrionTitle.from_json(one) == LyrionTitle("8", "/m/2.mp3", "4", "Crosby, Stills")


async def test_its_routes_are_in_the_openapi_document(host):
    spec = await (await host.get("/api/openapi.json")).json()
    assert {"/api/lyrion/status", "/api/lyrion/refresh"} <= set(spec["paths"])
    assert "LyrionStatus" in spec["components"]["schemas"]


async def test_doctor_says_whether_the_server_takes_the_login(lyrion):
    def section(password: str) -> LyrionSettings:
        return LyrionSettings(enabled=True, url=lyrion.url, username=USER, password=password)

    [ok] = await server_check(section(PASSWORD))
    assert (ok.status, ok.detail) == ("ok", f"Lyrion 9.0.2, {len(TITLES)} tracks answers")
    [refused] = await server_check(section("wrong"))
    assert refused.status == "fail" and "HTTP 401" in refused.detail

"""What supysonic cannot show, against scripted answers: token login (`t`, `s`), OpenSubsonic
`apiKey`, songs with MusicBrainz recording ids and no paths (as Navidrome reports them), and a
server that fails and comes back. A tiny aiohttp server answers with the JSON written by hand
here (modelled on the Subsonic and OpenSubsonic documentation, not captured from a running
Navidrome), checking each login as a real server does. Plus the matching rules on their own."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from soundspan_host.app import create_app
from soundspan_plugins.subsonic.client import Login, SubsonicClient, SubsonicError
from soundspan_plugins.subsonic.matching import (
    OurTrack,
    PathMapping,
    ServerSong,
    SongIndex,
    normalised,
)
from tests.harness.library import eventually
from tests.harness.tagged_audio import write_tagged

PASSWORD = "s3cret"
API_KEY = "key-123"
RECORDING = "5b11f4ce-a62d-471e-81fc-a69a8278c7da"
NAVIDROME_SONGS = [  # what Navidrome's search3 answers (no real paths unless configured)
    {
        "id": "nd1",
        "title": "So What (Remastered)",
        "artist": "Miles Davis",
        "album": "Kind of Blue (Legacy Edition)",
        "duration": 1,
        "musicBrainzId": RECORDING,
    },
    {"id": "nd2", "title": "Blue in Green", "artist": "Miles Davis", "album": "Kind of Blue",
     "duration": 1},
]  # fmt: skip


class RecordedServer:
    """Answers like a Subsonic server; `down` makes it fail like a proxy before a dead one."""

    def __init__(self) -> None:
        self.down = False
        self.logins: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(
                status=502, text="<html>Bad Gateway</html>", content_type="text/html"
            )
        query = request.query
        self.logins.append({k: v for k, v in query.items() if k in ("u", "p", "t", "s", "apiKey")})
        token_ok = (
            "t" in query
            and query["t"] == hashlib.md5((PASSWORD + query.get("s", "")).encode()).hexdigest()
        )
        if not (token_ok or query.get("apiKey") == API_KEY):
            return self.answer(
                {"status": "failed", "error": {"code": 40, "message": "Wrong username or password"}}
            )
        endpoint = request.match_info["endpoint"]
        if endpoint == "search3":
            offset = int(query["songOffset"])
            page = NAVIDROME_SONGS[offset : offset + int(query["songCount"])]
            return self.answer({"status": "ok", "searchResult3": {"song": page}})
        return self.answer({"status": "ok", "type": "navidrome", "openSubsonic": True})

    @staticmethod
    def answer(body: dict) -> web.Response:
        return web.json_response({"subsonic-response": {"version": "1.16.1", **body}})


@pytest.fixture
async def recorded(aiohttp_server):
    recorded = RecordedServer()
    app = web.Application()
    app.router.add_get("/rest/{endpoint}", recorded.handle)
    server = await aiohttp_server(app)
    return recorded, str(server.make_url("/")).rstrip("/")


async def ping(url: str, login: Login) -> str:
    async with aiohttp.ClientSession() as session:
        return await SubsonicClient(session, url, login).ping()


async def test_token_login_sends_a_salted_hash_never_the_password(recorded):
    server, url = recorded
    assert await ping(url, Login("alice", password=PASSWORD)) == "navidrome 1.16.1"
    [sent] = server.logins
    assert set(sent) == {"u", "t", "s"} and PASSWORD not in sent.values()
    with pytest.raises(SubsonicError, match="Wrong username or password"):
        await ping(url, Login("alice", password="nope"))


async def test_an_api_key_login_sends_only_the_key(recorded):
    server, url = recorded
    await ping(url, Login("alice", api_key=API_KEY))
    assert server.logins == [{"apiKey": API_KEY}]


async def test_a_track_matches_by_musicbrainz_id_when_titles_differ(
    recorded, write_settings, aiohttp_client, music_dir: Path
):
    server, url = recorded
    tags = {"title": "So What", "artist": "Miles Davis", "album": "Kind of Blue"}
    write_tagged(music_dir / "a.mp3", {**tags, "musicbrainz_trackid": RECORDING})
    write_tagged(music_dir / "b.mp3", {**tags, "title": "Blue in Green"})
    settings = (
        f'[subsonic]\nenabled = true\nurl = "{url}"\nchange_delay_seconds = 0.1\n'
        f'retry_seconds = 0.1\n[[subsonic.users]]\nname = "alice"\napi_key = "{API_KEY}"\n'
    )
    host = await aiohttp_client(create_app(write_settings(settings)))

    async def status(wanted: str, **expected):
        answer = await (await host.get("/api/subsonic/status")).json()
        ready = answer["state"] == wanted and all(answer[k] == v for k, v in expected.items())
        return answer if ready else None

    await eventually(lambda: status("ok", matched={"musicbrainz": 1, "tags": 1}))

    server.down = True
    await host.post("/api/subsonic/refresh")
    failed = await eventually(lambda: status("failed"), what="the refresh to fail")
    assert "HTTP 502" in failed["error"] and failed["matched"] == {"musicbrainz": 1, "tags": 1}

    server.down = False  # the back-off retries by itself
    back = await eventually(lambda: status("ok"), what="a retry to succeed")
    assert back["error"] is None and back["tracks_checked"] == 0  # nothing changed


def track(path="x.mp3", title="So What", duration=545.0, **tags) -> OurTrack:
    fields = {"artist": "Miles Davis", "album_artist": None, "album": "Kind of Blue",
              "musicbrainz_recording_id": None, **tags}  # fmt: skip
    return OurTrack("t1", path, title, duration=duration, **fields)


def server_song(id="s1", path=None, title="So What", duration=546.0, mbid=None) -> ServerSong:
    return ServerSong(id, path, title, "Miles Davis", "Kind of Blue", duration, mbid)


def test_names_match_without_case_accents_or_punctuation():
    assert normalised("Beyoncé — Halo!") == normalised("beyonce halo")


def test_a_server_path_maps_onto_ours_through_the_prefixes():
    mapping = PathMapping(server_prefix="music/", library_prefix="library/")
    index = SongIndex([server_song(path="music/Miles/x.mp3", title="Other")], mapping)
    assert index.match(track(path="library/Miles/x.mp3")).method == "path"
    assert mapping.ours("elsewhere/x.mp3") is None


def test_the_duration_must_be_within_two_seconds_and_the_closest_wins():
    index = SongIndex([server_song("far", duration=549.0), server_song("near", duration=544.0)],
                      PathMapping())  # fmt: skip
    assert index.match(track(duration=545.0)).song.id == "near"
    assert index.match(track(duration=560.0)).song is None


def test_a_musicbrainz_id_beats_different_titles_but_not_a_path():
    songs = [server_song("mb", title="Live", mbid=RECORDING), server_song("p", path="x.mp3")]
    index = SongIndex(songs, PathMapping())
    assert index.match(track(path="x.mp3", musicbrainz_recording_id=RECORDING)).song.id == "p"
    found = index.match(track(path="y.mp3", musicbrainz_recording_id=RECORDING.upper()))
    assert (found.song.id, found.method) == ("mb", "musicbrainz")


class ScanningServer:
    """Navidrome's answers to search3 and getScanStatus (`count`, `lastScan`): a scan adds a
    song. supysonic cannot show this: its getScanStatus needs an admin and its daemon."""

    def __init__(self) -> None:
        self.songs: list[dict] = []
        self.scan = {"scanning": False, "count": 0, "lastScan": "2026-01-01T00:00:00Z"}

    def scanned(self, song: dict) -> None:
        self.songs.append(song)
        self.scan = {"scanning": False, "count": len(self.songs), "lastScan": "2026-01-02T00:00Z"}

    async def handle(self, request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        if endpoint == "search3":
            offset = int(request.query["songOffset"])
            page = self.songs[offset : offset + int(request.query["songCount"])]
            return RecordedServer.answer({"status": "ok", "searchResult3": {"song": page}})
        if endpoint == "getScanStatus":
            return RecordedServer.answer({"status": "ok", "scanStatus": self.scan})
        return RecordedServer.answer({"status": "ok", "type": "navidrome"})


async def test_a_scan_the_server_reports_matches_again_at_once(
    aiohttp_server, write_settings, aiohttp_client, music_dir: Path
):
    """Retries and refreshes an hour apart: only the server's word that it scanned can bring
    the new song in quickly."""
    scanning = ScanningServer()
    app = web.Application()
    app.router.add_get("/rest/{endpoint}", scanning.handle)
    url = str((await aiohttp_server(app)).make_url("/")).rstrip("/")
    write_tagged(music_dir / "a.mp3", {"title": "Blue in Green", "artist": "Miles Davis"})
    settings = (
        f'[subsonic]\nenabled = true\nurl = "{url}"\nchange_delay_seconds = 0.1\n'
        "retry_seconds = 3600\nscan_check_seconds = 0.1\n"
        f'[[subsonic.users]]\nname = "alice"\napi_key = "{API_KEY}"\n'
    )
    host = await aiohttp_client(create_app(write_settings(settings)))

    async def status(**expected):
        answer = await (await host.get("/api/subsonic/status")).json()
        return answer if all(answer[k] == v for k, v in expected.items()) else None

    await eventually(lambda: status(state="ok", unmatched=1), what="the first refresh")
    scanning.scanned({**NAVIDROME_SONGS[1], "album": None})
    await eventually(lambda: status(matched={"tags": 1}, unmatched=0), what="the match")

"""The subsonic plugin against servers no real one here behaves like: a redirect loop, an
answer that is not HTTP, a 10 KB header, a message with CR/LF, pages for ever, the same page
again, an answer of 33 MB, a server that never answers. Each is a small local server written
in this file (supysonic can do none of these); the host, its database and its routes are real.

What must hold: the login (p=enc:<hex>, t= and s=, apiKey=) never reaches an error we keep or
show, a server's CR/LF never reaches an HTTP reason or a log line, a listing is bounded, and
what doctor and `unmatched` print reads as words.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from rich.console import Console
from rich.text import Text

from soundspan_hooks import HOST
from soundspan_hooks.cli import HostClient
from soundspan_host.doctor import run_checks
from soundspan_host.errors import ConfigError
from soundspan_plugins.subsonic import commands
from soundspan_plugins.subsonic.client import (
    MAX_ANSWER_BYTES,
    PAGE_SIZE,
    Login,
    SubsonicClient,
    SubsonicError,
)
from tests.harness.library import eventually, tracks
from tests.harness.subsonic_settings import PASSWORD, hostile_settings
from tests.harness.tagged_audio import write_tagged
from tests.harness.terminal_text import assert_words_whole

API_KEY = "key-that-is-secret"
SECRETS = (PASSWORD, PASSWORD.encode().hex(), API_KEY, "enc:")
LOGIN_IN_A_QUERY = re.compile(r"[?&](u|p|t|s|apiKey)=")
LOGINS = {
    "legacy": Login("alice", PASSWORD, legacy=True),
    "token": Login("alice", PASSWORD),
    "api key": Login("alice", api_key=API_KEY),
}
FORGED = "disk full\r\n2026-01-01 WARNING soundspan: forged line"


def assert_no_secret(text: str) -> None:
    assert not [secret for secret in SECRETS if secret in text], text
    assert not LOGIN_IN_A_QUERY.search(text), text


def subsonic_answer(body: dict) -> web.Response:
    return web.json_response({"subsonic-response": {"status": "ok", "version": "1.16.1", **body}})


class HostileServer:
    """A Subsonic server that lists one song (at `song_path`) while `broken` is None, and
    otherwise fails as `broken` says: "redirect loop", "forged message"."""

    def __init__(self, song_path: str = "a.mp3") -> None:
        self.song_path = song_path
        self.broken: str | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.broken == "redirect loop":
            raise web.HTTPFound(str(request.rel_url))  # the same URL, query and all
        endpoint = request.match_info["endpoint"]
        if endpoint == "search3" and self.broken is None:
            song = {"id": "s1", "path": self.song_path, "title": "A", "duration": 1}
            return subsonic_answer({"searchResult3": {"song": [song]}})
        if self.broken == "forged message":
            return subsonic_answer({"status": "failed", "error": {"code": 0, "message": FORGED}})
        return subsonic_answer({"type": "hostile"})


async def serve(aiohttp_server, handler) -> str:
    app = web.Application()
    app.router.add_get("/rest/{endpoint}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def not_http():
    """Answers every connection with an SSH banner, as a wrong port would."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n" + b"\x00" * 64)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def huge_header(request: web.Request) -> web.Response:
    return web.Response(text="{}", headers={"X-Padding": "x" * 10_240})


@pytest.mark.parametrize("login", LOGINS)
@pytest.mark.parametrize("kind", ["redirect loop", "not HTTP", "10 KB header"])
async def test_a_client_error_never_carries_the_login(aiohttp_server, not_http, kind, login):
    """aiohttp's errors quote the request's URL, query and all: the login was in our errors."""
    if kind == "redirect loop":
        hostile = HostileServer()
        hostile.broken = kind
        url = await serve(aiohttp_server, hostile.handle)
    else:
        url = not_http if kind == "not HTTP" else await serve(aiohttp_server, huge_header)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(SubsonicError) as failed:
            await SubsonicClient(session, url, LOGINS[login]).ping()
    assert_no_secret(str(failed.value))
    assert "cannot reach" in str(failed.value) and url in str(failed.value)
    assert failed.value.__cause__ is None  # a logged traceback would quote the URL


@pytest.fixture
async def hostile_host(aiohttp_server, fast_host, music_dir: Path):
    """A host whose one track is matched by path with a HostileServer, still well-behaved."""
    write_tagged(music_dir / "a.mp3", {"title": "A", "artist": "B"})
    hostile = HostileServer()
    url = await serve(aiohttp_server, hostile.handle)
    host = await fast_host(hostile_settings(url))

    async def matched():
        status = await (await host.get("/api/subsonic/status")).json()
        return status["matched"] == {"path": 1}

    await eventually(matched, what="the match")
    return host, hostile, url


async def track_ids(host) -> list[str]:
    return [row[0] for row in (await tracks(host.app[HOST].engine)).values()]


async def send(host) -> aiohttp.ClientResponse:
    return await host.post(
        "/api/playlists",
        json={"name": "x", "track_ids": await track_ids(host), "send_to": {"server_user": "alice"}},
    )


async def failed_status(host) -> dict | None:
    status = await (await host.get("/api/subsonic/status")).json()
    return status if status["state"] == "failed" else None


async def test_what_we_keep_and_show_of_a_redirect_loop_has_no_login(
    hostile_host, caplog, write_settings
):
    """The repro's five places: the status, the playlists list, a 502, the log and doctor."""
    host, hostile, url = hostile_host
    hostile.broken = "redirect loop"
    caplog.set_level(logging.INFO)

    answer = await send(host)
    assert answer.status == 502
    assert_no_secret((await answer.json())["error"]["message"])

    await host.post("/api/subsonic/refresh")
    assert_no_secret((await eventually(lambda: failed_status(host)))["error"])

    fresh = {"name": "F", "user": "alice", "track_ids": await track_ids(host)}
    assert (await host.post("/api/subsonic/playlists", json=fresh)).status == 202

    async def fresh_failed():
        listed = (await (await host.get("/api/subsonic/playlists")).json())["playlists"]
        return [p["fresh"]["error"] for p in listed if p["fresh"] and p["fresh"]["error"]]

    [error] = await eventually(fresh_failed, what="the fresh playlist to fail")
    assert_no_secret(error)
    assert_no_secret(caplog.text)

    write_settings(hostile_settings(url))
    checks = await asyncio.to_thread(run_checks, None)  # doctor runs a loop of its own
    [login] = [check for check in checks if check.name == "subsonic login alice"]
    assert login.status == "fail" and "redirects in a loop" in login.detail
    assert_no_secret(login.detail)


async def test_a_server_message_with_a_line_break_is_a_502_and_one_log_line(hostile_host, caplog):
    """aiohttp refuses CR/LF in a reason: the answer was a 500, and the log got a forged line."""
    host, hostile, _ = hostile_host
    hostile.broken = "forged message"
    caplog.set_level(logging.INFO)

    answer = await send(host)
    assert answer.status == 502
    message = (await answer.json())["error"]["message"]
    assert "disk full\\r\\n2026-01-01 WARNING" in message and "\n" not in message

    await host.post("/api/subsonic/refresh")
    status = await eventually(lambda: failed_status(host))
    assert "\n" not in status["error"] and "\\r\\n" in status["error"]
    logged = [
        record.getMessage() for record in caplog.records if "disk full" in record.getMessage()
    ]
    assert logged and not [line for line in logged if "\n" in line or "\r" in line]


class EndlessPages:
    """search3 answers a full page at every offset: new songs for ever, or the same page."""

    def __init__(self, same_page: bool) -> None:
        self.same_page = same_page

    async def handle(self, request: web.Request) -> web.Response:
        offset = 0 if self.same_page else int(request.query.get("songOffset", 0))
        page = [{"id": f"s{offset + n}", "title": "t"} for n in range(PAGE_SIZE)]
        return subsonic_answer({"searchResult3": {"song": page}})


async def songs_of(url: str, max_songs: int = 1_000) -> list:
    async with aiohttp.ClientSession() as session:
        client = SubsonicClient(session, url, LOGINS["api key"], max_songs)
        return [song async for song in client.songs()]


async def test_a_server_that_pages_for_ever_is_stopped(aiohttp_server):
    """The repro grew the host by 4 GB in 60 s."""
    url = await serve(aiohttp_server, EndlessPages(same_page=False).handle)
    with pytest.raises(SubsonicError, match="more than 1000 songs; stopped reading"):
        await songs_of(url)


async def test_a_server_that_answers_the_same_page_again_is_stopped(aiohttp_server):
    url = await serve(aiohttp_server, EndlessPages(same_page=True).handle)
    with pytest.raises(SubsonicError, match="answers songs it listed before"):
        await songs_of(url, max_songs=1_000_000)


async def test_an_answer_bigger_than_any_we_ask_for_is_refused(aiohttp_server):
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"subsonic-response": {"status": "ok", "padding": "')
        chunk = b"x" * 1024**2
        for _ in range(MAX_ANSWER_BYTES // len(chunk) + 1):
            await response.write(chunk)
        await response.write(b'"}}')
        return response

    url = await serve(aiohttp_server, huge)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(SubsonicError, match="the answer is over 32 MB"):
            await SubsonicClient(session, url, LOGINS["api key"]).ping()


async def test_unmatched_with_no_rows_reads_whole_at_80_columns(hostile_host, monkeypatch):
    """Its title was folded into the empty table's width: "trac / ks / with / out"."""
    host, _, _ = hostile_host
    terminal = Console(width=80, force_terminal=True)
    monkeypatch.setattr(commands, "console", terminal)
    client = HostClient(host.session, str(host.make_url("")).rstrip("/"), False, None)
    with terminal.capture() as captured:
        await commands.show_unmatched(client, limit=10)  # `soundspan-host unmatched`
    assert_words_whole(
        Text.from_ansi(captured.get()).plain, ["tracks without a song on the server: 0"], 80
    )


def test_doctor_says_a_url_needs_its_scheme(write_settings):
    """`url = "music.example.com"` failed each login with the bare URL as the reason."""
    with pytest.raises(ConfigError, match="with its scheme"):  # and the host does not start
        write_settings(hostile_settings("music.example.com"))
    [settings] = [check for check in run_checks(None) if check.name == "settings"]
    assert settings.status == "fail"
    assert "with its scheme, e.g. https://music.example.com" in settings.detail


@pytest.fixture
async def silent():
    """Accepts connections and never answers, as a server hung or behind a dead proxy."""
    connections = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in connections:
        writer.close()
    server.close()


async def test_doctor_says_a_server_that_never_answers_in_words(silent, write_settings):
    """The reason was `TimeoutError`, alone."""
    write_settings(hostile_settings(silent, "timeout_seconds = 0.5\n"))
    checks = await asyncio.to_thread(run_checks, None)
    [login] = [check for check in checks if check.name == "subsonic login alice"]
    assert login.status == "fail"
    assert "no answer within 0.5 s; is the server up at this address?" in login.detail

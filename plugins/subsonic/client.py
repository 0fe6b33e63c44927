"""The Subsonic API, as this plugin uses it: one aiohttp session, one login per server user.

Every call answers the body of `subsonic-response` or raises SubsonicError with words for a
user. Logins: OpenSubsonic `apiKey` when a user has one; else the salted token
(`t=md5(password+salt)&s=salt`, API 1.13); else, with `legacy_login`, `p=enc:<hex>` for
servers that accept no token (supysonic, older Subsonic forks).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from soundspan_plugins.shared.server_http import read_capped, url_shown

API_VERSION = "1.13.0"  # the first with token login; servers answer older clients alike
CLIENT_NAME = "soundspan"
PAGE_SIZE = 500  # songs or albums per request; what Navidrome and gonic allow at most
MAX_ANSWER_BYTES = 32 * 1024**2  # a page of 500 songs is under 1 MB
DEFAULT_MAX_SONGS = 1_000_000
# a URL's query holds the login (p=enc:<hex>, t= and s=, apiKey=): never kept or shown
URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"]*)[?#][^\s'\")]*", re.IGNORECASE)
LOGIN_PARAMETER = re.compile(r"\b(p|t|s|apiKey)=[^&\s'\")]*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


NOT_FOUND = 70  # the Subsonic error code for "the requested data was not found"


class SubsonicError(Exception):
    """The server could not be reached, refused a login, or answered with an error (`code`).

    Its message is safe to keep, show and log: see `shown`."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(shown(message))
        self.code = code


def shown(text: str) -> str:
    """Text from a server or an HTTP library as we keep, answer and log it: URLs without their
    query (it holds the login), and control characters escaped, so a server's CR/LF can
    neither forge a log line nor break an HTTP reason."""
    text = LOGIN_PARAMETER.sub(r"\1=…", URL_QUERY.sub(r"\1", text))
    return CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


@dataclass(frozen=True)
class Login:
    """How one server user logs in; the secrets never reach a log line or an error."""

    name: str
    password: str | None = None
    api_key: str | None = None
    legacy: bool = False

    def params(self) -> dict[str, str]:
        if self.api_key:
            return {"apiKey": self.api_key}
        assert self.password is not None
        if self.legacy:
            return {"u": self.name, "p": "enc:" + self.password.encode().hex()}
        salt = secrets.token_hex(8)
        token = hashlib.md5((self.password + salt).encode()).hexdigest()
        return {"u": self.name, "t": token, "s": salt}


class SubsonicClient:
    """Calls of one server user; `session` belongs to whoever opened it (the plugin's lifespan)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        login: Login,
        max_songs: int = DEFAULT_MAX_SONGS,
    ) -> None:
        self.session = session
        self.base = url.rstrip("/") + "/rest/"
        self.login = login
        self.max_songs = max_songs  # a listing beyond this is refused, not held in memory

    async def call(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """One API call; its answer without the `subsonic-response` wrapper."""
        query = [
            ("v", API_VERSION),
            ("c", CLIENT_NAME),
            ("f", "json"),
            *self.login.params().items(),
            *_flatten(params),
        ]
        where = f"{url_shown(self.base)}{endpoint} as {self.login.name!r}"
        try:
            async with self.session.get(self.base + endpoint, params=query) as answer:
                if answer.status >= 400 and answer.content_type != "application/json":
                    raise SubsonicError(f"{where}: HTTP {answer.status} {answer.reason}")
                body = json.loads(
                    await read_capped(
                        answer,
                        where,
                        SubsonicError,
                        MAX_ANSWER_BYTES,
                        " (no Subsonic answer we ask for is that big)",
                    )
                )
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as error:
            # from None: the cause's message carries the URL with the login in its query
            raise SubsonicError(f"cannot reach {where}: {self._why(error)}") from None
        response = body.get("subsonic-response") if isinstance(body, dict) else None
        if not isinstance(response, dict):
            raise SubsonicError(f"{where}: the answer is not a Subsonic API answer")
        if response.get("status") != "ok":
            error = response.get("error")
            error = error if isinstance(error, dict) else {}
            raise SubsonicError(
                f"{where}: the server says {error.get('message', 'failed')}"
                f" (Subsonic error {error.get('code', '?')})",
                error.get("code"),
            )
        return response

    def _why(self, error: BaseException) -> str:
        """What went wrong in a user's words; never the request's URL."""
        if isinstance(error, TimeoutError):
            seconds = self.session.timeout.total
            within = f" within {seconds:g} s" if seconds else ""
            return (
                f"no answer{within}; is the server up at this address? A slow server needs a"
                " larger [subsonic] timeout_seconds"
            )
        if isinstance(error, aiohttp.TooManyRedirects):
            return "it redirects in a loop; check [subsonic] url (http or https, the path)"
        if isinstance(error, aiohttp.InvalidURL):
            return "[subsonic] url is not a web address; write it as https://music.example.com"
        if isinstance(error, aiohttp.ClientResponseError):
            return f"its answer is not HTTP a client can read ({error.message})"
        if isinstance(error, RecursionError):
            return "its answer is JSON nested too deeply to read"
        if isinstance(error, ValueError) and not isinstance(error, aiohttp.ClientError):
            return "its answer is not JSON; is [subsonic] url the Subsonic server's address?"
        return str(error) or type(error).__name__

    async def ping(self) -> str:
        """Log in; the server's name and API version, e.g. "navidrome 1.16.1"."""
        answer = await self.call("ping")
        return f"{answer.get('type', 'subsonic')} {answer.get('version', '?')}".strip()

    async def scan_status(self) -> dict[str, Any]:
        """`getScanStatus`: scanning, count and, on Navidrome, lastScan and folderCount."""
        return (await self.call("getScanStatus")).get("scanStatus") or {}

    async def songs(self) -> AsyncIterator[dict[str, Any]]:
        """Every song on the server, as `child` objects (id, path, title, artist, album, ...).

        `search3` with an empty query lists the whole library a page at a time (Navidrome,
        supysonic, Airsonic-Advanced); where it lists nothing, albums are walked instead."""
        listed = _Listing(self.max_songs)
        while True:
            page = await self.call(
                "search3",
                query="",
                songCount=PAGE_SIZE,
                songOffset=listed.count,
                artistCount=0,
            )
            songs = (page.get("searchResult3") or {}).get("song") or []
            listed.add(songs)
            for song in songs:
                yield song
            if len(songs) < PAGE_SIZE:
                break
        if listed.count == 0:
            async for song in self._songs_by_album(listed):
                yield song

    async def _songs_by_album(self, listed: _Listing) -> AsyncIterator[dict[str, Any]]:
        offset = 0
        for _ in range(listed.max_pages):
            page = await self.call(
                "getAlbumList2", type="alphabeticalByName", size=PAGE_SIZE, offset=offset
            )
            albums = (page.get("albumList2") or {}).get("album") or []
            for album in albums:
                answer = await self.call("getAlbum", id=album["id"])
                songs = (answer.get("album") or {}).get("song") or []
                listed.add(songs)
                for song in songs:
                    yield song
            if len(albums) < PAGE_SIZE:
                return
            offset += len(albums)
        raise listed.too_many()

    # --- playlists (this user's) -----------------------------------------------------------

    async def create_playlist(self, name: str, song_ids: Sequence[str]) -> str:
        """A new playlist of these songs, in order; its id."""
        before = {str(p["id"]) for p in await self.playlists()}
        answer = await self.call("createPlaylist", name=name, songId=list(song_ids))
        playlist = answer.get("playlist")
        if playlist is not None:
            return str(playlist["id"])
        # API < 1.14 answers nothing: the new one is the playlist of that name not there before
        found = [
            str(p["id"])
            for p in await self.playlists()
            if p.get("name") == name and str(p["id"]) not in before
        ]
        if len(found) != 1:
            raise SubsonicError(f"the server did not say which playlist {name!r} it created")
        return found[0]

    async def replace_playlist(self, playlist_id: str, song_ids: Sequence[str]) -> None:
        """Make a playlist hold exactly these songs, in order, keeping its id and name: one
        `createPlaylist` with `playlistId`, which servers apply at once (supysonic in one
        transaction), so no client ever sees it half written."""
        await self.call("createPlaylist", playlistId=playlist_id, songId=list(song_ids))

    async def playlist(self, playlist_id: str) -> dict[str, Any]:
        """A playlist with its `entry` songs in order."""
        return (await self.call("getPlaylist", id=playlist_id))["playlist"]

    async def playlists(self) -> list[dict[str, Any]]:
        return (await self.call("getPlaylists")).get("playlists", {}).get("playlist") or []

    async def delete_playlist(self, playlist_id: str) -> None:
        await self.call("deletePlaylist", id=playlist_id)

    async def starred_song_ids(self) -> list[str]:
        """The ids of the songs this user starred (`getStarred2`)."""
        answer = await self.call("getStarred2")
        return [str(song["id"]) for song in (answer.get("starred2") or {}).get("song") or []]


class _Listing:
    """The songs read so far of one listing, bounded: a server that answers full pages for
    ever (or the same page again) is stopped with an error, not followed until memory ends."""

    def __init__(self, max_songs: int) -> None:
        self.max_songs = max_songs
        self.max_pages = max_songs // PAGE_SIZE + 1
        self.seen: set[str] = set()
        self.count = 0

    def add(self, songs: list[dict[str, Any]]) -> None:
        ids = {str(song.get("id")) for song in songs}
        if songs and ids <= self.seen:
            raise SubsonicError(
                f"the server answers songs it listed before (after {self.count}): it ignores"
                " the page offset; stopped reading"
            )
        self.seen |= ids
        self.count += len(songs)
        if self.count > self.max_songs:
            raise self.too_many()

    def too_many(self) -> SubsonicError:
        return SubsonicError(
            f"the server lists more than {self.max_songs} songs; stopped reading. A library"
            " that big needs a larger [subsonic] max_songs"
        )


def _flatten(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Query pairs; a list repeats its key (`songId=1&songId=2`), as the API wants."""
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, str(item)))
    return pairs

"""The Subsonic API, as this plugin uses it: one aiohttp session, one login per server user.

Every call answers the body of `subsonic-response` or raises SubsonicError with words for a
user. Logins: OpenSubsonic `apiKey` when a user has one; else the salted token
(`t=md5(password+salt)&s=salt`, API 1.13); else, with `legacy_login`, `p=enc:<hex>` for
servers that accept no token (supysonic, older Subsonic forks).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

API_VERSION = "1.13.0"  # the first with token login; servers answer older clients alike
CLIENT_NAME = "soundspan"
PAGE_SIZE = 500  # songs or albums per request; what Navidrome and gonic allow at most


NOT_FOUND = 70  # the Subsonic error code for "the requested data was not found"


class SubsonicError(Exception):
    """The server could not be reached, refused a login, or answered with an error (`code`)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


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

    def __init__(self, session: aiohttp.ClientSession, url: str, login: Login) -> None:
        self.session = session
        self.base = url.rstrip("/") + "/rest/"
        self.login = login

    async def call(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """One API call; its answer without the `subsonic-response` wrapper."""
        query = [
            ("v", API_VERSION),
            ("c", CLIENT_NAME),
            ("f", "json"),
            *self.login.params().items(),
            *_flatten(params),
        ]
        where = f"{self.base}{endpoint} as {self.login.name!r}"
        try:
            async with self.session.get(self.base + endpoint, params=query) as answer:
                if answer.status >= 400 and answer.content_type != "application/json":
                    raise SubsonicError(f"{where}: HTTP {answer.status} {answer.reason}")
                body = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            reason = str(error) or type(error).__name__
            raise SubsonicError(f"cannot reach {where}: {reason}") from error
        response = body.get("subsonic-response") if isinstance(body, dict) else None
        if not isinstance(response, dict):
            raise SubsonicError(f"{where}: the answer is not a Subsonic API answer")
        if response.get("status") != "ok":
            error = response.get("error") or {}
            raise SubsonicError(
                f"{where}: the server says {error.get('message', 'failed')}"
                f" (Subsonic error {error.get('code', '?')})",
                error.get("code"),
            )
        return response

    async def ping(self) -> str:
        """Log in; the server's name and API version, e.g. "navidrome 1.16.1"."""
        answer = await self.call("ping")
        return f"{answer.get('type', 'subsonic')} {answer.get('version', '?')}".strip()

    async def songs(self) -> AsyncIterator[dict[str, Any]]:
        """Every song on the server, as `child` objects (id, path, title, artist, album, ...).

        `search3` with an empty query lists the whole library a page at a time (Navidrome,
        supysonic, Airsonic-Advanced); where it lists nothing, albums are walked instead."""
        offset = 0
        while True:
            page = await self.call(
                "search3", query="", songCount=PAGE_SIZE, songOffset=offset, artistCount=0
            )
            songs = (page.get("searchResult3") or {}).get("song") or []
            for song in songs:
                yield song
            if len(songs) < PAGE_SIZE:
                break
            offset += len(songs)
        if offset == 0 and not songs:
            async for song in self._songs_by_album():
                yield song

    async def _songs_by_album(self) -> AsyncIterator[dict[str, Any]]:
        offset = 0
        while True:
            page = await self.call(
                "getAlbumList2", type="alphabeticalByName", size=PAGE_SIZE, offset=offset
            )
            albums = (page.get("albumList2") or {}).get("album") or []
            for album in albums:
                answer = await self.call("getAlbum", id=album["id"])
                for song in (answer.get("album") or {}).get("song") or []:
                    yield song
            if len(albums) < PAGE_SIZE:
                return
            offset += len(albums)

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


def _flatten(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Query pairs; a list repeats its key (`songId=1&songId=2`), as the API wants."""
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, str(item)))
    return pairs

"""The server's ids for our tracks and back, for plugins that answer the server's own clients
(its Instant Mix asks by song id and must get song ids back). Songs come from the matches;
artists from a call to the server, since the matches keep songs only."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.subsonic.client import SubsonicClient, SubsonicError

SERVER_NAME = "subsonic"  # what `server=` names this plugin's server by
SONG_CALLS_AT_ONCE = 8


def is_ours(server: str | None) -> bool:
    """Whether a request for `server` (None: the first one there is) is this plugin's."""
    return server is None or server == SERVER_NAME


async def tracks_for_songs(engine: AsyncEngine, song_ids: list[str]) -> dict[str, str]:
    """Our present track matched to each song; where several are, the first by path."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT DISTINCT ON (m.song_id) m.song_id, m.track_id FROM subsonic_matches m"
                " JOIN library_tracks t ON t.id = m.track_id"
                " WHERE m.song_id = ANY(:ids) ORDER BY m.song_id, t.path"
            ),
            {"ids": list(song_ids)},
        )
        return {song_id: track_id for song_id, track_id in rows}


async def songs_for_tracks(engine: AsyncEngine, track_ids: list[str]) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT track_id, song_id FROM subsonic_matches"
                " WHERE track_id = ANY(:ids) AND song_id IS NOT NULL"
            ),
            {"ids": list(track_ids)},
        )
        return {track_id: song_id for track_id, song_id in rows}


async def artist_name(client: SubsonicClient, artist_id: str) -> str | None:
    """The artist's name (`getArtist`); None where the server says it has no such artist.
    Raises ConnectionError where the server cannot be asked."""
    try:
        answer = await client.call("getArtist", id=artist_id)
    except SubsonicError as error:
        if error.code is None:
            raise ConnectionError(str(error)) from None
        return None  # the server answered: not one of its artists (70, or an id it refuses)
    return (answer.get("artist") or {}).get("name") or None


async def artist_ids(client: SubsonicClient, song_ids: list[str]) -> dict[str, str]:
    """Each song's artist id (`getSong`, a few at once); songs the server refuses are left out.
    Raises ConnectionError where the server cannot be asked."""
    calls = asyncio.Semaphore(SONG_CALLS_AT_ONCE)

    async def artist_of(song_id: str) -> str | None:
        async with calls:
            try:
                answer = await client.call("getSong", id=song_id)
            except SubsonicError as error:
                if error.code is None:
                    raise ConnectionError(str(error)) from None
                return None
        artist = (answer.get("song") or {}).get("artistId")
        return str(artist) if artist is not None else None

    found = await asyncio.gather(*(artist_of(song_id) for song_id in dict.fromkeys(song_ids)))
    return {
        song_id: artist
        for song_id, artist in zip(dict.fromkeys(song_ids), found, strict=True)
        if artist is not None
    }

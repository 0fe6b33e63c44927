"""Our playlists on server users' accounts: each (name, user) is one server playlist, created
on the first send and updated in place on every later one, never duplicated.

The song list is complete before the server is touched, and the server gets it in one call,
so a send that fails leaves the playlist on the server as it was.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.subsonic.client import NOT_FOUND, SubsonicClient, SubsonicError


class UnknownServerUser(LookupError):
    """A playlist was meant for a user the settings do not name."""


class NothingToSend(ValueError):
    """None of the playlist's tracks has a song on the server."""


class PlaylistWithdrawn(Exception):
    """The playlist was deleted while its songs were being found: nothing was sent."""


@dataclass(frozen=True)
class SentPlaylist:
    name: str
    server_user: str
    playlist_id: str
    created: bool  # False: the songs of the one sent before were replaced
    songs: int
    unmatched: int  # tracks left out: the server has no song for them

    def answer(self) -> dict:
        return {
            "name": self.name,
            "server_user": self.server_user,
            "playlist_id": self.playlist_id,
            "created": self.created,
            "songs": self.songs,
            "unmatched": self.unmatched,
        }


class PlaylistSender:
    """Sends and deletes our playlists on the server, remembering each one's server id."""

    def __init__(self, engine: AsyncEngine, clients: dict[str, SubsonicClient]) -> None:
        self.engine = engine
        self.clients = clients
        # one send at a time per playlist: two racing first sends would create two
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    def client(self, server_user: str) -> SubsonicClient:
        if server_user not in self.clients:
            raise UnknownServerUser(
                f"no server user {server_user[:100]!r} in [subsonic] users;"
                f" configured: {', '.join(sorted(self.clients)) or 'none'}"
            )
        return self.clients[server_user]

    async def send(
        self,
        name: str,
        server_user: str,
        track_ids: list[str],
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> SentPlaylist:
        """Put these tracks' songs, in order, into our playlist `name` on the user's account.

        Raises UnknownServerUser, NothingToSend, or SubsonicError (nothing changed then), or
        PlaylistWithdrawn when `still_wanted` says no once this playlist's sends are ours."""
        client = self.client(server_user)
        if not track_ids:
            raise NothingToSend(f"the recipe of {name!r} found no tracks; are they analyzed?")
        songs, unmatched = await self.songs_for(track_ids)
        if not songs:
            raise NothingToSend(
                f"none of the {len(track_ids)} track(s) of {name!r} has a song on the server"
                " yet; GET /api/subsonic/unmatched says why"
            )
        async with self._locks[(name, server_user)]:
            if not still_wanted():
                raise PlaylistWithdrawn(f"playlist {name!r} of {server_user!r} was deleted")
            playlist_id = await self._remembered(name, server_user)
            created = playlist_id is None
            if playlist_id is not None:
                try:
                    await client.replace_playlist(playlist_id, songs)
                except SubsonicError as error:
                    if error.code != NOT_FOUND:
                        raise
                    created = True  # deleted on the server: make it again
            if created:
                playlist_id = await client.create_playlist(name, songs)
            assert playlist_id is not None
            sent = SentPlaylist(name, server_user, playlist_id, created, len(songs), unmatched)
            await self._remember(sent)
        return sent

    async def delete(self, name: str, server_user: str) -> bool:
        """Delete our playlist `name` from the user's account; False if none was sent."""
        client = self.client(server_user)
        async with self._locks[(name, server_user)]:
            playlist_id = await self._remembered(name, server_user)
            if playlist_id is None:
                return False
            try:
                await client.delete_playlist(playlist_id)
            except SubsonicError as error:
                if error.code != NOT_FOUND:
                    raise  # keep the record: a later delete can still find it
            async with self.engine.begin() as connection:
                await connection.execute(
                    text(
                        "DELETE FROM subsonic_playlists WHERE name = :name AND server_user = :user"
                    ),
                    {"name": name, "user": server_user},
                )
        return True

    async def songs_for(self, track_ids: list[str]) -> tuple[list[str], int]:
        """The server's songs for these tracks, in order, each once; and how many tracks have
        none. A track without a match of its own takes the song of an identical file's."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT (SELECT m.song_id FROM recorded_tracks t"
                    " JOIN library_tracks same ON same.content_id = t.content_id"
                    " JOIN subsonic_matches m ON m.track_id = same.id"
                    " WHERE t.id = w.id AND m.song_id IS NOT NULL"
                    " ORDER BY same.id = t.id DESC, same.path LIMIT 1) AS song_id"
                    " FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS w(id, position)"
                    " ORDER BY w.position"
                ),
                {"ids": track_ids},
            )
            found = [row.song_id for row in rows]
        songs = list(dict.fromkeys(song for song in found if song is not None))
        return songs, found.count(None)

    async def tracks_for(self, song_ids: list[str]) -> list[str]:
        """Our track ids for these server songs, in their order; songs we lack are skipped."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT DISTINCT ON (w.position) m.track_id"
                    " FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY AS w(id, position)"
                    " JOIN subsonic_matches m ON m.song_id = w.id"
                    " JOIN library_tracks t ON t.id = m.track_id"
                    " ORDER BY w.position, t.path"
                ),
                {"ids": song_ids},
            )
            return list(dict.fromkeys(row.track_id for row in rows))

    async def _remembered(self, name: str, server_user: str) -> str | None:
        async with self.engine.connect() as connection:
            return (
                await connection.execute(
                    text(
                        "SELECT playlist_id FROM subsonic_playlists"
                        " WHERE name = :name AND server_user = :user"
                    ),
                    {"name": name, "user": server_user},
                )
            ).scalar()

    async def _remember(self, sent: SentPlaylist) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO subsonic_playlists"
                    " (name, server_user, playlist_id, songs, unmatched, sent_at)"
                    " VALUES (:name, :user, :playlist_id, :songs, :unmatched, :sent_at)"
                    " ON CONFLICT (name, server_user) DO UPDATE SET"
                    " playlist_id = excluded.playlist_id, songs = excluded.songs,"
                    " unmatched = excluded.unmatched, sent_at = excluded.sent_at"
                ),
                {
                    "name": sent.name,
                    "user": sent.server_user,
                    "playlist_id": sent.playlist_id,
                    "songs": sent.songs,
                    "unmatched": sent.unmatched,
                    "sent_at": datetime.now(UTC),
                },
            )

"""A matched server's ids for our tracks and back, for plugins that answer the server's own
clients (its AudioMuse-AI plugin asks by the server's ids and must get them back). Everything
comes from the plugin's match table, artists included: no call to the server.

Which requests are a plugin's: `server="<its name>"`, and `server=None` (the players' plugins
send no `server=`) only where no other music server plugin is enabled to answer it, so a host
that matches a Subsonic server too keeps answering its players with that server's ids.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiohttp import web
from sqlalchemy import text

from soundspan_hooks import HostContext


def is_ours(host: HostContext, server: str | None, name: str) -> bool:
    """Whether a request naming `server` is for the plugin called `name`."""
    if server is not None:
        return server == name
    answering = host.hook.soundspan_server_track_ids.get_hookimpls()
    return all(impl.plugin_name == name for impl in answering)


class MatchedIds:
    """The id hooks' answers of the plugin `name`, from `<name>_matches`, once it has started
    (its coordinator is under `started` in the app; a CLI's host may not start it); None where
    a request is not the plugin's."""

    def __init__(self, name: str, started: web.AppKey[Any]) -> None:
        self.name = name
        self.table = f"{name}_matches"
        self.started = started

    def _answers(self, host: HostContext, server: str | None) -> bool:
        return is_ours(host, server, self.name) and self.started in host.app

    def track_ids(
        self, host: HostContext, server: str | None, song_ids: list[str]
    ) -> Awaitable[dict[str, str]] | None:
        """Our present track matched to each item."""
        sql = (
            f"SELECT m.item_id AS key, m.track_id AS value FROM {self.table} m"
            " JOIN library_tracks t ON t.id = m.track_id WHERE m.item_id = ANY(:ids)"
        )
        return self._pairs(host, sql, song_ids) if self._answers(host, server) else None

    def song_ids(
        self, host: HostContext, server: str | None, track_ids: list[str]
    ) -> Awaitable[dict[str, str]] | None:
        """Each track's item; where several items are one file (two libraries over one folder),
        the first by id."""
        sql = (
            f"SELECT DISTINCT ON (track_id) track_id AS key, item_id AS value FROM {self.table}"
            " WHERE track_id = ANY(:ids) ORDER BY track_id, item_id"
        )
        return self._pairs(host, sql, track_ids) if self._answers(host, server) else None

    def artist_ids(
        self, host: HostContext, server: str | None, song_ids: list[str]
    ) -> Awaitable[dict[str, str]] | None:
        sql = (
            f"SELECT item_id AS key, artist_id AS value FROM {self.table}"
            " WHERE item_id = ANY(:ids) AND artist_id IS NOT NULL"
        )
        return self._pairs(host, sql, song_ids) if self._answers(host, server) else None

    def artist_name(
        self, host: HostContext, server: str | None, artist_id: str
    ) -> Awaitable[str | None] | None:
        """The name of a server's artist that a matched item is by."""
        return self._artist_name(host, artist_id) if self._answers(host, server) else None

    async def _pairs(self, host: HostContext, sql: str, ids: list[str]) -> dict[str, str]:
        async with host.reader.connect() as connection:
            rows = await connection.execute(text(sql), {"ids": list(ids)})
            return {key: value for key, value in rows}

    async def _artist_name(self, host: HostContext, artist_id: str) -> str | None:
        async with host.reader.connect() as connection:
            return await connection.scalar(
                text(
                    f"SELECT artist_name FROM {self.table} WHERE artist_id = :id"
                    " AND artist_name IS NOT NULL LIMIT 1"
                ),
                {"id": artist_id},
            )

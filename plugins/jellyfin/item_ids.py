"""Jellyfin's ids for our tracks and back, for plugins that answer Jellyfin's own clients (its
AudioMuse-AI plugin asks by item id and must get item ids back). Everything comes from the
stored matches, artists included (each item's first ArtistItems entry): no call to Jellyfin.

Which requests are ours: `server="jellyfin"`, and `server=None` (the players' plugins send no
`server=`) only where no other music server plugin is enabled to answer it, so a host that
matches a Subsonic server too keeps answering its players with that server's ids as before.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import HostContext

SERVER_NAME = "jellyfin"  # what `server=` names this plugin's server by


def is_ours(host: HostContext, server: str | None) -> bool:
    if server is not None:
        return server == SERVER_NAME
    answering = host.hook.soundspan_server_track_ids.get_hookimpls()
    return all(impl.plugin_name == SERVER_NAME for impl in answering)


async def tracks_for_items(engine: AsyncEngine, item_ids: list[str]) -> dict[str, str]:
    """Our present track matched to each item."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT m.item_id, m.track_id FROM jellyfin_matches m"
                " JOIN library_tracks t ON t.id = m.track_id WHERE m.item_id = ANY(:ids)"
            ),
            {"ids": list(item_ids)},
        )
        return {row.item_id: row.track_id for row in rows}


async def items_for_tracks(engine: AsyncEngine, track_ids: list[str]) -> dict[str, str]:
    """Each track's item; where several items are one file (two libraries over one folder),
    the first by id."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT DISTINCT ON (track_id) track_id, item_id FROM jellyfin_matches"
                " WHERE track_id = ANY(:ids) ORDER BY track_id, item_id"
            ),
            {"ids": list(track_ids)},
        )
        return {row.track_id: row.item_id for row in rows}


async def artist_name(engine: AsyncEngine, artist_id: str) -> str | None:
    """The name of a Jellyfin artist (a MusicArtist item id) that a matched item is by."""
    async with engine.connect() as connection:
        return await connection.scalar(
            text(
                "SELECT artist_name FROM jellyfin_matches WHERE artist_id = :id"
                " AND artist_name IS NOT NULL LIMIT 1"
            ),
            {"id": artist_id},
        )


async def artist_ids(engine: AsyncEngine, item_ids: list[str]) -> dict[str, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT item_id, artist_id FROM jellyfin_matches"
                " WHERE item_id = ANY(:ids) AND artist_id IS NOT NULL"
            ),
            {"ids": list(item_ids)},
        )
        return {row.item_id: row.artist_id for row in rows}

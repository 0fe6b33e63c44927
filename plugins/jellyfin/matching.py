"""Which Jellyfin item is which of our tracks: by path, through the prefix mapping of
plugins/shared/server_paths.py (Jellyfin reports absolute paths as its container sees them).
Pure: no I/O."""

from __future__ import annotations

from typing import Any

from soundspan_plugins.shared.server_paths import (
    Matching,
    PathMapping,
    ServerItem,
    learnt_mapping,
    match_items,
)

__all__ = ["JellyfinItem", "Matching", "PathMapping", "learnt_mapping", "match_items"]


class JellyfinItem(ServerItem):
    """An audio item as /Items lists it; its artist is its first ArtistItems entry (a
    MusicArtist item's id)."""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> JellyfinItem:
        artists = [a for a in item.get("ArtistItems") or [] if isinstance(a, dict)]
        first = artists[0] if artists else {}
        names = [name for name in item.get("Artists") or [] if isinstance(name, str)]
        path = item.get("Path")
        return cls(
            id=str(item["Id"]),
            path=path if isinstance(path, str) and path else None,
            artist_id=str(first["Id"]) if first.get("Id") else None,
            artist_name=first.get("Name") or (names[0] if names else None)
            or item.get("AlbumArtist") or None,
        )  # fmt: skip

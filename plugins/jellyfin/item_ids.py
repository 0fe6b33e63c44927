"""Jellyfin's ids for our tracks and back, for plugins that answer Jellyfin's own clients (its
AudioMuse-AI plugin asks by item id and must get item ids back), from the stored matches: each
item's artist is its first ArtistItems entry. The queries, and which requests are ours, are
every matched server's (plugins/shared/server_ids.py)."""

from __future__ import annotations

from soundspan_hooks import HostContext
from soundspan_plugins.jellyfin.api import COORDINATOR
from soundspan_plugins.jellyfin.settings import NAME
from soundspan_plugins.shared import server_ids

SERVER_NAME = NAME  # what `server=` names this plugin's server by
IDS = server_ids.MatchedIds(SERVER_NAME, COORDINATOR)


def is_ours(host: HostContext, server: str | None) -> bool:
    return server_ids.is_ours(host, server, SERVER_NAME)

"""Keeps the match table fresh: Jellyfin's audio items listed by `client`, matched by path and
kept by the refresh every matched server has (plugins/shared/server_matches.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.jellyfin.client import JellyfinClient
from soundspan_plugins.jellyfin.matching import JellyfinItem
from soundspan_plugins.jellyfin.settings import NAME, JellyfinSettings
from soundspan_plugins.shared.server_matches import MatchCoordinator

log = logging.getLogger(__name__)


def match_coordinator(
    engine: AsyncEngine, client: JellyfinClient, settings: JellyfinSettings
) -> MatchCoordinator:
    """Refreshes the matches on its schedule, soon after library changes, and on request."""

    async def listing() -> AsyncIterator[JellyfinItem]:
        async for item in client.audio_items():
            yield JellyfinItem.from_json(item)

    return MatchCoordinator(NAME, engine, listing, settings, logger=log)

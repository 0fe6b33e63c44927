"""Keeps the match table fresh: LMS's tracks listed by `client`, matched by the path of their
file:// URL and kept by the refresh every matched server has
(plugins/shared/server_matches.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.lyrion.client import LyrionClient
from soundspan_plugins.lyrion.matching import LyrionTitle
from soundspan_plugins.lyrion.settings import NAME, LyrionSettings
from soundspan_plugins.shared.server_matches import MatchCoordinator, byte_path

log = logging.getLogger(__name__)


def match_coordinator(
    engine: AsyncEngine, client: LyrionClient, settings: LyrionSettings
) -> MatchCoordinator:
    """Refreshes the matches on its schedule, soon after library changes, and on request; our
    paths are read from the file names' bytes, as LMS's URLs carry them."""

    async def listing() -> AsyncIterator[LyrionTitle]:
        async for title in client.titles():
            yield LyrionTitle.from_json(title)

    return MatchCoordinator(NAME, engine, listing, settings, logger=log, our_path=byte_path)

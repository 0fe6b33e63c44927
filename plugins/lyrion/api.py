"""HTTP routes of the lyrion plugin: how the matching stands, and a refresh on request (the
routes every matched server has: plugins/shared/server_status.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from soundspan_plugins.lyrion.settings import NAME
from soundspan_plugins.shared.server_matches import MatchCoordinator
from soundspan_plugins.shared.server_status import MatchStatus, match_openapi, match_routes

COORDINATOR = web.AppKey("soundspan_lyrion", MatchCoordinator)


class LyrionStatus(MatchStatus):
    """How the matching with Lyrion stands; `without_path` counts the tracks whose url is no
    file:// URL (an online service's)."""


routes = match_routes(NAME, COORDINATOR, LyrionStatus)


def openapi_fragment() -> dict[str, Any]:
    return match_openapi(NAME, "Lyrion", LyrionStatus)

"""HTTP routes of the jellyfin plugin: how the matching stands, and a refresh on request
(the routes every matched server has: plugins/shared/server_status.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from soundspan_plugins.jellyfin.settings import NAME
from soundspan_plugins.shared.server_matches import MatchCoordinator
from soundspan_plugins.shared.server_status import MatchStatus, match_openapi, match_routes

COORDINATOR = web.AppKey("soundspan_jellyfin", MatchCoordinator)


class JellyfinStatus(MatchStatus):
    """How the matching with Jellyfin stands."""


routes = match_routes(NAME, COORDINATOR, JellyfinStatus)


def openapi_fragment() -> dict[str, Any]:
    return match_openapi(NAME, "Jellyfin", JellyfinStatus)

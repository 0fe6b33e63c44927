"""The two routes of a plugin that matches a music server by path (jellyfin, lyrion):
`GET /api/<name>/status`, how the matching stands and why the last refresh failed if it did,
and `POST /api/<name>/refresh`, a refresh now; with their OpenAPI fragment."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_hooks.openapi import component_schemas, operation, ref
from soundspan_plugins.shared.server_matches import MatchCoordinator
from soundspan_plugins.shared.server_paths import readable


class PathMappingShown(BaseModel):
    server_path_prefix: str
    library_path_prefix: str
    learnt: bool = Field(description="Learnt from the paths (no prefix set), not set.")


class MatchRefreshState(BaseModel):
    """Where a music server plugin's refreshes of its matches stand (subsonic's status too)."""

    state: Literal["never", "ok", "failed"]
    refreshing: bool
    error: str | None = Field(description="Why the last refresh failed; the matches stay.")
    last_success: datetime | None
    last_attempt: datetime | None
    next_attempt: datetime | None


class MatchStatus(MatchRefreshState):
    """A plugin's status route names a subclass, its schema's name in the document."""

    items_on_server: int | None = Field(description="Tracks the last refresh listed.")
    matched: int = Field(description="Present tracks matched to an item now.")
    path_mapping: PathMappingShown | None = Field(
        description="How the last refresh mapped the server's paths onto ours; null: it found "
        "none (set server_path_prefix)."
    )
    without_path: int = Field(description="Items the server gives no file path for.")
    outside_mapping: int = Field(description="Items whose path is not under the mapping.")
    not_in_library: int = Field(description="Items whose mapped path is none of our tracks.")
    example_unmatched: str | None = Field(description="One unmatched item's path, as the server's.")


def match_routes(
    name: str, coordinator: web.AppKey[MatchCoordinator], status: type[MatchStatus]
) -> web.RouteTableDef:
    """The status and refresh routes of the plugin `name`."""
    routes = web.RouteTableDef()

    @routes.get(f"/api/{name}/status")
    async def match_status(request: web.Request) -> web.Response:
        """How the matching stands, and why the last refresh failed if it did."""
        refresher = request.app[coordinator]
        async with request.app[HOST].engine.connect() as connection:
            matched = await connection.scalar(
                text(
                    f"SELECT count(DISTINCT m.track_id) FROM {refresher.table} m"
                    " JOIN library_tracks t ON t.id = m.track_id"
                )
            )
        last = refresher.last_refresh
        mapping = last.mapping if last else None
        answer = status(
            **refresher.status.shown(),
            items_on_server=last.items if last else None,
            matched=matched,
            path_mapping=PathMappingShown(
                server_path_prefix=readable(mapping.server_prefix),
                library_path_prefix=readable(mapping.library_prefix),
                learnt=last.learnt,
            )
            if last and mapping
            else None,
            without_path=last.without_path if last else 0,
            outside_mapping=last.outside_mapping if last else 0,
            not_in_library=last.not_in_library if last else 0,
            example_unmatched=last.example_unmatched if last else None,
        )
        return web.json_response(text=answer.model_dump_json())

    @routes.post(f"/api/{name}/refresh")
    async def refresh(request: web.Request) -> web.Response:
        """Match again now, in the background; the status route tells how it went."""
        request.app[coordinator].refresh_soon()
        return web.json_response({"refresh": "started"}, status=202)

    return routes


def match_openapi(name: str, server: str, status: type[MatchStatus]) -> dict[str, Any]:
    """The routes' fragment; `server` is the server's name for people (e.g. "Jellyfin")."""
    refresh_answer = {
        "type": "object",
        "required": ["refresh"],
        "properties": {"refresh": {"enum": ["started"]}},
    }
    return {
        "paths": {
            f"/api/{name}/status": {
                "get": operation(
                    f"Matching with {server}: state, counts, path mapping, last error",
                    {200: ref(status)},
                )
            },
            f"/api/{name}/refresh": {
                "post": operation(f"Match with {server} again now", {202: refresh_answer})
            },
        },
        "schemas": component_schemas(status),
    }

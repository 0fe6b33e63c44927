"""HTTP routes of the jellyfin plugin: how the matching stands, and a refresh on request."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_hooks.openapi import component_schemas, operation, ref
from soundspan_plugins.jellyfin.coordinator import MatchCoordinator

COORDINATOR = web.AppKey("soundspan_jellyfin", MatchCoordinator)
routes = web.RouteTableDef()


class PathMappingShown(BaseModel):
    server_path_prefix: str
    library_path_prefix: str
    learnt: bool = Field(description="Learnt from the paths (no prefix set), not set.")


class JellyfinStatus(BaseModel):
    state: Literal["never", "ok", "failed"]
    refreshing: bool
    error: str | None = Field(description="Why the last refresh failed; the matches stay.")
    last_success: datetime | None
    last_attempt: datetime | None
    next_attempt: datetime | None
    items_on_server: int | None = Field(description="Audio items the last refresh listed.")
    matched: int = Field(description="Present tracks matched to an item now.")
    path_mapping: PathMappingShown | None = Field(
        description="How the last refresh mapped Jellyfin's paths onto ours; null: it found "
        "none (set server_path_prefix)."
    )
    without_path: int = Field(description="Items Jellyfin reports no path for.")
    outside_mapping: int = Field(description="Items whose path is not under the mapping.")
    not_in_library: int = Field(description="Items whose mapped path is none of our tracks.")
    example_unmatched: str | None = Field(description="One unmatched item's path, as Jellyfin's.")


@routes.get("/api/jellyfin/status")
async def match_status(request: web.Request) -> web.Response:
    """How the matching with Jellyfin stands, and why the last refresh failed if it did."""
    coordinator = request.app[COORDINATOR]
    async with request.app[HOST].engine.connect() as connection:
        matched = await connection.scalar(
            text(
                "SELECT count(DISTINCT m.track_id) FROM jellyfin_matches m"
                " JOIN library_tracks t ON t.id = m.track_id"
            )
        )
    last = coordinator.last_refresh
    mapping = last.mapping if last else None
    answer = JellyfinStatus(
        **coordinator.status.shown(),
        items_on_server=last.items if last else None,
        matched=matched,
        path_mapping=PathMappingShown(
            server_path_prefix=mapping.server_prefix,
            library_path_prefix=mapping.library_prefix,
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


@routes.post("/api/jellyfin/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Match again now, in the background; GET /api/jellyfin/status tells how it went."""
    request.app[COORDINATOR].refresh_soon()
    return web.json_response({"refresh": "started"}, status=202)


def openapi_fragment() -> dict[str, Any]:
    refresh_answer = {
        "type": "object",
        "required": ["refresh"],
        "properties": {"refresh": {"enum": ["started"]}},
    }
    return {
        "paths": {
            "/api/jellyfin/status": {
                "get": operation(
                    "Matching with Jellyfin: state, counts, path mapping, last error",
                    {200: ref(JellyfinStatus)},
                )
            },
            "/api/jellyfin/refresh": {
                "post": operation("Match with Jellyfin again now", {202: refresh_answer})
            },
        },
        "schemas": component_schemas(JellyfinStatus),
    }

"""HTTP routes of the subsonic plugin: the refresh's status, the unmatched tracks and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_hooks.openapi import Track, component_schemas, operation, parse, ref, track_json
from soundspan_plugins.shared.server_status import MatchRefreshState
from soundspan_plugins.subsonic.coordinator import MatchCoordinator
from soundspan_plugins.subsonic.playlists_api import PLAYLISTS, SENDER

COORDINATOR = web.AppKey("soundspan_subsonic", MatchCoordinator)
routes = web.RouteTableDef()


class UnmatchedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=10_000_000)


class UnmatchedTrack(BaseModel):
    track: Track
    reason: str
    checked_at: datetime


class UnmatchedAnswer(BaseModel):
    total: int
    tracks: list[UnmatchedTrack]


class BackgroundTask(BaseModel):
    name: str
    crashes: int = Field(description="Times it died of an error and was restarted.")
    last_crash: str | None


class MatchStatus(MatchRefreshState):
    songs_on_server: int | None
    tracks_checked: int
    matched: dict[str, int] = Field(
        description="Matched tracks by method: path, musicbrainz, tags."
    )
    unmatched: int
    not_checked: int = Field(description="Present tracks no refresh has looked at yet.")
    server_users: list[str] = Field(description="Who playlists can be sent to.")
    background: list[BackgroundTask] = Field(description="The refreshers, and their crashes.")


@routes.get("/api/subsonic/status")
async def match_status(request: web.Request) -> web.Response:
    """How the matching with the server stands, and why the last refresh failed if it did."""
    coordinator = request.app[COORDINATOR]
    status = coordinator.status
    async with request.app[HOST].engine.connect() as connection:
        counts = {
            row.kind: row.tracks
            for row in await connection.execute(
                text(
                    "SELECT CASE WHEN m.track_id IS NULL THEN 'not checked'"
                    " WHEN m.song_id IS NULL THEN 'unmatched' ELSE m.method END AS kind,"
                    " count(*) AS tracks FROM library_tracks t LEFT JOIN subsonic_matches m"
                    " ON m.track_id = t.id GROUP BY 1"
                )
            )
        }
    unmatched = counts.pop("unmatched", 0)
    not_checked = counts.pop("not checked", 0)
    last = coordinator.last_refresh
    answer = MatchStatus(
        **status.shown(),
        songs_on_server=last.songs_on_server if last else None,
        tracks_checked=last.tracks_checked if last else 0,
        matched=counts,
        unmatched=unmatched,
        not_checked=not_checked,
        server_users=sorted(request.app[SENDER].clients),
        background=[coordinator.background(), request.app[PLAYLISTS].background()],
    )
    return web.json_response(text=answer.model_dump_json())


@routes.get("/api/subsonic/unmatched")
async def unmatched_tracks(request: web.Request) -> web.Response:
    """Present tracks the server has no song for, each with the reason, by path."""
    query = parse(UnmatchedQuery, dict(request.query))
    async with request.app[HOST].engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT t.id, t.path, t.title, t.artist, t.album, t.duration, m.reason,"
                    " m.checked_at, count(*) OVER () AS total FROM subsonic_matches m"
                    " JOIN library_tracks t ON t.id = m.track_id WHERE m.song_id IS NULL"
                    " ORDER BY t.path LIMIT :limit OFFSET :offset"
                ),
                {"limit": query.limit, "offset": query.offset},
            )
        ).all()
    answer = UnmatchedAnswer(
        total=rows[0].total if rows else 0,
        tracks=[
            UnmatchedTrack(track=track_json(row), reason=row.reason, checked_at=row.checked_at)
            for row in rows
        ],
    )
    return web.json_response(text=answer.model_dump_json())


@routes.post("/api/subsonic/refresh")
async def refresh(request: web.Request) -> web.Response:
    """Match again now, in the background; GET /api/subsonic/status tells how it went."""
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
            "/api/subsonic/status": {
                "get": operation(
                    "Matching with the music server: state, counts, last error",
                    {200: ref(MatchStatus)},
                )
            },
            "/api/subsonic/unmatched": {
                "get": operation(
                    "Tracks the music server has no song for, and why",
                    {200: ref(UnmatchedAnswer)},
                    UnmatchedQuery,
                )
            },
            "/api/subsonic/refresh": {
                "post": operation("Match with the music server again now", {202: refresh_answer})
            },
        },
        "schemas": component_schemas(MatchStatus, UnmatchedAnswer),
    }

"""HTTP routes for our playlists on the server: the ones sent and the ones kept fresh, and the
`soundspan_send_playlist` answer that POST /api/playlists (vibe_api) uses with `send_to`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, field_serializer
from sqlalchemy import text

from soundspan_hooks import HOST, HostContext
from soundspan_hooks.openapi import component_schemas, json_body, operation, parse, ref
from soundspan_plugins.subsonic.client import SubsonicError
from soundspan_plugins.subsonic.fresh import (
    DefinedInSettings,
    FreshPlaylist,
    PlaylistCoordinator,
    TooManyPlaylists,
)
from soundspan_plugins.subsonic.sending import NothingToSend, PlaylistSender, UnknownServerUser

SENDER = web.AppKey("soundspan_subsonic_sender", PlaylistSender)
PLAYLISTS = web.AppKey("soundspan_subsonic_playlists", PlaylistCoordinator)
routes = web.RouteTableDef()


class FreshState(BaseModel):
    source: Literal["settings", "api"]
    definition: FreshPlaylist

    @field_serializer("definition")
    def _as_given(self, definition: FreshPlaylist) -> dict[str, Any]:
        return definition.model_dump(mode="json", exclude_none=True, by_alias=True)

    state: Literal["never", "ok", "failed"]
    refreshing: bool
    error: str | None = Field(description="Why the last refresh failed; the server kept the last.")
    last_success: datetime | None
    last_attempt: datetime | None
    next_attempt: datetime | None


class ServerPlaylist(BaseModel):
    name: str
    server_user: str
    playlist_id: str | None = Field(description="The server's id; null until first sent.")
    songs: int | None = Field(description="Songs in the last good send.")
    unmatched: int | None = Field(description="Tracks the last send left out: no song for them.")
    sent_at: datetime | None
    fresh: FreshState | None = Field(description="Only for a playlist kept fresh.")


class UnreadablePlaylist(BaseModel):
    name: str
    server_user: str
    error: str = Field(description="Why its stored definition cannot be read; it is not refreshed.")


class ServerPlaylists(BaseModel):
    playlists: list[ServerPlaylist]
    unreadable: list[UnreadablePlaylist] = Field(
        description="Fresh playlists stored by the API that no longer validate: skipped until"
        " deleted (DELETE .../{server_user}/{name}) and defined again."
    )


async def send_playlist(
    host: HostContext, name: str, track_ids: list[str], destination: dict
) -> dict | None:
    """The answer to `soundspan_send_playlist` for a {"server_user": ...} destination."""
    server_user = destination.get("server_user")
    if not isinstance(server_user, str):
        return None  # a destination some other plugin serves
    sent = await _http_errors(host.app[SENDER].send(name, server_user, track_ids))
    return sent.answer()


async def _http_errors(work) -> Any:
    """Await a sender or coordinator call; its errors as the HTTP answers a client expects."""
    try:
        return await work
    except UnknownServerUser as error:
        raise web.HTTPNotFound(reason=str(error)) from None
    except (NothingToSend, DefinedInSettings, TooManyPlaylists) as error:
        raise web.HTTPConflict(reason=str(error)) from None
    except SubsonicError as error:
        raise web.HTTPBadGateway(reason=str(error)) from None


@routes.get("/api/subsonic/playlists")
async def list_playlists(request: web.Request) -> web.Response:
    """Our playlists on the server: each one sent, and each one kept fresh with its state."""
    coordinator = request.app[PLAYLISTS]
    async with request.app[HOST].engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT name, server_user, playlist_id, songs, unmatched, sent_at"
                " FROM subsonic_playlists"
            )
        )
        sent = {(row.name, row.server_user): row for row in rows}
    answer = []
    for key in sorted(set(sent) | set(coordinator.entries)):
        row, entry = sent.get(key), coordinator.entries.get(key)
        fresh = None
        if entry is not None:
            fresh = FreshState(
                source=entry.source, definition=entry.definition, **entry.status.shown()
            )
        answer.append(
            ServerPlaylist(
                name=key[0],
                server_user=key[1],
                playlist_id=row.playlist_id if row else None,
                songs=row.songs if row else None,
                unmatched=row.unmatched if row else None,
                sent_at=row.sent_at if row else None,
                fresh=fresh,
            )
        )
    unreadable = [
        UnreadablePlaylist(name=name, server_user=user, error=error)
        for (name, user), error in sorted(coordinator.unreadable.items())
    ]
    listed = ServerPlaylists(playlists=answer, unreadable=unreadable)
    return web.json_response(text=listed.model_dump_json())


@routes.post("/api/subsonic/playlists")
async def define_playlist(request: web.Request) -> web.Response:
    """Keep a playlist fresh on a server user's account; its first refresh starts at once."""
    definition = parse(FreshPlaylist, await json_body(request))
    await _http_errors(request.app[PLAYLISTS].define(definition))
    return web.json_response({"name": definition.name, "server_user": definition.user}, status=202)


@routes.delete("/api/subsonic/playlists/{server_user}/{name}")
async def delete_playlist(request: web.Request) -> web.Response:
    """Stop keeping a playlist fresh and delete it from the server (`?keep_on_server=true`
    only stops the refreshes)."""
    key = (request.match_info["name"], request.match_info["server_user"])
    keep = request.query.get("keep_on_server", "false") == "true"
    coordinator, sender = request.app[PLAYLISTS], request.app[SENDER]
    if key in coordinator.entries or key in coordinator.unreadable:
        await _http_errors(coordinator.forget(key))
        was_fresh = True
    else:
        was_fresh = False
    deleted = False if keep else await _http_errors(sender.delete(*key))
    if not (was_fresh or deleted):
        raise web.HTTPNotFound(reason=f"no playlist {key[0][:100]!r} sent to {key[1][:100]!r}")
    return web.json_response({"fresh_removed": was_fresh, "deleted_on_server": deleted})


@routes.post("/api/subsonic/playlists/refresh")
async def refresh_playlists(request: web.Request) -> web.Response:
    """Refresh every fresh playlist now, in the background; GET tells how it went."""
    request.app[PLAYLISTS].refresh_soon()
    return web.json_response({"refresh": "started"}, status=202)


def openapi_fragment() -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    started = {"type": "object", "properties": {"refresh": {"enum": ["started"]}}}
    defined = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "server_user": {"type": "string"}},
    }
    deleted = {
        "type": "object",
        "properties": {
            "fresh_removed": {"type": "boolean"},
            "deleted_on_server": {"type": "boolean"},
        },
    }
    return {
        "paths": {
            "/api/subsonic/playlists": {
                "get": operation(
                    "Our playlists on the music server, sent and kept fresh",
                    {200: ref(ServerPlaylists)},
                ),
                "post": operation(
                    "Keep a playlist fresh on a server user's account",
                    {202: defined, 404: error, 409: error},
                    body=FreshPlaylist,
                ),
            },
            "/api/subsonic/playlists/{server_user}/{name}": {
                "delete": operation(
                    "Stop refreshing a playlist and delete it from the server",
                    {200: deleted, 409: error, 502: error},
                    path_parameters=("server_user", "name"),
                )
            },
            "/api/subsonic/playlists/refresh": {
                "post": operation("Refresh every fresh playlist now", {202: started})
            },
        },
        "schemas": component_schemas(ServerPlaylists, FreshPlaylist),
    }

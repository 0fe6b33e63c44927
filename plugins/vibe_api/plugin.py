"""The vibe_api plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from soundspan_hooks import Check, HostContext, SettingsSection, hookimpl
from soundspan_hooks.openapi import parse
from soundspan_plugins.vibe_api import ranked
from soundspan_plugins.vibe_api.api import MAPS, playlist_track_ids, routes
from soundspan_plugins.vibe_api.doctor import doctor_checks
from soundspan_plugins.vibe_api.exclusions import library_excluded
from soundspan_plugins.vibe_api.schema import PlaylistRecipe, openapi_fragment
from soundspan_plugins.vibe_api.settings import NAME, VibeApiSettings, settings_of
from soundspan_plugins.vibe_api.vibe_map import LibraryMaps, refreshing


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, VibeApiSettings)


@hookimpl
def soundspan_lifespan(host: HostContext) -> contextlib.AbstractAsyncContextManager[Any]:
    settings = settings_of(host)
    maps = LibraryMaps(
        host, settings.map_projection, settings.map_refresh_seconds, settings.exclusions
    )
    host.app[MAPS] = maps
    return refreshing(maps)


@hookimpl
def soundspan_result_stored(host: HostContext, analyzer: str, content_id: str) -> None:
    if MAPS in host.app:
        host.app[MAPS].outdate(analyzer)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    return doctor_checks(sections, music_dir)


@hookimpl
def soundspan_playlist_tracks(host: HostContext, recipe: dict) -> Awaitable[list[str]]:
    return playlist_track_ids(host, parse(PlaylistRecipe, recipe))


@hookimpl
def soundspan_similar_tracks(host, track_id, limit, shaped, max_per_artist):
    return ranked.similar_tracks(host, track_id, limit, shaped, max_per_artist)


@hookimpl
def soundspan_track_path(host, start_track_id, end_track_id, length):
    return ranked.track_path(host, start_track_id, end_track_id, length)


@hookimpl
def soundspan_track_mix(host, add, subtract, limit):
    return ranked.track_mix(host, add, subtract, limit)


@hookimpl
def soundspan_library_exclusions(host: HostContext) -> list[Path]:
    return [settings_of(host).playlists_dir]


@hookimpl
def soundspan_routes() -> web.RouteTableDef:
    return routes


@hookimpl
def soundspan_openapi() -> dict:
    return openapi_fragment()


@hookimpl
async def soundspan_status_fields(host: HostContext) -> dict[str, Any]:
    """The exclude rules in force and the present tracks they leave out."""
    return {"excluded": await library_excluded(host.reader, settings_of(host).exclusions)}


@hookimpl
def soundspan_commands(cli) -> None:
    from soundspan_plugins.vibe_api.commands import add_commands  # typer and rich: CLI only

    add_commands(cli)

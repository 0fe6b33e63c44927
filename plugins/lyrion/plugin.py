"""The lyrion plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from soundspan_hooks import Check, HostContext, LibraryEvent, SettingsSection, hookimpl
from soundspan_plugins.lyrion.api import COORDINATOR, openapi_fragment, routes
from soundspan_plugins.lyrion.client import LyrionClient
from soundspan_plugins.lyrion.coordinator import match_coordinator
from soundspan_plugins.lyrion.doctor import server_check
from soundspan_plugins.lyrion.item_ids import IDS
from soundspan_plugins.lyrion.settings import NAME, LyrionSettings
from soundspan_plugins.shared.server_matches import kept_fresh


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, LyrionSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_routes():
    return routes


@hookimpl
def soundspan_openapi() -> dict:
    return openapi_fragment()


@hookimpl
def soundspan_library_event(host: HostContext, event: LibraryEvent) -> None:
    coordinator = host.app.get(COORDINATOR)
    if coordinator is not None:
        coordinator.library_changed()


@hookimpl
def soundspan_server_track_ids(host: HostContext, server, song_ids: list[str]):
    return IDS.track_ids(host, server, song_ids)


@hookimpl
def soundspan_server_song_ids(host: HostContext, server, track_ids: list[str]):
    return IDS.song_ids(host, server, track_ids)


@hookimpl
def soundspan_server_artist_name(host: HostContext, server, artist_id: str):
    return IDS.artist_name(host, server, artist_id)


@hookimpl
def soundspan_server_artist_ids(host: HostContext, server, song_ids: list[str]):
    return IDS.artist_ids(host, server, song_ids)


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _matching(host)


@asynccontextmanager
async def _matching(host: HostContext) -> AsyncIterator[None]:
    settings = host.section(NAME)
    assert isinstance(settings, LyrionSettings)
    async with settings.open_session(settings.login()) as session:
        client = LyrionClient(session, settings.url)
        async with kept_fresh(
            host.app, COORDINATOR, match_coordinator(host.engine, client, settings)
        ):
            yield


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """The server answers and takes the login (`serverstatus`)."""
    return asyncio.run(server_check(sections[NAME]))

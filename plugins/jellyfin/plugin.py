"""The jellyfin plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from soundspan_hooks import Check, HostContext, LibraryEvent, SettingsSection, hookimpl
from soundspan_plugins.jellyfin.api import COORDINATOR, openapi_fragment, routes
from soundspan_plugins.jellyfin.client import JellyfinClient, JellyfinError
from soundspan_plugins.jellyfin.coordinator import match_coordinator
from soundspan_plugins.jellyfin.item_ids import IDS
from soundspan_plugins.jellyfin.settings import NAME, JellyfinSettings
from soundspan_plugins.shared.server_matches import kept_fresh


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, JellyfinSettings)


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
    assert isinstance(settings, JellyfinSettings) and settings.api_key is not None
    async with settings.open_session() as session:
        client = JellyfinClient(
            session, settings.url, settings.api_key.get_secret_value(), settings.user_id
        )
        async with kept_fresh(
            host.app, COORDINATOR, match_coordinator(host.engine, client, settings)
        ):
            yield


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """The API key works (`/System/Info`)."""
    return asyncio.run(_key_check(sections[NAME]))


async def _key_check(settings: JellyfinSettings) -> list[Check]:
    assert settings.api_key is not None
    async with settings.open_session() as session:
        client = JellyfinClient(session, settings.url, settings.api_key.get_secret_value())
        try:
            name = await client.server_name()
        except JellyfinError as error:
            return [Check("jellyfin", "fail", str(error), "check [jellyfin] url and api_key")]
    return [Check("jellyfin", "ok", f"{name} takes the API key")]

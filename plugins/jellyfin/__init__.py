"""Jellyfin's ids: our tracks matched to the audio items of the user's Jellyfin server, by
path, so that its AudioMuse-AI plugin (Instant Mix in every Jellyfin app), which asks by item
id, gets item ids back.

The server's API lives in `client`, the refresh of the matches in `coordinator`, the path
mapping in `matching`; the rest speaks our hooks. Off by default: it needs a URL and an API key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from soundspan_hooks import Check, HostContext, LibraryEvent, SettingsSection, hookimpl
from soundspan_plugins.jellyfin import item_ids
from soundspan_plugins.jellyfin.api import COORDINATOR, openapi_fragment, routes
from soundspan_plugins.jellyfin.client import JellyfinClient, JellyfinError
from soundspan_plugins.jellyfin.coordinator import MatchCoordinator
from soundspan_plugins.jellyfin.matching import PathMapping
from soundspan_plugins.jellyfin.settings import NAME, JellyfinSettings


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
    if _answers_for(host, server):
        return item_ids.tracks_for_items(host.engine, song_ids)
    return None


@hookimpl
def soundspan_server_song_ids(host: HostContext, server, track_ids: list[str]):
    if _answers_for(host, server):
        return item_ids.items_for_tracks(host.engine, track_ids)
    return None


@hookimpl
def soundspan_server_artist_name(host: HostContext, server, artist_id: str):
    if _answers_for(host, server):
        return item_ids.artist_name(host.engine, artist_id)
    return None


@hookimpl
def soundspan_server_artist_ids(host: HostContext, server, song_ids: list[str]):
    if _answers_for(host, server):
        return item_ids.artist_ids(host.engine, song_ids)
    return None


def _answers_for(host: HostContext, server: str | None) -> bool:
    """Whether this plugin answers for `server`, and has started (a CLI's host may not)."""
    return item_ids.is_ours(host, server) and COORDINATOR in host.app


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _matching(host)


def _mapping(settings: JellyfinSettings) -> PathMapping | None:
    """The prefixes set, or None: learnt at each refresh."""
    if settings.server_path_prefix or settings.library_path_prefix:
        return PathMapping(settings.server_path_prefix, settings.library_path_prefix)
    return None


@asynccontextmanager
async def _matching(host: HostContext) -> AsyncIterator[None]:
    settings = host.section(NAME)
    assert isinstance(settings, JellyfinSettings) and settings.api_key is not None
    async with settings.open_session() as session:
        client = JellyfinClient(
            session, settings.url, settings.api_key.get_secret_value(), settings.user_id
        )
        coordinator = MatchCoordinator(
            host.engine,
            client,
            _mapping(settings),
            refresh_seconds=settings.refresh_seconds,
            retry_seconds=settings.retry_seconds,
            change_delay_seconds=settings.change_delay_seconds,
        )
        host.app[COORDINATOR] = coordinator
        coordinator.start()
        try:
            yield
        finally:
            await coordinator.stop()


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

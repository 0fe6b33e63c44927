"""The subsonic plugin's hooks: what the host registers (see __init__.py for the plugin)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from soundspan_hooks import (
    Check,
    HostContext,
    LibraryEvent,
    SettingsSection,
    StatusPanel,
    hookimpl,
)
from soundspan_plugins.subsonic import playlists_api
from soundspan_plugins.subsonic import song_ids as server_ids
from soundspan_plugins.subsonic.api import COORDINATOR, openapi_fragment, routes
from soundspan_plugins.subsonic.client import SubsonicClient
from soundspan_plugins.subsonic.coordinator import MatchCoordinator, Schedule
from soundspan_plugins.subsonic.doctor import login_checks
from soundspan_plugins.subsonic.fresh import PlaylistCoordinator
from soundspan_plugins.subsonic.matching import PathMapping
from soundspan_plugins.subsonic.playlists_api import PLAYLISTS, SENDER, send_playlist
from soundspan_plugins.subsonic.sending import PlaylistSender
from soundspan_plugins.subsonic.settings import NAME, SubsonicSettings


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection(NAME, SubsonicSettings)


@hookimpl
def soundspan_migrations() -> Path:
    return Path(__file__).parent / "migrations"


@hookimpl
def soundspan_routes():
    return [*routes, *playlists_api.routes]


@hookimpl
def soundspan_openapi() -> dict:
    ours, playlists = openapi_fragment(), playlists_api.openapi_fragment()
    return {
        "paths": {**ours["paths"], **playlists["paths"]},
        "schemas": {**ours["schemas"], **playlists["schemas"]},
    }


@hookimpl
def soundspan_library_event(host: HostContext, event: LibraryEvent) -> None:
    coordinator = host.app.get(COORDINATOR)
    if coordinator is not None:
        coordinator.library_changed()


@hookimpl
def soundspan_result_stored(host: HostContext, analyzer: str, content_id: str) -> None:
    playlists = host.app.get(PLAYLISTS)
    if playlists is not None:
        playlists.analyses_landed()


@hookimpl
def soundspan_send_playlist(host: HostContext, name: str, track_ids: list[str], destination: dict):
    return send_playlist(host, name, track_ids, destination)


@hookimpl
def soundspan_server_track_ids(host: HostContext, server, song_ids: list[str]):
    if _answers_for(host, server):
        return server_ids.tracks_for_songs(host.reader, song_ids)
    return None


@hookimpl
def soundspan_server_song_ids(host: HostContext, server, track_ids: list[str]):
    if _answers_for(host, server):
        return server_ids.songs_for_tracks(host.reader, track_ids)
    return None


@hookimpl
def soundspan_server_artist_name(host: HostContext, server, artist_id: str):
    if _answers_for(host, server):
        return server_ids.artist_name(host.app[COORDINATOR].client, artist_id)
    return None


@hookimpl
def soundspan_server_artist_ids(host: HostContext, server, song_ids: list[str]):
    if _answers_for(host, server):
        return server_ids.artist_ids(host.app[COORDINATOR].client, song_ids)
    return None


def _answers_for(host: HostContext, server: str | None) -> bool:
    """Whether this plugin answers for `server`, and has started (a CLI's host may not)."""
    return server_ids.is_ours(server) and COORDINATOR in host.app


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _matching(host)


@asynccontextmanager
async def _matching(host: HostContext) -> AsyncIterator[None]:
    settings = host.section(NAME)
    assert isinstance(settings, SubsonicSettings)
    async with settings.open_session() as session:
        clients = {
            login.name: SubsonicClient(session, settings.url, login, settings.max_songs)
            for login in settings.logins()
        }
        sender = PlaylistSender(host.engine, clients)
        playlists = PlaylistCoordinator(
            host,
            sender,
            settings.playlists,
            settings.retry_seconds,
            settings.playlists_analysis_delay_seconds,
            first_refresh_delay=settings.change_delay_seconds,
            max_per_user=settings.max_fresh_playlists_per_user,
        )
        coordinator = MatchCoordinator(
            host.engine,
            clients[settings.users[0].name],
            PathMapping(settings.server_path_prefix, settings.library_path_prefix),
            Schedule(
                settings.refresh_seconds,
                settings.retry_seconds,
                settings.change_delay_seconds,
                settings.scan_check_seconds,
            ),
            # a host started for one CLI command ends before this: it never calls the server
            first_refresh_delay=settings.change_delay_seconds,
            matches_changed=playlists.matches_changed,
        )
        host.app[COORDINATOR], host.app[SENDER], host.app[PLAYLISTS] = (
            coordinator,
            sender,
            playlists,
        )
        coordinator.start()
        await playlists.start()
        try:
            yield
        finally:
            await playlists.stop()
            await coordinator.stop()


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """Every configured user can log in (`ping`); a legacy login over plain http is warned of."""
    settings: SubsonicSettings = sections[NAME]
    return asyncio.run(login_checks(settings))


@hookimpl
def soundspan_commands(cli) -> None:
    from soundspan_plugins.subsonic.commands import add_commands  # typer and rich: CLI only

    add_commands(cli)


@hookimpl
def soundspan_status_panels() -> list[StatusPanel]:
    return [StatusPanel("send_playlist", "/api/subsonic/status")]  # its server_users

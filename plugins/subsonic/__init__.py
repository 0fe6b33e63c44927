"""Into the player: our tracks matched to the songs of the user's Subsonic server (Navidrome,
gonic, Airsonic, supysonic...), so results can reach the app people already listen with.

The server's API lives in `client`, the refresh of the matches in `coordinator`, playlists
sent to the server in `sending` and the ones kept fresh in `fresh`; the rest speaks our hooks.
Off by default: it needs a server's URL and a user.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from soundspan_hooks import (
    Check,
    HostContext,
    LibraryEvent,
    PluginSettings,
    SettingsSection,
    StatusPanel,
    hookimpl,
)
from soundspan_plugins.subsonic import playlists_api
from soundspan_plugins.subsonic import song_ids as server_ids
from soundspan_plugins.subsonic.api import COORDINATOR, openapi_fragment, routes
from soundspan_plugins.subsonic.client import DEFAULT_MAX_SONGS, Login, SubsonicClient
from soundspan_plugins.subsonic.coordinator import MatchCoordinator, Schedule
from soundspan_plugins.subsonic.doctor import login_checks
from soundspan_plugins.subsonic.fresh import FreshPlaylist, PlaylistCoordinator
from soundspan_plugins.subsonic.matching import PathMapping
from soundspan_plugins.subsonic.playlists_api import PLAYLISTS, SENDER, send_playlist
from soundspan_plugins.subsonic.sending import PlaylistSender

NAME = "subsonic"


class ServerUser(BaseModel):
    """A user of the music server: a password, or an OpenSubsonic API key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    password: SecretStr | None = None
    api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _has_a_secret(self) -> ServerUser:
        if self.password is None and self.api_key is None:
            raise ValueError(f"server user {self.name!r} needs a password or an api_key")
        return self


class SubsonicSettings(PluginSettings):
    enabled: bool = Field(False, description="Match tracks to a Subsonic server's songs.")
    url: str = Field("", description="The server's address, e.g. https://music.example.com.")
    users: list[ServerUser] = Field(
        [],
        description="Server users: {name, password} or {name, api_key}; the first one's view "
        "of the library is matched. Secrets from the environment: "
        'SOUNDSPAN_SUBSONIC__USERS=\'[{name="me", password="..."}]\'.',
    )
    legacy_login: bool = Field(
        False, description="Log in with p=enc:<hex> (servers that accept no token login)."
    )
    verify_tls: bool = Field(True, description="Check the server's TLS certificate.")
    server_path_prefix: str = Field(
        "", description="Where the server's paths differ from ours: the part they start with..."
    )
    library_path_prefix: str = Field(
        "", description="...and what stands for it in paths relative to our music dir."
    )
    refresh_seconds: float = Field(3600.0, gt=0, description="Seconds between match refreshes.")
    retry_seconds: float = Field(
        30.0,
        gt=0,
        description="First retry after a failed refresh, and first new look for tracks just "
        "found without a song; doubles each time.",
    )
    change_delay_seconds: float = Field(
        10.0, ge=0, description="Quiet time after a library change before matches refresh."
    )
    scan_check_seconds: float = Field(
        60.0,
        ge=0,
        description="How often to ask the server whether it scanned (getScanStatus); a scan "
        "that ended matches again. 0: never.",
    )
    timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for one server answer.")
    max_songs: int = Field(
        DEFAULT_MAX_SONGS,
        ge=1,
        description="Most songs read from the server; a listing past this fails (a server "
        "that answers pages for ever).",
    )
    playlists: list[FreshPlaylist] = Field(
        [],
        description="Playlists kept fresh on a server user's account: [[subsonic.playlists]] "
        "name, user, one recipe (search, similar, mix, path, track_ids or starred = true), "
        "limit, refresh_seconds.",
    )
    max_fresh_playlists_per_user: int = Field(
        50, ge=1, description="Most fresh playlists one server user may have (settings and API)."
    )
    playlists_analysis_delay_seconds: float = Field(
        300.0,
        ge=0,
        description="After new analyses land, fresh playlists refresh within this many seconds "
        "(at most once per this while analyses keep landing).",
    )

    @field_validator("url")
    @classmethod
    def _a_web_address(cls, url: str) -> str:
        if url and (URL(url).scheme not in ("http", "https") or not URL(url).host):
            raise ValueError(
                "write the server's address with its scheme, e.g. https://music.example.com"
                " or http://192.168.1.10:4533"
            )
        return url

    @model_validator(mode="after")
    def _reachable(self) -> SubsonicSettings:
        if self.enabled and (not self.url or not self.users):
            raise ValueError("set url and at least one user ([[subsonic.users]] name, password)")
        users = {user.name for user in self.users}
        seen = set()
        for playlist in self.playlists:
            if playlist.user not in users:
                raise ValueError(
                    f"playlist {playlist.name!r} is for user {playlist.user!r}, who is not in "
                    "[[subsonic.users]]"
                )
            if playlist.key in seen:
                raise ValueError(
                    f"playlist {playlist.name!r} of {playlist.user!r} is defined twice"
                )
            seen.add(playlist.key)
        for user in users:
            if sum(p.user == user for p in self.playlists) > self.max_fresh_playlists_per_user:
                raise ValueError(
                    f"more than max_fresh_playlists_per_user ({self.max_fresh_playlists_per_user})"
                    f" playlists for {user!r}"
                )
        return self

    def logins(self) -> list[Login]:
        return [
            Login(
                name=user.name,
                password=user.password.get_secret_value() if user.password else None,
                api_key=user.api_key.get_secret_value() if user.api_key else None,
                legacy=self.legacy_login,
            )
            for user in self.users
        ]

    def open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            connector=aiohttp.TCPConnector(ssl=None if self.verify_tls else False),
        )


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
        return server_ids.tracks_for_songs(host.engine, song_ids)
    return None


@hookimpl
def soundspan_server_song_ids(host: HostContext, server, track_ids: list[str]):
    if _answers_for(host, server):
        return server_ids.songs_for_tracks(host.engine, track_ids)
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

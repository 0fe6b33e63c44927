"""The [subsonic] section: the server, its users, the path mapping and the schedules."""

from __future__ import annotations

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from soundspan_hooks import PluginSettings
from soundspan_plugins.subsonic.client import DEFAULT_MAX_SONGS, Login
from soundspan_plugins.subsonic.fresh import FreshPlaylist

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

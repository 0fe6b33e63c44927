"""The [jellyfin] section: the server, its API key, the path mapping and the schedule."""

from __future__ import annotations

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator
from yarl import URL

from soundspan_hooks import PluginSettings

NAME = "jellyfin"


class JellyfinSettings(PluginSettings):
    enabled: bool = Field(
        False, description="Match tracks to a Jellyfin server's audio items, by path."
    )
    url: str = Field("", description="The server's address, e.g. http://jellyfin:8096.")
    api_key: SecretStr | None = Field(
        None,
        description="An API key (Jellyfin's Dashboard, API Keys), sent in the Authorization"
        " header.",
    )
    user_id: str = Field(
        "",
        description="A Jellyfin user's id: match only the items that user sees; empty: every "
        "audio item of the server.",
    )
    server_path_prefix: str = Field(
        "",
        description="The folder Jellyfin's paths start with where ours are relative to the "
        "music dir, e.g. /media/music. Empty (with library_path_prefix empty): learnt, the "
        "folder under which most items' paths are our tracks'.",
    )
    library_path_prefix: str = Field(
        "", description="...and the folder under our music dir that stands for it."
    )
    refresh_seconds: float = Field(3600.0, gt=0, description="Seconds between match refreshes.")
    retry_seconds: float = Field(
        30.0, gt=0, description="First retry after a failed refresh; doubles each time."
    )
    change_delay_seconds: float = Field(
        10.0, ge=0, description="Quiet time after a library change before matches refresh."
    )
    timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for one server answer.")
    verify_tls: bool = Field(True, description="Check the server's TLS certificate.")

    @field_validator("url")
    @classmethod
    def _a_web_address(cls, url: str) -> str:
        if url and (URL(url).scheme not in ("http", "https") or not URL(url).host):
            raise ValueError(
                "write the server's address with its scheme, e.g. http://jellyfin:8096"
            )
        return url

    @model_validator(mode="after")
    def _reachable(self) -> JellyfinSettings:
        if self.enabled and (not self.url or self.api_key is None):
            raise ValueError("set url and api_key (an API key from Jellyfin's Dashboard)")
        return self

    def open_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            connector=aiohttp.TCPConnector(ssl=None if self.verify_tls else False),
        )

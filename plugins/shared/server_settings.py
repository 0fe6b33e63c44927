"""What every plugin that matches a music server by path (jellyfin, lyrion) is told in its
section: the server's address, the path mapping, the refresh schedule and the HTTP limits. A
plugin's section adds its credentials and says what `enabled` and `url` are for it."""

from __future__ import annotations

import aiohttp
from pydantic import Field, field_validator, model_validator
from yarl import URL

from soundspan_hooks import PluginSettings
from soundspan_plugins.shared.server_paths import PathMapping, given_mapping


class MatchedServerSettings(PluginSettings):
    url: str = Field("", description="The server's address, e.g. http://music-server:port.")
    server_path_prefix: str = Field(
        "",
        description="The folder the server's paths start with where ours are relative to the "
        "music dir, e.g. /media/music. Empty (with library_path_prefix empty): learnt, the "
        "folder under which most of the server's paths are our tracks'.",
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
            raise ValueError("write the server's address with its scheme, http:// or https://")
        return url

    @model_validator(mode="after")
    def _reachable(self) -> MatchedServerSettings:
        if self.enabled and not self.url:
            raise ValueError("set url, the server's address")
        return self

    def mapping(self) -> PathMapping | None:
        """The prefixes set, or None: learnt at each refresh."""
        return given_mapping(self.server_path_prefix, self.library_path_prefix)

    def open_session(self, headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
        """The plugin's one session; `headers` go with each request (a login)."""
        return aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            connector=aiohttp.TCPConnector(ssl=None if self.verify_tls else False),
        )

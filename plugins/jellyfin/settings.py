"""The [jellyfin] section: the server and its API key; the path mapping and the schedule are
every matched server's (plugins/shared/server_settings.py)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from soundspan_plugins.shared.server_settings import MatchedServerSettings

NAME = "jellyfin"


class JellyfinSettings(MatchedServerSettings):
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

    @model_validator(mode="after")
    def _reachable(self) -> JellyfinSettings:
        if self.enabled and (not self.url or self.api_key is None):
            raise ValueError("set url and api_key (an API key from Jellyfin's Dashboard)")
        return self

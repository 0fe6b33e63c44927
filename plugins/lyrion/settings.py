"""The [lyrion] section: the server and its optional login; the path mapping and the schedule
are every matched server's (plugins/shared/server_settings.py)."""

from __future__ import annotations

import aiohttp
from pydantic import Field, SecretStr, model_validator

from soundspan_plugins.shared.server_settings import MatchedServerSettings

NAME = "lyrion"


class LyrionSettings(MatchedServerSettings):
    enabled: bool = Field(
        False,
        description="Match tracks to a Lyrion Music Server's tracks, by the path in their "
        "file:// URL.",
    )
    url: str = Field("", description="The server's web address, e.g. http://lyrion:9000.")
    username: str = Field(
        "",
        description="Where LMS is password protected (Settings, Advanced, Security): its user "
        "name, sent with password as HTTP basic auth; empty: no login.",
    )
    password: SecretStr | None = Field(
        None, description="...and its password; from the env: SOUNDSPAN_LYRION__PASSWORD."
    )

    @model_validator(mode="after")
    def _login_whole(self) -> LyrionSettings:
        if bool(self.username) != (self.password is not None):
            raise ValueError("set username and password together, or neither (no login)")
        return self

    def login(self) -> dict[str, str]:
        """The login's header (HTTP basic auth, UTF-8), or none; aiohttp drops it on a
        redirect to another server."""
        if self.password is None:
            return {}
        secret = self.password.get_secret_value()
        return {"Authorization": aiohttp.encode_basic_auth(self.username, secret)}

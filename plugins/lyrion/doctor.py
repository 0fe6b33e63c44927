"""The lyrion plugin's check for `soundspan-host doctor`: the server answers, the login works."""

from __future__ import annotations

from soundspan_hooks import Check
from soundspan_plugins.lyrion.client import LyrionClient, LyrionError
from soundspan_plugins.lyrion.settings import LyrionSettings


async def server_check(settings: LyrionSettings) -> list[Check]:
    async with settings.open_session(settings.login()) as session:
        try:
            name = await LyrionClient(session, settings.url).server_name()
        except LyrionError as error:
            return [Check("lyrion", "fail", str(error), "check [lyrion] url, username, password")]
    return [Check("lyrion", "ok", f"{name} answers")]

"""What `soundspan-host doctor` checks of the music server: each user's login, and a login
that crosses the network readable by anyone on the way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from yarl import URL

from soundspan_hooks import Check
from soundspan_plugins.shared.server_http import url_shown
from soundspan_plugins.subsonic.client import SubsonicClient, SubsonicError

if TYPE_CHECKING:
    from soundspan_plugins.subsonic.settings import SubsonicSettings


async def login_checks(settings: SubsonicSettings) -> list[Check]:
    """One check per server user: does `ping` answer ok with this login? And a warning for a
    legacy login over plain http."""
    checks = _plain_http_checks(settings)
    async with settings.open_session() as session:
        for login in settings.logins():
            name = f"subsonic login {login.name}"
            try:
                server = await SubsonicClient(session, settings.url, login).ping()
            except SubsonicError as error:
                fix = "check [subsonic] url and this user's password or api_key"
                if not settings.legacy_login and login.api_key is None:
                    fix += "; a server without token login needs legacy_login = true"
                checks.append(Check(name, "fail", str(error), fix))
            else:
                checks.append(Check(name, "ok", f"{url_shown(settings.url)}: {server}"))
    return checks


def _plain_http_checks(settings: SubsonicSettings) -> list[Check]:
    # p=enc:<hex> is the password itself, only hex-encoded: over http anyone between reads it
    with_password = [user.name for user in settings.users if user.api_key is None]
    if not settings.legacy_login or not with_password or URL(settings.url).scheme != "http":
        return []
    return [
        Check(
            "subsonic legacy login",
            "warn",
            f"legacy_login sends the password of {', '.join(with_password)} hex-encoded, as"
            f" good as in clear, over plain http to {url_shown(settings.url)}",
            "serve the music server over https (a reverse proxy), or use an api_key; on one"
            " machine or a trusted network this may be acceptable",
        )
    ]

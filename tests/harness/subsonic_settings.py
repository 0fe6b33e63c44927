"""[subsonic] settings for one user, alice, on a server a test runs itself (a hostile one, or a
port nothing listens on): quick to retry, with a password that must never show in a log, an
error or an answer."""

from __future__ import annotations

PASSWORD = "s3cret-pw"


def hostile_settings(url: str, extra: str = "") -> str:
    """[subsonic] on `url` for alice; `extra` lines go in the section."""
    return (
        f'[subsonic]\nenabled = true\nurl = "{url}"\nlegacy_login = true\n'
        "change_delay_seconds = 0.1\nretry_seconds = 0.1\n"
        + extra
        + f'[[subsonic.users]]\nname = "alice"\npassword = "{PASSWORD}"\n'
    )

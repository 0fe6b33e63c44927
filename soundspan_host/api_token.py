"""The API token a host requires: the configured one, else one the host makes in its data dir.

Bound to loopback, the API is still open to every account on the machine, and through it the
user's music server account: so a token is asked for unless the user says those accounts are
trusted (`trust_local_accounts`). A made token is kept in data_dir/api-token (0600): the CLI
run by the same user reads it, the status page asks for it once, and nobody else can read it.
"""

from __future__ import annotations

from pathlib import Path

from soundspan_host.database.embedded_access import read_or_create_secret
from soundspan_host.errors import ConfigError
from soundspan_host.settings import HostSettings, env_name

TOKEN_FILE_NAME = "api-token"


def api_token_file(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE_NAME


def required_api_token(settings: HostSettings, create: bool = True) -> str | None:
    """The token clients must send, or None where the API asks for none. `create`: make the
    data dir's token if it has none yet (a host); else, as a client, read it if it is there."""
    if settings.api_token:
        return settings.api_token
    if settings.trust_local_accounts:
        return None
    path = api_token_file(settings.data_dir)
    try:
        if create:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            return read_or_create_secret(settings.data_dir, TOKEN_FILE_NAME)[0]
        return path.read_text().strip() or None
    except FileNotFoundError:  # no host has run on this data dir: none to send
        return None
    except PermissionError:
        raise ConfigError(
            f"the API token is in {path}, which this account cannot read: run as the host's "
            f"account, or set {env_name('api_token')}"
        ) from None

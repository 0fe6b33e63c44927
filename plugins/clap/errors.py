"""The one error a user meets when CLAP cannot load, and how it names the setting to change."""

from __future__ import annotations


def setting(name: str) -> str:
    """How a user sets a [clap] key, for error messages: `[clap] model (SOUNDSPAN_CLAP__MODEL)`."""
    return f"[clap] {name} (SOUNDSPAN_CLAP__{name.upper()})"


class ClapUnavailable(RuntimeError):
    """No CLAP model can be loaded; the message says why and which setting fixes it."""

    def __init__(self, reason: str, setting_name: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.setting = setting_name

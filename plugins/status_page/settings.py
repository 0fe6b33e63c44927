"""The [status_page] section: how often the page fetches its figures."""

from __future__ import annotations

from pydantic import Field

from soundspan_hooks import PluginSettings

NAME = "status_page"


class StatusPageSettings(PluginSettings):
    refresh_seconds: float = Field(
        5.0, ge=1, description="How often the page fetches analysis progress and failures."
    )
    map_refresh_seconds: float = Field(
        60.0, ge=5, description="How often the page fetches the library map again."
    )

"""The lists themselves come from the plugin that owns the vibe queries (vibe_api), by hook."""

from __future__ import annotations

from typing import Any

from soundspan_hooks import HostContext, RankedTrack
from soundspan_plugins.instant_mix.errors import ApiError


async def vibe_list(host: HostContext, hook_name: str, **kwargs: Any) -> list[RankedTrack]:
    """A ranked list from the hook `hook_name`; a 409 saying what to enable if none answers."""
    answer = getattr(host.hook, hook_name)(host=host, **kwargs)
    if answer is None:
        raise ApiError(409, "no plugin builds similar lists: enable [vibe_api]")
    return await answer

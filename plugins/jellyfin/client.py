"""The Jellyfin API, as this plugin uses it: one aiohttp session, one API key.

The key goes in the `Authorization: MediaBrowser ..., Token="..."` header (Jellyfin 10.11
turns the legacy `X-Emby-Token` header and `api_key` query off by default), never in a URL,
so URLs may be shown. Every call answers the JSON body or raises JellyfinError with words for
a user (plugins/shared/server_http.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from soundspan_plugins.shared.server_http import ServerError, json_answer, paged

CLIENT_NAME = "soundspan"
PAGE_SIZE = 1000  # audio items per request
MAX_ITEMS = 2_000_000  # a server that answers pages for ever is stopped here
REFUSED = {
    401: "the server refuses the API key (HTTP 401); check [jellyfin] api_key (Jellyfin's"
    " Dashboard, API Keys)",
    403: "the API key may not read this (HTTP 403); check [jellyfin] api_key and user_id",
}


class JellyfinError(ServerError):
    """The server could not be reached, refused the key, or answered what we cannot read.
    Its message is safe to keep, show and log."""


class JellyfinClient:
    """Calls with one API key; `session` belongs to whoever opened it (the plugin's lifespan)."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, api_key: str, user_id: str = ""
    ) -> None:
        self.session = session
        self.base = url.rstrip("/")
        self.user_id = user_id
        self.headers = {
            "Authorization": f'MediaBrowser Client="{CLIENT_NAME}", Device="soundspan-host",'
            f' DeviceId="soundspan-host", Version="1", Token="{api_key}"',
            "Accept": "application/json",
        }

    async def get(self, path: str, **params: Any) -> Any:
        """One GET; its JSON body."""
        return await json_answer(
            self.session, "GET", self.base + path, error=JellyfinError, refused=REFUSED,
            section="jellyfin", params=params, headers=self.headers,
        )  # fmt: skip

    async def server_name(self) -> str:
        """`GET /System/Info`: e.g. "jellyfin 10.11.0" (the key works)."""
        info = await self.get("/System/Info")
        if not isinstance(info, dict):
            raise JellyfinError("/System/Info: the answer is not Jellyfin's")
        return f"{info.get('ServerName') or 'jellyfin'} {info.get('Version', '?')}"

    async def audio_items(self) -> AsyncIterator[dict[str, Any]]:
        """Every audio item (Id, Name, Path, Artists, ArtistItems, AlbumArtist, Album, ...), a
        page at a time; only those `user_id` sees where it is set."""
        async for item in paged(
            self._page, page_size=PAGE_SIZE, most=MAX_ITEMS, id_key="Id", error=JellyfinError,
            listing="/Items",
        ):  # fmt: skip
            yield item

    async def _page(self, start: int) -> tuple[list[Any], int | None]:
        params: dict[str, Any] = {
            "IncludeItemTypes": "Audio",
            "Recursive": "true",
            "Fields": "Path",
            "SortBy": "SortName",  # a stable order across pages
            "StartIndex": start,
            "Limit": PAGE_SIZE,
        }
        if self.user_id:
            params["userId"] = self.user_id
        page = await self.get("/Items", **params)
        items = page.get("Items") if isinstance(page, dict) else None
        if not isinstance(items, list):
            raise JellyfinError("/Items: the answer holds no Items list; is this Jellyfin?")
        total = page.get("TotalRecordCount")
        return items, total if isinstance(total, int) else None

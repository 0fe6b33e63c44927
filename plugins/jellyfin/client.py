"""The Jellyfin API, as this plugin uses it: one aiohttp session, one API key.

The key goes in the `Authorization: MediaBrowser ..., Token="..."` header (Jellyfin 10.11
turns the legacy `X-Emby-Token` header and `api_key` query off by default), never in a URL,
so URLs may be shown. Every call answers the JSON body or raises JellyfinError with words for
a user.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

CLIENT_NAME = "soundspan"
PAGE_SIZE = 1000  # audio items per request
MAX_ANSWER_BYTES = 64 * 1024**2  # a page of 1000 items with paths is about 2 MB
MAX_ITEMS = 2_000_000  # a server that answers pages for ever is stopped here
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class JellyfinError(Exception):
    """The server could not be reached, refused the key, or answered what we cannot read.
    Its message is safe to keep, show and log."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(CONTROL.sub(lambda found: repr(found.group())[1:-1], message))
        self.status = status


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
        where = f"{url_shown(self.base)}{path}"
        try:
            async with self.session.get(
                self.base + path, params=params, headers=self.headers
            ) as answer:
                if answer.status == 401:
                    raise JellyfinError(
                        f"{where}: the server refuses the API key (HTTP 401); check [jellyfin]"
                        " api_key (Jellyfin's Dashboard, API Keys)",
                        401,
                    )
                if answer.status == 403:
                    raise JellyfinError(
                        f"{where}: the API key may not read this (HTTP 403); check [jellyfin]"
                        " api_key and user_id",
                        403,
                    )
                if answer.status >= 400:
                    raise JellyfinError(
                        f"{where}: HTTP {answer.status} {answer.reason}", answer.status
                    )
                return json.loads(await _read_capped(answer, where))
        except JellyfinError:
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as error:
            raise JellyfinError(f"cannot reach {where}: {self._why(error)}") from None

    def _why(self, error: BaseException) -> str:
        if isinstance(error, TimeoutError):
            seconds = self.session.timeout.total
            within = f" within {seconds:g} s" if seconds else ""
            return (
                f"no answer{within}; is the server up at this address? A slow server needs a"
                " larger [jellyfin] timeout_seconds"
            )
        if isinstance(error, ValueError) and not isinstance(error, aiohttp.ClientError):
            return "its answer is not JSON; is [jellyfin] url the Jellyfin server's address?"
        if isinstance(error, RecursionError):
            return "its answer is JSON nested too deeply to read"
        return str(error) or type(error).__name__

    async def server_name(self) -> str:
        """`GET /System/Info`: e.g. "jellyfin 10.11.0" (the key works)."""
        info = await self.get("/System/Info")
        if not isinstance(info, dict):
            raise JellyfinError("/System/Info: the answer is not Jellyfin's")
        return f"{info.get('ServerName') or 'jellyfin'} {info.get('Version', '?')}"

    async def audio_items(self) -> AsyncIterator[dict[str, Any]]:
        """Every audio item (Id, Name, Path, Artists, ArtistItems, AlbumArtist, Album, ...), a
        page at a time; only those `user_id` sees where it is set."""
        start, seen = 0, set()
        while True:
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
            ids = {str(item.get("Id")) for item in items if isinstance(item, dict)}
            if items and ids <= seen:
                raise JellyfinError(
                    f"/Items answers items it listed before (after {start}): it ignores"
                    " StartIndex; stopped reading"
                )
            seen |= ids
            for item in items:
                if isinstance(item, dict) and item.get("Id"):
                    yield item
            start += len(items)
            if start > MAX_ITEMS:
                raise JellyfinError(f"/Items lists more than {MAX_ITEMS} audio items; stopped")
            total = page.get("TotalRecordCount")
            if not items or (start >= total if isinstance(total, int) else len(items) < PAGE_SIZE):
                return


async def _read_capped(answer: aiohttp.ClientResponse, where: str) -> bytes:
    chunks, size = [], 0
    async for chunk in answer.content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise JellyfinError(
                f"{where}: the answer is over {MAX_ANSWER_BYTES // 1024**2} MB; stopped reading"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def url_shown(url: str) -> str:
    """A URL as shown: without user, password or query."""
    try:
        return str(URL(url).with_user(None).with_query(None))
    except ValueError:
        return url

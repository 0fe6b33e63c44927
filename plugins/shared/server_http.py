"""One HTTP call to a music server's API, as the plugins that match a server (jellyfin, lyrion)
make it: the JSON body, or the plugin's error with words for a user that are safe to keep,
show and log (no secret, no query string, control characters escaped)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from yarl import URL

MAX_ANSWER_BYTES = 64 * 1024**2  # a page of 1000 tracks with paths is about 2 MB
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ServerError(Exception):
    """The server could not be reached, refused us, or answered what we cannot read. Its
    message is safe to keep, show and log."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(CONTROL.sub(lambda found: repr(found.group())[1:-1], message))
        self.status = status


def url_shown(url: str) -> str:
    """A URL as shown: without user, password or query."""
    try:
        return str(URL(url).with_user(None).with_query(None))
    except ValueError:
        return url


async def json_answer(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    error: type[ServerError],
    refused: dict[int, str],
    section: str,
    **request: Any,
) -> Any:
    """One request's JSON body. `refused`: what a user should do on each HTTP status that says
    we may not (401, 403); `section` names the settings to fix in the other messages."""
    where = url_shown(url)
    try:
        async with session.request(method, url, **request) as answer:
            if answer.status in refused:
                raise error(f"{where}: {refused[answer.status]}", answer.status)
            if answer.status >= 400:
                raise error(f"{where}: HTTP {answer.status} {answer.reason}", answer.status)
            return json.loads(await read_capped(answer, where, error))
    except ServerError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError) as failure:
        why = _why(failure, session, section)
        raise error(f"cannot reach {where}: {why}") from None


async def paged(
    page_at: Callable[[int], Awaitable[tuple[list[Any], int | None]]],
    *,
    page_size: int,
    most: int,
    id_key: str,
    error: type[ServerError],
    listing: str,
) -> AsyncIterator[dict[str, Any]]:
    """Every item of a listing, read a page at a time: `page_at(start)` answers a page and the
    total where the server tells it. A server that ignores the start (the same items again) or
    answers pages for ever is stopped with `error`; items without an id are passed over."""
    start, seen = 0, set()
    while True:
        items, total = await page_at(start)
        ids = {str(item.get(id_key)) for item in items if isinstance(item, dict)}
        if items and ids <= seen:
            raise error(
                f"{listing} answers items it listed before (after {start}): it ignores where a"
                " page starts; stopped reading"
            )
        seen |= ids
        for item in items:
            if isinstance(item, dict) and item.get(id_key) not in (None, ""):
                yield item
        start += len(items)
        if start > most:
            raise error(f"{listing} lists more than {most} items; stopped")
        if not items or (start >= total if total is not None else len(items) < page_size):
            return


def _why(error: BaseException, session: aiohttp.ClientSession, section: str) -> str:
    if isinstance(error, TimeoutError):
        seconds = session.timeout.total
        within = f" within {seconds:g} s" if seconds else ""
        return (
            f"no answer{within}; is the server up at this address? A slow server needs a"
            f" larger [{section}] timeout_seconds"
        )
    if isinstance(error, ValueError) and not isinstance(error, aiohttp.ClientError):
        return f"its answer is not JSON; is [{section}] url the server's address?"
    if isinstance(error, RecursionError):
        return "its answer is JSON nested too deeply to read"
    return str(error) or type(error).__name__


async def read_capped(
    answer: aiohttp.ClientResponse,
    where: str,
    error: Callable[[str], Exception],
    limit: int = MAX_ANSWER_BYTES,
    why_never: str = "",
) -> bytes:
    """The whole body, refused with `error` past `limit` bytes (after decompression);
    `why_never` tells a user why no answer should be that big."""
    chunks, size = [], 0
    async for chunk in answer.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise error(
                f"{where}: the answer is over {limit // 1024**2} MB; stopped reading{why_never}"
            )
        chunks.append(chunk)
    return b"".join(chunks)

"""Lyrion Music Server's JSON-RPC API, as this plugin uses it: LMS's command line (the CLI of
its documentation, HTML/EN/html/docs/cli-api.html) sent as `POST /jsonrpc.js` with
`{"id": 1, "method": "slim.request", "params": ["", [command, ...]]}`; the answer's `result`
holds what the CLI would return, a list as `<name>_loop`. One aiohttp session; its optional
login (HTTP basic auth) is the session's, never in a URL. Every call answers the result or
raises LyrionError with words for a user (plugins/shared/server_http.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from soundspan_plugins.shared.server_http import ServerError, json_answer, paged

PAGE_SIZE = 1000  # tracks per `titles` request
MAX_TRACKS = 2_000_000  # a server that answers pages for ever is stopped here
# the title's id and title come always; u: its url, s: its artist's id, a: its artist
TITLE_TAGS = "tags:usa"
REFUSED = {
    401: "the server asks for a login (HTTP 401); set [lyrion] username and password (LMS's"
    " Settings, Advanced, Security)",
    403: "the server refuses this client (HTTP 403); check LMS's Settings, Advanced, Security"
    " (allowed IP addresses)",
}


class LyrionError(ServerError):
    """The server could not be reached, refused the login, or answered what we cannot read.
    Its message is safe to keep, show and log."""


class LyrionClient:
    """Calls on one session (opened with the login, if any, by the plugin's lifespan)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.endpoint = url.rstrip("/") + "/jsonrpc.js"

    async def request(self, *command: str | int) -> dict[str, Any]:
        """One CLI command, server-wide (no player); its result."""
        body = {"id": 1, "method": "slim.request", "params": ["", list(command)]}
        answer = await json_answer(
            self.session, "POST", self.endpoint, error=LyrionError, refused=REFUSED,
            section="lyrion", json=body,
        )  # fmt: skip
        name = command[0]
        if isinstance(answer, dict) and answer.get("error"):
            why = answer["error"]
            why = why.get("message", why) if isinstance(why, dict) else why
            raise LyrionError(f"/jsonrpc.js: {name} failed: {str(why)[:300]}")
        result = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(result, dict):
            raise LyrionError(f"/jsonrpc.js: {name} answers no result; is this Lyrion?")
        return result

    async def server_name(self) -> str:
        """`serverstatus`: e.g. "Lyrion 9.0.2, 12345 tracks" (it answers, the login works)."""
        status = await self.request("serverstatus", 0, 0)
        songs = status.get("info total songs", "?")
        return f"Lyrion {status.get('version', '?')}, {songs} tracks"

    async def titles(self) -> AsyncIterator[dict[str, Any]]:
        """Every track of the library (`titles`: id, title, url, artist_id, artist), a page at
        a time. A library being scanned lists only part of itself: that is an error, so the
        last good matches stay until the scan ends."""
        async for title in paged(
            self._page, page_size=PAGE_SIZE, most=MAX_TRACKS, id_key="id", error=LyrionError,
            listing="titles",
        ):  # fmt: skip
            yield title

    async def _page(self, start: int) -> tuple[list[Any], int | None]:
        result = await self.request("titles", start, PAGE_SIZE, TITLE_TAGS)
        if result.get("rescan"):
            raise LyrionError(
                "LMS is scanning its library (titles lists part of it): the matches wait for "
                "the scan's end"
            )
        titles = result.get("titles_loop", [])  # no loop at all past the last title
        if not isinstance(titles, list):
            raise LyrionError("titles: the answer's titles_loop is no list; is this Lyrion?")
        count = result.get("count")
        return titles, int(count) if str(count).isdigit() else None

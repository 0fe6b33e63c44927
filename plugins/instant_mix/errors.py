"""Errors as this API's clients read them: `{"error": "..."}` with the status, a string (the
Lyrion mixer shows it; every plugin falls back to its server's next agent on any non-200)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from soundspan_hooks import TrackUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An answer other than 200, with what went wrong for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def answering_errors(handler: Handler) -> Handler:
    """The handler's errors, the host's (a bad query) and the hooks' as `{"error": "..."}`:
    an unknown or unanalyzed seed is a 404, a music server out of reach a 503."""

    @functools.wraps(handler)
    async def answering(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            status, message = error.status, str(error)
        except TrackUnavailable as error:
            status, message = 404, str(error)
        except ConnectionError as error:
            status, message = 503, f"the music server cannot be asked: {error}"
        except web.HTTPException as error:
            if error.status < 400:
                raise
            status, message = error.status, error.reason
        return web.json_response({"error": message}, status=status)

    return answering

"""What every HTTP answer goes through: the API token, and errors as JSON a client can read."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from soundspan_hooks import HOST
from soundspan_host.errors import ConfigError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# orchestrators probe /healthz without credentials; the status page at / is a shell whose
# script fetches every figure from the API, with the token a person types in
OPEN_PATHS = frozenset({"/healthz", "/"})


def check_exposure(host: str, api_token: str | None) -> None:
    """Refuse to serve beyond this machine without a token: anyone who reaches it could use it."""
    if api_token:
        return
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(
        f"host = {host!r} exposes the API beyond this machine; set SOUNDSPAN_API_TOKEN "
        "(clients then send `Authorization: Bearer <token>`), or bind 127.0.0.1"
    )


def json_errors() -> Callable:
    """Answer every error with {"error": {"status", "message"}}; a crash is a logged 500."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return _error(error.status, error.reason, error.headers)
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return _error(500, "internal error; the host's log has the details")

    return middleware


def bearer_token(token: str) -> Callable:
    """Require `Authorization: Bearer <token>` on every path but the open ones.

    A CORS preflight (OPTIONS) is let through: browsers never send credentials with one. A
    request with no Authorization header at all passes where a plugin opens it
    (soundspan_open_without_token: its own routes that change nothing, for clients it trusts)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and request.method != "OPTIONS":
            # aiohttp keeps bytes that are not UTF-8 as surrogates: give them back as bytes
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected) and not _opened_by_a_plugin(request):
                raise web.HTTPUnauthorized(
                    reason="send the API token as `Authorization: Bearer <token>`",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return middleware


def _opened_by_a_plugin(request: web.Request) -> bool:
    """Whether a plugin lets this request pass without a token; never one that brings a
    wrong token (that is a 401 whatever a plugin says)."""
    host = request.app.get(HOST)
    if "Authorization" in request.headers or host is None:
        return False
    return host.hook.soundspan_open_without_token(host=host, request=request) is True


def _error(status: int, message: str, headers=None) -> web.Response:
    kept = {key: value for key, value in (headers or {}).items() if key == "WWW-Authenticate"}
    return web.json_response(
        {"error": {"status": status, "message": message}}, status=status, headers=kept
    )

"""What keeps other web pages out of the API, which listens on a machine where people browse.

A page on any site can send requests to 127.0.0.1 (CSRF), and a name it controls can be made
to resolve to 127.0.0.1 so that the browser lets it read the answers (DNS rebinding). Hence:
the Host must be one of the host's own names (421), a request that changes state must come
from no page or from this host's own (403), a body must be declared JSON (415), which a page
cannot send to another site without the browser asking first (CORS), and CORS is off unless
origins are configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import aiohttp_cors
from aiohttp import web
from yarl import URL

from soundspan_host.middlewares import Handler
from soundspan_host.settings import HostSettings, env_name

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
HEALTH = "/healthz"


def allowed_host_names(settings: HostSettings) -> frozenset[str] | None:
    """The names a request's Host may carry (any port), or None where any name will do.

    Bound to every address (0.0.0.0, ::) the host cannot know the names it is reached by;
    there the API token is required anyway (check_exposure), so with no allowed_hosts
    configured any name is accepted rather than refusing every client but localhost.
    """
    configured = {_bare_name(name) for name in settings.allowed_hosts}
    if "*" in configured or (settings.host in WILDCARD_ADDRESSES and not configured):
        return None
    own = set() if settings.host in WILDCARD_ADDRESSES else {_bare_name(settings.host)}
    return frozenset(LOOPBACK_NAMES | own | configured)


def known_hosts_only(allowed: frozenset[str]) -> Callable:
    """Answer 421 to a Host that is not one of ours: the mark of a DNS-rebinding page."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Host")
        # HTTP/1.0 clients may send no Host, a browser always sends one; orchestrators
        # probe /healthz by address, and all it tells is "ok"
        if given is not None and _host_name(given) not in allowed and request.path != HEALTH:
            raise web.HTTPMisdirectedRequest(
                reason=f"this host does not answer to the name {given[:100]!r}; add it to "
                f"allowed_hosts ({env_name('allowed_hosts')}) to allow it"
            )
        return await handler(request)

    return middleware


def same_origin_changes(trusted_origins: Iterable[str]) -> Callable:
    """Answer 403 to a request that changes state and comes from another site's page.

    Browsers send `Origin` with every POST; the CLI and curl send none and pass. A page
    of this host (the status page) has an Origin whose host:port is the request's Host.
    """
    trusted = frozenset(_origin(origin) for origin in trusted_origins)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in STATE_CHANGING:
            origin = request.headers.get("Origin")
            if origin is None:
                foreign = request.headers.get("Sec-Fetch-Site") == "cross-site"
            else:
                foreign = _origin(origin) not in trusted and not _same_origin(origin, request)
            if foreign:
                raise web.HTTPForbidden(
                    reason="a page of another site may not change anything here; add its "
                    f"origin to cors_origins ({env_name('cors_origins')}) to allow it"
                )
        return await handler(request)

    return middleware


def json_bodies(body_timeout: float) -> Callable:
    """Require bodies to be `application/json` (415), and read them within a deadline (408).

    aiohttp has no timeout for reading a body: a client sending one byte a minute would hold
    its handler forever. The body is read here once (at most client_max_size); handlers'
    request.json() reuses it.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            if request.content_type != JSON:
                raise web.HTTPUnsupportedMediaType(
                    reason=f"send the body as JSON, with `Content-Type: {JSON}`"
                )
            try:
                async with asyncio.timeout(body_timeout):
                    await request.read()
            except TimeoutError:
                raise web.HTTPRequestTimeout(
                    reason=f"the body did not arrive within {body_timeout:g} s "
                    f"({env_name('http_body_timeout')})"
                ) from None
        return await handler(request)

    return middleware


def allow_cross_origin(app: web.Application, origins: Iterable[str]) -> None:
    """CORS for the configured origins on every route now in `app` (add routes first)."""
    options = aiohttp_cors.ResourceOptions(
        allow_headers=("Authorization", "Content-Type"), allow_methods="*", max_age=600
    )
    cors = aiohttp_cors.setup(app, defaults={_origin(origin): options for origin in origins})
    for route in list(app.router.routes()):
        cors.add(route)


def _origin(origin: str) -> str:
    """scheme://host[:port] as browsers send it: lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


def _same_origin(origin: str, request: web.Request) -> bool:
    # the scheme is left out: behind a TLS proxy the page is https and this host plain http
    authority = _origin(origin).partition("://")[2]
    return authority != "" and authority == request.headers.get("Host", "").lower()


def _host_name(host_header: str) -> str | None:
    try:
        return URL(f"http://{host_header}").host
    except ValueError:
        return None


def _bare_name(name: str) -> str:
    return name.strip().strip("[]").lower()

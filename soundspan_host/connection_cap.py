"""A cap on the HTTP connections the host keeps open at once.

aiohttp has none: every client that connects holds a socket, a file descriptor and a task
until it leaves or times out, so enough idle or slow clients leave no room for real ones.
Past the cap a new connection is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import cast

from aiohttp import web

log = logging.getLogger(__name__)


def _overloaded_answer() -> bytes:
    body = json.dumps(
        {"error": {"status": 503, "message": "too many open connections; try again shortly"}}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


OVERLOADED = _overloaded_answer()


class ConnectionCap:
    """A protocol factory for loop.create_server: aiohttp's protocol while below `limit`."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.warned = False

    def __call__(self) -> asyncio.Protocol:
        return _Admission(self)

    def admit(self, transport: asyncio.Transport) -> None:
        # counted here, not in the factory: asyncio may call the factory for a burst of
        # accepted sockets before any of them is connected and counted by aiohttp
        if len(self.server.connections) >= self.limit:
            if not self.warned:
                log.warning(
                    "%d HTTP connections open: refusing more (http_max_connections)", self.limit
                )
                self.warned = True
            transport.write(OVERLOADED)
            transport.close()
            return
        self.warned = False
        handler = self.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)


class _Admission(asyncio.Protocol):
    """Sees a connection first, then hands its transport to aiohttp's protocol (or closes it)."""

    def __init__(self, cap: ConnectionCap) -> None:
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.cap.admit(cast(asyncio.Transport, transport))

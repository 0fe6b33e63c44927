"""How a `soundspan-host` process lives: its logging, its listening socket, and a stop on
SIGINT or SIGTERM that always lets the clean-up run to its end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from aiohttp import web
from pythonjsonlogger.json import JsonFormatter

from soundspan_host.connection_cap import ConnectionCap
from soundspan_host.settings import HostSettings

MAX_REQUEST_LINE = 64 * 1024


def configure_logging(settings: HostSettings) -> None:
    """Plain lines for people, or one JSON object per line (with any `extra` fields) for
    log collectors."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


async def serve_until_stopped(app: web.Application, settings: HostSettings) -> None:
    """Serve until SIGINT or SIGTERM, then always run the app's clean-up to its end.

    aiohttp's run_app cancels its main task on a signal, which can cut the clean-up short
    and leave the embedded PostgreSQL running; here nothing cancels the clean-up. The
    listening socket is the loop's own, so that ConnectionCap sees each connection first.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        # long request lines: a track path in a query string, percent-encoded, can pass 8 KiB
        max_line_size=MAX_REQUEST_LINE,
        # also the deadline for a new connection's first request headers (slow clients)
        keepalive_timeout=settings.http_idle_timeout,
        # how long the rest of a body no handler read (a 401, a 408) is awaited and dropped
        lingering_time=settings.http_body_timeout,
    )
    await runner.setup()
    listening = None
    try:
        assert runner.server is not None  # set up above
        listening = await loop.create_server(
            ConnectionCap(runner.server, settings.http_max_connections),
            settings.host,
            settings.port,
            reuse_address=True,
        )
        # port 0 lets the system pick a free port at bind time: say which one it picked
        bound_port = listening.sockets[0].getsockname()[1]
        logging.getLogger("soundspan_host").info(
            "serving on http://%s:%s", settings.host, bound_port
        )
        await stop.wait()
        logging.getLogger("soundspan_host").info("stopping")
    finally:
        if listening is not None:
            listening.close()
        await runner.cleanup()


async def until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until SIGINT or SIGTERM, then cancel it and let its clean-up finish."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""Waiting for an event with a deadline, without losing a cancellation.

On Python 3.11, `asyncio.wait_for` returns what it awaited when its task is cancelled in the
same turn of the loop as that arrives, and so swallows the cancellation (CPython gh-86296,
fixed in 3.12). A loop that waits with it (an analysis feed waking on a finished job, the
watcher, a coordinator) then goes on after it was stopped, and the host's stop waits for it
forever. `asyncio.timeout` passes the cancellation on.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_until_set(event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set or `seconds` have passed (None: until it is set)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()

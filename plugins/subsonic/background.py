"""Background work that must not stop: a capped back-off, and a loop restarted when it dies
(a task that ended unseen once stopped every refresh until the next start)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from soundspan_plugins.subsonic.client import shown

log = logging.getLogger(__name__)
MAX_DOUBLINGS = 32  # 2 ** failures stays a small float however long a server stays away
FIRST_RESTART_SECONDS, LONGEST_RESTART_SECONDS = 1.0, 300.0  # a background task that died


def back_off(first: float, failures: int, longest: float) -> float:
    """The wait after `failures` failures in a row: `first`, doubling, at most `longest`."""
    return min(first * 2.0 ** min(max(failures - 1, 0), MAX_DOUBLINGS), longest)


class KeptRunning:
    """A background loop that is restarted when it dies of an error, and says so: a logged
    traceback, and its crashes in the status (a silent dead task stops every refresh)."""

    def __init__(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.work = work
        self.crashes = 0
        self.last_crash: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _supervise(self) -> None:
        while True:
            try:
                await self.work()
                return
            except Exception as error:
                self.crashes += 1
                self.last_crash = shown(f"{type(error).__name__}: {error}")[:500]
                delay = back_off(FIRST_RESTART_SECONDS, self.crashes, LONGEST_RESTART_SECONDS)
                log.exception("subsonic: the %s stopped on an error; restarted in %.0f s",
                              self.name, delay)  # fmt: skip
                await asyncio.sleep(delay)

    def shown(self) -> dict[str, object]:
        return {"name": self.name, "crashes": self.crashes, "last_crash": self.last_crash}

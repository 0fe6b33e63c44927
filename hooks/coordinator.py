"""Something kept fresh in the background: one coordinator with its schedule, its retry and its
last good value (the shape of Home Assistant's `DataUpdateCoordinator`), for the host and any
plugin that refreshes something on a schedule or until it works.

A coordinator calls its `refresh` every `interval` seconds (None: only on request), at once
when asked (`request_refresh`), and after a failure again after `retry` seconds, doubling up to
the interval. The last success's value and time stay while refreshes fail, and the status
says why they fail. Its task is restarted when it dies of an error of its own, and says so.

Why ours: the libraries that retry (tenacity, backoff, stamina) retry one call until it works,
with no schedule to return to, no wake-up on request, no last good value and no status; the
schedulers (aiocron, APScheduler) call on a timetable with no back-off or last good value,
and APScheduler is a framework of its own; Home Assistant's coordinator needs Home Assistant.
What we need is this page of asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from soundspan_hooks.waiting import wait_until_set

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_DOUBLINGS = 32  # 2 ** failures stays a small float however long a server stays away
FIRST_RESTART_SECONDS, LONGEST_RESTART_SECONDS = 1.0, 300.0  # a coordinator's task that died


def back_off(first: float, failures: int, longest: float) -> float:
    """The wait after `failures` failures in a row: `first`, doubling, at most `longest`."""
    return min(first * 2.0 ** min(max(failures - 1, 0), MAX_DOUBLINGS), longest)


class Clock:
    """Time as a coordinator reads and waits for it; tests hand it one they move by hand."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        """Until `wake` is set or `seconds` have passed (math.inf: until `wake`)."""
        await wait_until_set(wake, None if math.isinf(seconds) else seconds)


SYSTEM_CLOCK = Clock()


@dataclass
class RefreshStatus:
    """How a coordinator's refreshes went: ok, failed (and why), or never yet."""

    last_success: datetime | None = None
    last_attempt: datetime | None = None
    error: str | None = None  # why the last attempt failed; None after a success
    failures: int = 0  # in a row
    next_attempt: datetime | None = None  # None: only on request
    refreshing: bool = False

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        return "ok" if self.last_success is not None else "never"

    def shown(self) -> dict[str, object]:
        """What status routes show of it."""
        return {
            "state": self.state,
            "refreshing": self.refreshing,
            "error": self.error,
            "last_success": self.last_success,
            "last_attempt": self.last_attempt,
            "next_attempt": self.next_attempt,
        }


class KeptRunning:
    """A background loop that is restarted when it dies of an error, and says so: a logged
    traceback, and its crashes in the status (a silent dead task stops every refresh)."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[None]],
        logger: logging.Logger = log,
        clean: Callable[[str], str] = str,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.name = name
        self.work = work
        self.logger = logger
        self.clean = clean  # what a crash's text may show (a plugin's secrets kept out)
        self.clock = clock
        self.crashes = 0
        self.last_crash: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

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
                self.last_crash = self.clean(f"{type(error).__name__}: {error}")[:500]
                delay = back_off(FIRST_RESTART_SECONDS, self.crashes, LONGEST_RESTART_SECONDS)
                self.logger.exception("the %s stopped on an error; restarted in %.0f s",
                                      self.name, delay)  # fmt: skip
                await self.clock.wait(asyncio.Event(), delay)

    def shown(self) -> dict[str, object]:
        return {"name": self.name, "crashes": self.crashes, "last_crash": self.last_crash}


class RefreshCoordinator(Generic[T]):
    """Calls `refresh` on its schedule and on request, one call at a time, and keeps the last
    value it returned (`data`) and how it went (`status`).

    `interval`: seconds between refreshes that succeed; None refreshes only on request (a
    failure is still retried until one succeeds). It may be changed at any time, as Home
    Assistant's `update_interval` may: it counts from the next refresh's end.
    `retry`: the wait after a first failure, doubled after each one up to `longest_retry`
    (the interval where not given).
    `first_refresh`: seconds from `start()` to the first refresh; None: only on request.
    `failed(error, retry_in)`: logs a failure and answers the reason the status keeps. It is
    called with the failure counted and the status's error still the one before (a reason
    said again may be logged more quietly). Without it, one WARNING line says why.
    `turns`: a lock shared by coordinators that must refresh one at a time.
    """

    def __init__(
        self,
        name: str,
        refresh: Callable[[], Awaitable[T]],
        *,
        logger: logging.Logger,
        interval: float | None,
        retry: float,
        longest_retry: float | None = None,
        first_refresh: float | None = 0.0,
        failed: Callable[[Exception, float], str] | None = None,
        turns: asyncio.Lock | None = None,
        clean: Callable[[str], str] = str,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if longest_retry is None and interval is None:
            raise ValueError("a coordinator refreshed only on request needs a longest_retry")
        self.name = name
        self.refresh = refresh
        self.logger = logger
        self.interval = interval
        self.retry = retry
        self.longest_retry = longest_retry if longest_retry is not None else interval
        self.failed = failed
        self.clean = clean
        self.clock = clock
        self.data: T | None = None  # what the last successful refresh returned
        self.status = RefreshStatus()
        self.task = KeptRunning(name, self._run, logger, clean, clock)
        self._first_refresh = first_refresh
        self._turns = turns
        self._due = math.inf  # clock.monotonic() of the next refresh
        self._wake = asyncio.Event()
        self._closed = False

    def start(self) -> None:
        """Refresh in the background from now on."""
        if self._first_refresh is not None:
            self.request_refresh(self._first_refresh)
        self.task.start()

    async def stop(self) -> None:
        """Stop at once, a refresh in flight cancelled; the last value stays."""
        self._closed = True
        await self.task.stop()

    def close(self) -> None:
        """Refresh no more, without waiting: a wait ends now, a refresh in flight ends by
        itself (cancelled, it might leave half its work done). `stop()` still awaits it."""
        self._closed = True
        if not self.status.refreshing:
            self.task.cancel()

    def request_refresh(self, delay: float = 0.0) -> None:
        """Refresh within `delay` seconds, or when already due if that is sooner. A request
        made during a refresh stands after it, and a request cuts a back-off short: a caller
        that should respect one looks at `status.failures` first."""
        self._due = min(self._due, self.clock.monotonic() + delay)
        self._show_next_attempt()
        self._wake.set()

    async def _run(self) -> None:
        while not self._closed:
            await self._until_due()
            async with self._turns or contextlib.nullcontext():
                if self._closed:  # closed while it waited for its turn
                    return
                await self._refresh_once()

    async def _until_due(self) -> None:
        while True:
            self._wake.clear()
            wait = self._due - self.clock.monotonic()
            if wait <= 0:
                return
            await self.clock.wait(self._wake, wait)

    async def _refresh_once(self) -> None:
        status = self.status
        # not due while it refreshes: a request meanwhile lowers this, and it stands
        self._due = math.inf
        status.last_attempt, status.refreshing = self.clock.now(), True
        try:
            data = await self.refresh()
        except Exception as error:  # whatever failed, the last value stays and it retries
            status.failures += 1
            delay = back_off(self.retry, status.failures, self.longest_retry)
            self._schedule(delay)
            reason = self.clean(str(error)) or type(error).__name__
            try:
                if self.failed is not None:
                    reason = self.failed(error, delay)
                else:
                    self.logger.warning("%s failed (%s); retry in %.0f s", self.name, reason,
                                        delay)  # fmt: skip
            finally:
                status.error = reason
        else:
            self.data = data
            status.last_success, status.error, status.failures = self.clock.now(), None, 0
            self._schedule(self.interval)
        finally:
            status.refreshing = False

    def _schedule(self, delay: float | None) -> None:
        if delay is not None:
            self._due = min(self._due, self.clock.monotonic() + delay)
        self._show_next_attempt()

    def _show_next_attempt(self) -> None:
        wait = self._due - self.clock.monotonic()
        try:
            self.status.next_attempt = (
                None if math.isinf(wait) else self.clock.now() + timedelta(seconds=max(wait, 0))
            )
        except OverflowError:  # a schedule past the year 9999: as good as never
            self.status.next_attempt = None

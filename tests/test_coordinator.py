"""The refresh coordinator (soundspan_hooks.coordinator) on a clock moved by hand: its
back-off, a refresh on request, the last good value kept through failures, and a stop that
cancels. Nothing here sleeps: each step waits for the coordinator to reach its next wait."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest

from soundspan_hooks.coordinator import Clock, RefreshCoordinator, back_off

log = logging.getLogger(__name__)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
STEP_TIMEOUT = 10.0  # a step that takes this long is a hang, not a slow machine


class ManualClock(Clock):
    """Time stands still until `advance`; each wait a coordinator begins is announced, with
    its length, in `waits`."""

    def __init__(self) -> None:
        self.time = 0.0
        self.waits: asyncio.Queue[float] = asyncio.Queue()
        self._moved = asyncio.Event()

    def monotonic(self) -> float:
        return self.time

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.time)

    async def wait(self, wake: asyncio.Event, seconds: float) -> None:
        deadline = self.time + seconds
        self.waits.put_nowait(seconds)
        while self.time < deadline and not wake.is_set():
            moved = self._moved
            waiting = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(moved.wait())]
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for future in waiting:
                    future.cancel()

    def advance(self, seconds: float) -> None:
        self.time += seconds
        self._moved.set()
        self._moved = asyncio.Event()

    async def next_wait(self) -> float:
        """The length of the next wait the coordinator begins (once it has nothing to do)."""
        return await asyncio.wait_for(self.waits.get(), STEP_TIMEOUT)


class Source:
    """What a coordinator refreshes: answers or errors, in order, each call announced."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls: asyncio.Queue[int] = asyncio.Queue()
        self.count = 0

    async def refresh(self) -> object:
        self.count += 1
        self.calls.put_nowait(self.count)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def next_call(self) -> int:
        return await asyncio.wait_for(self.calls.get(), STEP_TIMEOUT)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def coordinator(source: Source, clock: ManualClock, **options) -> RefreshCoordinator:
    options = {"interval": 60.0, "retry": 5.0, **options}
    return RefreshCoordinator("test refresher", source.refresh, logger=log, clock=clock, **options)


async def test_failures_back_off_doubling_from_the_first_retry_up_to_the_interval(clock):
    source = Source(ConnectionError("the server is away"))
    refresher = coordinator(source, clock, interval=60.0, retry=5.0)
    refresher.start()
    try:
        waits = []
        for _ in range(6):
            await source.next_call()
            waits.append(await clock.next_wait())
            clock.advance(waits[-1])
        assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
        assert refresher.status.failures == 6
        assert refresher.status.state == "failed"
        assert refresher.status.error == "the server is away"
    finally:
        await refresher.stop()


async def test_the_status_says_when_the_next_try_is(clock):
    source = Source(ConnectionError("away"), "songs")
    refresher = coordinator(source, clock, interval=60.0, retry=5.0)
    refresher.start()
    try:
        await source.next_call()
        assert await clock.next_wait() == 5.0
        assert refresher.status.next_attempt == EPOCH + timedelta(seconds=5)
        assert refresher.status.last_attempt == EPOCH
        clock.advance(5.0)
        await source.next_call()
        assert await clock.next_wait() == 60.0
        assert refresher.status.next_attempt == EPOCH + timedelta(seconds=65)
        assert refresher.status.last_success == EPOCH + timedelta(seconds=5)
    finally:
        await refresher.stop()


async def test_a_success_ends_the_back_off(clock):
    source = Source(OSError("one"), OSError("two"), "fine", OSError("three"))
    refresher = coordinator(source, clock, interval=60.0, retry=5.0)
    refresher.start()
    try:
        waits = []
        for _ in range(4):
            await source.next_call()
            waits.append(await clock.next_wait())
            clock.advance(waits[-1])
        # after the success: the interval, and a new failure starts again from the first retry
        assert waits == [5.0, 10.0, 60.0, 5.0]
        assert refresher.status.failures == 1
    finally:
        await refresher.stop()


def test_a_thousand_failures_in_a_row_wait_the_longest_and_no_longer():
    assert back_off(5.0, 1_100, 60.0) == 60.0
    assert back_off(5.0, 0, 60.0) == 5.0


async def test_a_request_refreshes_now_and_cuts_a_back_off_short(clock):
    source = Source("first", ConnectionError("away"), "second")
    refresher = coordinator(source, clock, interval=3600.0, retry=600.0)
    refresher.start()
    try:
        await source.next_call()
        assert await clock.next_wait() == 3600.0
        refresher.request_refresh()  # no time passes
        assert await source.next_call() == 2
        assert await clock.next_wait() == 600.0  # the back-off after its failure
        refresher.request_refresh()
        assert await source.next_call() == 3
        assert await clock.next_wait() == 3600.0
        assert refresher.data == "second"
    finally:
        await refresher.stop()


async def test_a_request_with_a_delay_only_ever_brings_the_refresh_closer(clock):
    source = Source("data")
    refresher = coordinator(source, clock, interval=100.0)
    refresher.start()
    try:
        await source.next_call()
        assert await clock.next_wait() == 100.0
        refresher.request_refresh(30.0)
        assert await clock.next_wait() == 30.0
        refresher.request_refresh(50.0)  # later than already due: changes nothing
        assert await clock.next_wait() == 30.0
        clock.advance(30.0)
        assert await source.next_call() == 2
    finally:
        await refresher.stop()


async def test_a_request_made_during_a_refresh_stands_after_it(clock):
    release = asyncio.Event()
    started = asyncio.Event()
    calls = []

    async def slow_refresh() -> int:
        calls.append(1)
        started.set()
        await release.wait()
        return len(calls)

    refresher = RefreshCoordinator(
        "slow", slow_refresh, logger=log, interval=3600.0, retry=5.0, clock=clock
    )
    refresher.start()
    try:
        await asyncio.wait_for(started.wait(), STEP_TIMEOUT)
        assert refresher.status.refreshing
        started.clear()
        refresher.request_refresh()  # the library changed while it read the old one
        release.set()
        await asyncio.wait_for(started.wait(), STEP_TIMEOUT)  # again, with no time passed
        assert len(calls) == 2
    finally:
        await refresher.stop()


async def test_the_last_good_value_stays_while_refreshes_fail(clock):
    source = Source("good", RuntimeError("the database is away"))
    refresher = coordinator(source, clock, interval=60.0, retry=5.0)
    refresher.start()
    try:
        await source.next_call()
        await clock.next_wait()
        good_at = refresher.status.last_success
        for _ in range(3):
            refresher.request_refresh()
            await source.next_call()
            await clock.next_wait()
        assert refresher.data == "good"
        assert refresher.status.last_success == good_at == EPOCH
        assert refresher.status.failures == 3
        assert refresher.status.shown()["state"] == "failed"
        assert refresher.status.shown()["error"] == "the database is away"
    finally:
        await refresher.stop()


async def test_without_an_interval_it_refreshes_on_request_and_retries_until_it_works(clock):
    source = Source(OSError("busy"), OSError("busy"), "done")
    options = {"interval": None, "longest_retry": 300.0, "first_refresh": None}
    refresher = coordinator(source, clock, retry=5.0, **options)
    refresher.start()
    try:
        assert await clock.next_wait() == float("inf")  # nothing until asked
        assert refresher.status.next_attempt is None
        refresher.request_refresh(5.0)
        assert await clock.next_wait() == 5.0
        clock.advance(5.0)
        waits = []
        for _ in range(3):
            await source.next_call()
            waits.append(await clock.next_wait())
            clock.advance(min(waits[-1], 1e9))
        assert waits == [5.0, 10.0, float("inf")]
        assert refresher.data == "done" and refresher.status.next_attempt is None
    finally:
        await refresher.stop()


async def test_the_interval_may_change_and_none_stops_the_schedule(clock):
    source = Source("data")
    refresher = coordinator(source, clock, interval=10.0)
    refresher.start()
    try:
        await source.next_call()
        assert await clock.next_wait() == 10.0
        refresher.interval = None  # e.g. a server that cannot answer this question
        clock.advance(10.0)
        await source.next_call()
        assert await clock.next_wait() == float("inf")
    finally:
        await refresher.stop()


async def test_the_failed_callback_logs_and_names_the_reason(clock):
    heard = []

    def failed(error: Exception, retry_in: float) -> str:
        heard.append((refresher.status.error, refresher.status.failures, retry_in))
        return f"said our way: {error}"

    source = Source(ConnectionError("away"))
    refresher = coordinator(source, clock, retry=5.0, failed=failed)
    refresher.start()
    try:
        for _ in range(2):
            await source.next_call()
            clock.advance(await clock.next_wait())
        # the reason before this failure, the failures counted with it, the wait it set
        assert heard == [(None, 1, 5.0), ("said our way: away", 2, 10.0)]
        assert refresher.status.error == "said our way: away"
    finally:
        await refresher.stop()


async def test_stop_cancels_a_refresh_in_flight_and_keeps_the_value(clock):
    cancelled = asyncio.Event()
    started = asyncio.Event()
    answers = iter(["kept"])

    async def refresh() -> str:
        answer = next(answers, None)
        if answer is not None:
            return answer
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    refresher = RefreshCoordinator(
        "stopped", refresh, logger=log, interval=60.0, retry=5.0, clock=clock
    )
    refresher.start()
    assert await clock.next_wait() == 60.0
    refresher.request_refresh()
    await asyncio.wait_for(started.wait(), STEP_TIMEOUT)
    await asyncio.wait_for(refresher.stop(), STEP_TIMEOUT)
    assert cancelled.is_set()
    assert not refresher.task.running
    assert refresher.data == "kept" and not refresher.status.refreshing


async def test_stop_ends_a_wait(clock):
    refresher = coordinator(Source("data"), clock, interval=60.0)
    refresher.start()
    assert await clock.next_wait() == 60.0
    await asyncio.wait_for(refresher.stop(), STEP_TIMEOUT)
    assert not refresher.task.running


async def test_close_lets_a_refresh_in_flight_end_and_starts_no_other(clock):
    release = asyncio.Event()
    started = asyncio.Event()
    ended = []

    async def refresh() -> str:
        started.set()
        await release.wait()
        ended.append(True)
        return "sent"

    refresher = RefreshCoordinator(
        "closed", refresh, logger=log, interval=60.0, retry=5.0, clock=clock
    )
    refresher.start()
    await asyncio.wait_for(started.wait(), STEP_TIMEOUT)
    refresher.close()
    refresher.request_refresh()  # would refresh again at once, were it open
    release.set()
    await asyncio.wait_for(refresher.stop(), STEP_TIMEOUT)
    assert ended == [True] and refresher.data == "sent"


async def test_coordinators_that_share_turns_refresh_one_at_a_time(clock):
    turns = asyncio.Lock()
    running, most = 0, 0
    release = asyncio.Event()
    done = asyncio.Queue()

    async def refresh() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        done.put_nowait(1)

    refreshers = [
        RefreshCoordinator(
            f"r{n}", refresh, logger=log, interval=60.0, retry=5.0, turns=turns, clock=clock
        )
        for n in range(3)
    ]
    for refresher in refreshers:
        refresher.start()
    try:
        release.set()
        for _ in refreshers:
            await asyncio.wait_for(done.get(), STEP_TIMEOUT)
        assert most == 1
    finally:
        for refresher in refreshers:
            await refresher.stop()


async def test_a_coordinator_whose_own_loop_dies_is_restarted_and_says_so(clock, caplog):
    def broken_callback(error: Exception, retry_in: float) -> str:
        raise OverflowError("int too large to convert to float")

    source = Source(ConnectionError("away"), "fine")
    refresher = coordinator(source, clock, failed=broken_callback)
    refresher.start()
    try:
        await source.next_call()
        assert await clock.next_wait() == 1.0  # the restart's wait, not the refresh's
        clock.advance(1.0)
        assert await clock.next_wait() == 4.0  # the retry the failure had already set
        assert refresher.task.shown() == {
            "name": "test refresher",
            "crashes": 1,
            "last_crash": "OverflowError: int too large to convert to float",
        }
        assert refresher.status.error == "away"
        assert "the test refresher stopped on an error; restarted in 1 s" in caplog.text
    finally:
        await refresher.stop()

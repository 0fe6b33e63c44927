"""Feeds an analyzer from the queue: claim, analyze, store, repeat.

A feed runs in the host, or in a remote worker (`soundspan-host worker`), and hands tracks to
its analyzer, whose worker processes run the model. It survives a database that goes away
and comes back: a claim or a completion that fails is retried after a pause, and a job left
half-done is picked up again when its lease runs out. Nothing here knows what analysis means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from soundspan_hooks import Analyzer, HostContext, TrackFile, UnreadableTrack
from soundspan_hooks.waiting import wait_until_set
from soundspan_host.metrics import Metrics
from soundspan_host.queue import AnalysisQueue, Job, LeaseLost
from soundspan_host.worker_registry import WorkerRegistry

log = logging.getLogger(__name__)

DATABASE_ERRORS = (OSError, DBAPIError, SQLAlchemyError)
# how often a feed refreshes its row in the registry (never more often than it polls):
# well inside worker_registry.WORKER_SEEN_MINUTES, so a live worker never drops out of the status
REGISTRY_REFRESH_SECONDS = 30.0


class AnalysisOverdue(Exception):
    """An analysis ran past its deadline (a hung read or decode, a stalled mount)."""

    def __init__(self, job: Job, deadline: float) -> None:
        audio = (
            f"{job.audio_seconds / 60:.1f} minutes of audio"
            if job.audio_seconds is not None
            else "audio of unknown length"
        )
        super().__init__(
            f"analysis stopped after {deadline:g} s, its deadline for {audio}: the file may "
            "hang its decoder, or sit on a mount that stopped answering"
        )


class FileTrouble(Exception):
    """Reading the track's file failed with an OSError that may pass (moved, EIO, a mount)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class AnalysisFeed:
    """Keeps up to `info.workers` jobs of one analyzer in flight; `info` is the analyzer as
    it described itself when the feed started (its version is the one it claims jobs for)."""

    def __init__(
        self, host: HostContext, queue: AnalysisQueue, analyzer: Analyzer, metrics: Metrics
    ) -> None:
        self.host = host
        self.queue = queue
        self.analyzer = analyzer
        self.info = analyzer.info()
        self.metrics = metrics
        self.wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._versions_waiting: list[str] = []
        self.registry = WorkerRegistry(queue.engine, queue.owner)
        self._registry_refresh_due = 0.0  # time.monotonic() of the next refresh

    def jobs_added(self) -> None:
        """Look at the queue now rather than at the next poll."""
        self.wake.set()

    async def run(self) -> None:
        """Claim and run jobs until cancelled; in-flight jobs are cancelled with it."""
        try:
            while True:
                await self._say_present()
                free = self.info.workers - len(self._in_flight)
                ready = free > 0 and self._analyzer_ready()
                claimed = await self._claim(free) if ready else []
                for job in claimed:
                    task = asyncio.create_task(self._run_job(job))
                    self._in_flight.add(task)
                    task.add_done_callback(self._job_finished)
                if len(claimed) < free or free == 0:
                    await self._wait_for_work()
        finally:
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            with contextlib.suppress(*DATABASE_ERRORS):  # else its row ages out of the registry
                await self.registry.stopped_working(self.info.name)

    async def _say_present(self) -> None:
        """Keep this worker's row in the registry fresh: the host names a worker whose model
        differs from its own, since such a worker takes none of its jobs."""
        now = time.monotonic()
        if now < self._registry_refresh_due:
            return
        try:
            await self.registry.seen_working(self.info.name, self.info.version)
        except DATABASE_ERRORS as error:  # the claim that follows says the queue is away
            log.debug("%s: could not refresh the worker registry (%s)", self.info.name, error)
            return
        self._registry_refresh_due = now + max(self.info.poll_interval, REGISTRY_REFRESH_SECONDS)

    async def _claim(self, free: int) -> list[Job]:
        name, version = self.info.name, self.info.version
        try:
            claimed = await self.queue.claim(name, version, free)
            if not claimed and not self._in_flight:
                await self._say_if_outdated()
            return claimed
        except DATABASE_ERRORS as error:
            log.warning("%s: cannot reach the queue (%s); retrying", name, error)
            return []

    def _analyzer_ready(self) -> bool:
        """An analyzer still fetching or loading its model takes no jobs: they wait for it."""
        return self.analyzer.info().state == "ready"

    async def _say_if_outdated(self) -> None:
        """An idle feed whose model differs from the one the jobs ask for says so, once
        per change: it will take none of them."""
        waiting = await self.queue.versions_waiting(self.info.name, self.info.version)
        if waiting and waiting != self._versions_waiting:
            log.warning(
                "%s: jobs wait for model version %s, and this worker has %s: it takes none of "
                "them; give it the host's model (or restart the host with this one)",
                self.info.name,
                ", ".join(waiting),
                self.info.version,
            )
        self._versions_waiting = waiting

    async def _wait_for_work(self) -> None:
        await wait_until_set(self.wake, self.info.poll_interval)
        self.wake.clear()

    def _job_finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.wake.set()

    async def _run_job(self, job: Job) -> None:
        track = TrackFile(
            content_id=job.content_id,
            path=Path(self.host.music_dir) / job.relative_path,
            relative_path=job.relative_path,
        )
        started = time.monotonic()
        renewing = asyncio.create_task(self._keep_lease(job))
        try:
            await self._analyze_and_store(job, track)
            seconds = time.monotonic() - started
            self.metrics.analysis_finished(job.analyzer, "done", seconds)
            log.info(
                "%s: analyzed %s in %.1f s",
                job.analyzer,
                job.relative_path,
                seconds,
                extra={"analyzer": job.analyzer, "track": job.relative_path, "seconds": seconds},
            )
        except asyncio.CancelledError:
            await self._release(job)  # a clean stop: the next start takes the job up again
            raise
        except LeaseLost as error:
            log.warning("%s", error)
        except AnalysisOverdue as error:
            await self._fail(job, str(error), permanent=False)
        except UnreadableTrack as error:
            await self._fail(job, str(error), permanent=True)
        except FileTrouble as trouble:
            await self._file_trouble(job, trouble.error)
        except DATABASE_ERRORS as error:
            # the lease runs out and the job is claimed again once the database is back
            log.warning("%s: could not store %s (%s)", job.analyzer, job.relative_path, error)
        except Exception as error:  # an analyzer's bug must fail one job, not the feed
            log.exception("%s: analysis of %s failed", job.analyzer, job.relative_path)
            await self._fail(job, f"{type(error).__name__}: {error}", permanent=False)
        finally:
            renewing.cancel()

    async def _analyze_and_store(self, job: Job, track: TrackFile) -> None:
        deadline = self.queue.policy.deadline(job.audio_seconds)
        try:
            # cancelling the analysis stops the worker process running it (asyncio.timeout,
            # not wait_for: see soundspan_hooks.waiting)
            async with asyncio.timeout(deadline):
                result = await self.analyzer.analyze(track)
        except TimeoutError:
            raise AnalysisOverdue(job, deadline) from None
        except OSError as error:  # the file's, not the database's: nothing is stored yet
            raise FileTrouble(error) from error
        await self.queue.complete(job, result)
        await self.host.call(
            "soundspan_result_stored",
            host=self.host,
            analyzer=job.analyzer,
            content_id=job.content_id,
        )

    async def _file_trouble(self, job: Job, error: OSError) -> None:
        """Reading the file failed in a way that may pass: retry, and follow a move at once."""
        if isinstance(error, FileNotFoundError):
            try:
                moved = await self.queue.moved_since_claim(job)
            except DATABASE_ERRORS:
                moved = False
            if moved:
                log.info("%s: %s moved; analyzing it at its new path", job.analyzer, job)
                await self._release(job)
                return
            reason = f"the file vanished before analysis: {job.relative_path}"
        elif isinstance(error, PermissionError):
            reason = f"cannot read {job.relative_path}: permission denied (check owner and mode)"
        else:
            reason = f"cannot read {job.relative_path}: {error.strerror or error}"
        await self._fail(job, reason, permanent=False)

    async def _release(self, job: Job) -> None:
        try:
            await self.queue.release(job)
        except DATABASE_ERRORS as error:  # its lease runs out instead
            log.warning("%s: could not give back %s (%s)", job.analyzer, job.relative_path, error)

    async def _fail(self, job: Job, reason: str, permanent: bool) -> None:
        try:
            final = await self.queue.fail(job, reason, permanent=permanent)
        except DATABASE_ERRORS as error:
            log.warning("%s: could not record failure of %s (%s)", job.analyzer, job, error)
            return
        self.metrics.analysis_finished(job.analyzer, "failed" if final else "retry", 0.0)
        if final:
            log.warning(
                "%s: %s failed: %s",
                job.analyzer,
                job.relative_path,
                reason,
                extra={"analyzer": job.analyzer, "track": job.relative_path, "error": reason},
            )

    async def _keep_lease(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.queue.policy.lease_seconds / 3)
            try:
                if not await self.queue.renew(job):
                    return
            except DATABASE_ERRORS as error:
                log.warning("%s: lease renewal failed (%s)", job.analyzer, error)

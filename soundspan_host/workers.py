"""Feeds an analyzer from the queue: claim, analyze through the hook, store, repeat.

The worker survives a database that goes away and comes back: a claim or a completion that
fails is retried after a pause, and a job left half-done is picked up again when its lease
runs out. Nothing here knows what analysis means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from soundspan_hooks import AnalyzerInfo, HostContext, TrackFile, UnreadableTrack
from soundspan_host.metrics import Metrics
from soundspan_host.queue import AnalysisQueue, Job, LeaseLost

log = logging.getLogger(__name__)

DATABASE_ERRORS = (OSError, DBAPIError, SQLAlchemyError)


class AnalyzerWorker:
    """Keeps up to `analyzer.workers` jobs of one analyzer in flight."""

    def __init__(
        self, host: HostContext, queue: AnalysisQueue, analyzer: AnalyzerInfo, metrics: Metrics
    ) -> None:
        self.host = host
        self.queue = queue
        self.analyzer = analyzer
        self.metrics = metrics
        self.wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def jobs_added(self) -> None:
        """Look at the queue now rather than at the next poll."""
        self.wake.set()

    async def run(self) -> None:
        """Claim and run jobs until cancelled; in-flight jobs are cancelled with it."""
        try:
            while True:
                free = self.analyzer.workers - len(self._in_flight)
                claimed = await self._claim(free) if free > 0 else []
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

    async def _claim(self, free: int) -> list[Job]:
        try:
            return await self.queue.claim(self.analyzer.name, free)
        except DATABASE_ERRORS as error:
            log.warning("%s: cannot reach the queue (%s); retrying", self.analyzer.name, error)
            return []

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self.analyzer.poll_interval)
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
            store = self.host.hook.soundspan_analyze_track(
                host=self.host, analyzer=job.analyzer, track=track
            )
            if store is None:
                raise UnreadableTrack(f"no enabled plugin analyzes with {job.analyzer!r}")
            await self.queue.complete(job, await store)
            await self.host.call(
                "soundspan_result_stored",
                host=self.host,
                analyzer=job.analyzer,
                content_id=job.content_id,
            )
            seconds = time.monotonic() - started
            self.metrics.analysis_finished(job.analyzer, "done", seconds)
            log.info(
                "%s: analyzed %s in %.1f s",
                job.analyzer,
                job.relative_path,
                seconds,
                extra={"analyzer": job.analyzer, "track": job.relative_path, "seconds": seconds},
            )
        except LeaseLost as error:
            log.warning("%s", error)
        except UnreadableTrack as error:
            await self._fail(job, str(error), permanent=True)
        except FileNotFoundError:
            await self._fail(job, f"file vanished before analysis: {job.relative_path}", False)
        except PermissionError:
            reason = f"cannot read {job.relative_path}: permission denied (check owner and mode)"
            await self._fail(job, reason, permanent=False)
        except DATABASE_ERRORS as error:
            # the lease runs out and the job is claimed again once the database is back
            log.warning("%s: could not store %s (%s)", job.analyzer, job.relative_path, error)
        except Exception as error:  # an analyzer's bug must fail one job, not the worker
            log.exception("%s: analysis of %s failed", job.analyzer, job.relative_path)
            await self._fail(job, f"{type(error).__name__}: {error}", permanent=False)
        finally:
            renewing.cancel()

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

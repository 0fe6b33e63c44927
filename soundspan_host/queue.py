"""The durable analysis queue in PostgreSQL: one job per (content, analyzer), leases, retries.

A worker claims jobs with FOR UPDATE SKIP LOCKED and holds each under a lease it renews while
it works. A job whose worker died (kill -9, out of memory, power cut) is claimed again once
its lease runs out. A result is stored in the same transaction that marks its job done, and
only while the worker still holds the lease, so each result is stored exactly once.

We keep this queue ourselves rather than use procrastinate: procrastinate needs psycopg beside
asyncpg, keeps its schema outside our migrations, stops its worker on a lost connection, and
cannot complete a job in the transaction that stores the result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import StoreResult
from soundspan_host.library_writes import PRIORITY_NEW_FILE, PRIORITY_REANALYSIS


class LeaseLost(Exception):
    """Another worker took the job over (our lease ran out); our result must not be stored."""


@dataclass(frozen=True)
class QueuePolicy:
    lease_seconds: float = 60.0
    max_attempts: int = 3
    retry_delay_seconds: float = 30.0  # doubled after each failed attempt
    deadline_seconds: float = 300.0  # every analysis gets this much, plus ...
    deadline_seconds_per_audio_minute: float = 60.0  # ... this per minute of audio

    def deadline(self, audio_seconds: float | None) -> float:
        """Seconds an analysis of this much audio may take before its worker is stopped.

        A length the tags don't give, or a header's absurd one (a WAV declaring terabytes),
        counts as DEADLINE_AUDIO_CAP_MINUTES: a slow analysis of a real long mix still ends,
        and a read that hangs ends too.
        """
        minutes = DEADLINE_AUDIO_CAP_MINUTES
        if audio_seconds is not None and audio_seconds >= 0:
            minutes = min(audio_seconds / 60, DEADLINE_AUDIO_CAP_MINUTES)
        return self.deadline_seconds + self.deadline_seconds_per_audio_minute * minutes


DEADLINE_AUDIO_CAP_MINUTES = 180.0

# why a job waits, as the status shows it (a model update names its versions)
NEW_ANALYZER = "new analyzer"
NO_RESULT_YET = "no result yet (added while the analyzer was off)"
RETRY_AFTER_FAILURE = "retry after a failed attempt"
RETRIED_BY_HAND = "retried by hand"


@dataclass(frozen=True)
class Job:
    """A claimed job: which content, analyzed by whom, found at which path."""

    content_id: str
    analyzer: str
    version: str
    attempts: int
    relative_path: str
    audio_seconds: float | None = None  # as the tags say; sets the analysis's deadline


class AnalysisQueue:
    """Claims, renews, completes and fails analysis jobs for one worker identity."""

    def __init__(self, engine: AsyncEngine, policy: QueuePolicy, owner: str | None = None) -> None:
        self.engine = engine
        self.policy = policy
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"

    async def requeue_outdated(
        self, analyzer_versions: Mapping[str, str]
    ) -> dict[str, tuple[int, list[str]]]:
        """Queue every present content an analyzer lacks or analyzed with another version;
        per analyzer, the jobs queued and the versions they replace.

        These jobs rank behind new files, so fresh additions are analyzed first. Results
        stay until their replacements are stored, so nothing disappears meanwhile. Each job
        says why it was queued (see `queued_reasons`).
        """
        queued = {}
        async with self.engine.begin() as connection:
            for analyzer, version in analyzer_versions.items():
                params = {"analyzer": analyzer, "version": version}
                older = await connection.execute(
                    text(
                        "SELECT DISTINCT version FROM analysis_jobs"
                        " WHERE analyzer = :analyzer AND version <> :version ORDER BY version"
                    ),
                    params,
                )
                had_jobs = await connection.execute(
                    text("SELECT EXISTS (SELECT 1 FROM analysis_jobs WHERE analyzer = :analyzer)"),
                    params,
                )
                outdated = await connection.execute(
                    text(
                        "UPDATE analysis_jobs SET version = :version, state = 'pending',"
                        " attempts = 0, error = NULL, not_before = now(), priority = :priority,"
                        " lease_owner = NULL, lease_expires_at = NULL, finished_at = NULL,"
                        " queued_because = 'model updated: ' || version || ' -> ' || :version"
                        " WHERE analyzer = :analyzer AND version <> :version"
                    ),
                    {**params, "priority": PRIORITY_REANALYSIS},
                )
                missing = await connection.execute(
                    text(
                        "INSERT INTO analysis_jobs"
                        " (content_id, analyzer, version, priority, queued_because)"
                        " SELECT c.id, :analyzer, :version, :priority, :reason FROM contents c"
                        " ON CONFLICT DO NOTHING"
                    ),
                    {
                        **params,
                        "priority": PRIORITY_REANALYSIS,
                        "reason": NO_RESULT_YET if had_jobs.scalar() else NEW_ANALYZER,
                    },
                )
                queued[analyzer] = (
                    outdated.rowcount + missing.rowcount,
                    list(older.scalars()),
                )
        return queued

    async def claim(self, analyzer: str, version: str, limit: int) -> list[Job]:
        """Take up to `limit` ready jobs (pending, or running under an expired lease) that ask
        for this `version` of the analyzer: a worker with another model stores nothing."""
        async with self.engine.begin() as connection:
            # a job whose worker died on every attempt would kill the next one too
            await connection.execute(
                text(
                    "UPDATE analysis_jobs SET state = 'failed', finished_at = now(),"
                    " lease_owner = NULL, lease_expires_at = NULL, error = 'the analysis worker"
                    " stopped (killed or out of memory) during each of ' || attempts || ' attempts'"
                    " WHERE analyzer = :analyzer AND state = 'running'"
                    " AND lease_expires_at < now() AND attempts >= :max_attempts"
                ),
                {"analyzer": analyzer, "max_attempts": self.policy.max_attempts},
            )
            rows = await connection.execute(
                text(
                    "WITH ready AS ("
                    " SELECT j.content_id FROM analysis_jobs j"
                    " WHERE j.analyzer = :analyzer AND j.version = :version"
                    " AND ((j.state = 'pending' AND j.not_before <= now())"
                    "  OR (j.state = 'running' AND j.lease_expires_at < now()))"
                    " AND EXISTS (SELECT 1 FROM tracks t"
                    "  WHERE t.content_id = j.content_id AND t.missing_since IS NULL)"
                    " ORDER BY j.priority DESC, j.created_at LIMIT :limit"
                    " FOR UPDATE OF j SKIP LOCKED)"
                    " UPDATE analysis_jobs j SET state = 'running', attempts = j.attempts + 1,"
                    " lease_owner = :owner,"
                    " lease_expires_at = now() + make_interval(secs => :lease)"
                    " FROM ready CROSS JOIN LATERAL (SELECT t.raw_path, t.duration FROM tracks t"
                    "  WHERE t.content_id = ready.content_id AND t.missing_since IS NULL"
                    "  ORDER BY t.added_at LIMIT 1) track"
                    " WHERE j.content_id = ready.content_id AND j.analyzer = :analyzer"
                    " RETURNING j.content_id, j.version, j.attempts, track.raw_path, track.duration"
                ),
                {
                    "analyzer": analyzer,
                    "version": version,
                    "limit": limit,
                    "owner": self.owner,
                    "lease": self.policy.lease_seconds,
                },
            )
            return [
                Job(
                    content_id=row.content_id,
                    analyzer=analyzer,
                    version=row.version,
                    attempts=row.attempts,
                    relative_path=os.fsdecode(row.raw_path),
                    audio_seconds=row.duration,
                )
                for row in rows
            ]

    async def versions_waiting(self, analyzer: str, version: str) -> list[str]:
        """Other versions of the analyzer that jobs wait for: what a worker that finds no
        work should know, since it will never take those."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT DISTINCT version FROM analysis_jobs WHERE analyzer = :analyzer"
                    " AND version <> :version AND state IN ('pending', 'running')"
                    " ORDER BY version"
                ),
                {"analyzer": analyzer, "version": version},
            )
            return list(rows.scalars())

    async def renew(self, job: Job) -> bool:
        """Extend our lease on a job we are still working on; False if it is no longer ours."""
        async with self.engine.begin() as connection:
            renewed = await connection.execute(
                text(
                    "UPDATE analysis_jobs"
                    " SET lease_expires_at = now() + make_interval(secs => :lease)"
                    " WHERE content_id = :content_id AND analyzer = :analyzer"
                    " AND lease_owner = :owner AND state = 'running'"
                ),
                {**self._key(job), "lease": self.policy.lease_seconds},
            )
        return renewed.rowcount == 1

    async def complete(self, job: Job, store: StoreResult) -> None:
        """Store the result and mark the job done in one transaction, if the job is still ours."""
        async with self.engine.begin() as connection:
            done = await connection.execute(
                text(
                    "UPDATE analysis_jobs SET state = 'done', finished_at = now(), error = NULL,"
                    " lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE content_id = :content_id AND analyzer = :analyzer"
                    " AND lease_owner = :owner AND state = 'running' AND version = :version"
                ),
                {**self._key(job), "version": job.version},
            )
            if done.rowcount != 1:
                raise LeaseLost(f"{job.analyzer} job for {job.relative_path} was taken over")
            await store(connection)

    async def release(self, job: Job) -> None:
        """Give a job we stop working on back to the queue as it was before our claim: a
        clean stop is no failed attempt, and any worker may take the job at once."""
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE analysis_jobs SET state = 'pending', attempts = attempts - 1,"
                    " not_before = now(), lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE content_id = :content_id AND analyzer = :analyzer"
                    " AND lease_owner = :owner AND state = 'running'"
                ),
                self._key(job),
            )

    async def moved_since_claim(self, job: Job) -> bool:
        """Whether the catalogue has the job's content at another path now, and no longer at
        the one it was claimed with: the file was moved or renamed while the job waited or ran.
        """
        async with self.engine.connect() as connection:
            moved = await connection.execute(
                text(
                    "SELECT bool_or(raw_path <> :raw_path) AND NOT bool_or(raw_path = :raw_path)"
                    " FROM tracks WHERE content_id = :content_id AND missing_since IS NULL"
                ),
                {"content_id": job.content_id, "raw_path": os.fsencode(job.relative_path)},
            )
            return bool(moved.scalar())

    async def fail(self, job: Job, reason: str, *, permanent: bool) -> bool:
        """Record a failed attempt: retry later with back-off, or fail for good; True if failed."""
        final = permanent or job.attempts >= self.policy.max_attempts
        delay = self.policy.retry_delay_seconds * 2 ** (job.attempts - 1)
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE analysis_jobs SET state = :state, error = :reason,"
                    " not_before = now() + make_interval(secs => :delay),"
                    " queued_because = CASE WHEN :final THEN queued_because ELSE :retry END,"
                    " finished_at = CASE WHEN :final THEN now() END,"
                    " lease_owner = NULL, lease_expires_at = NULL"
                    " WHERE content_id = :content_id AND analyzer = :analyzer"
                    " AND lease_owner = :owner AND state = 'running'"
                ),
                {
                    **self._key(job),
                    "state": "failed" if final else "pending",
                    "reason": reason,
                    "delay": 0.0 if final else delay,
                    "final": final,
                    "retry": RETRY_AFTER_FAILURE,
                },
            )
        return final

    def _key(self, job: Job) -> dict[str, str]:
        return {"content_id": job.content_id, "analyzer": job.analyzer, "owner": self.owner}


async def failed_jobs(
    engine: AsyncEngine, analyzer: str | None, limit: int
) -> tuple[list[Any], int]:
    """Failed jobs of present tracks, latest first, with the track's id and path; and how many."""
    where = "j.state = 'failed' AND (CAST(:analyzer AS text) IS NULL OR j.analyzer = :analyzer)"
    track = (
        "SELECT t.id, t.path, t.title, t.artist, t.album, t.duration FROM tracks t"
        " WHERE t.content_id = j.content_id AND t.missing_since IS NULL ORDER BY t.path LIMIT 1"
    )
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT j.analyzer, j.error, j.attempts, j.finished_at, track.*"
                f" FROM analysis_jobs j CROSS JOIN LATERAL ({track}) track WHERE {where}"
                " ORDER BY j.finished_at DESC NULLS LAST, track.path LIMIT :limit"
            ),
            {"analyzer": analyzer, "limit": limit},
        )
        total = await connection.execute(
            text(f"SELECT count(*) FROM analysis_jobs j WHERE {where} AND EXISTS ({track})"),
            {"analyzer": analyzer},
        )
        return list(rows), total.scalar()


async def retry_failed(
    engine: AsyncEngine, analyzer: str | None, track_ids: list[str] | None
) -> int:
    """Queue failed jobs again (all, one analyzer's, or some tracks'), as new files rank."""
    async with engine.begin() as connection:
        retried = await connection.execute(
            text(
                "UPDATE analysis_jobs j SET state = 'pending', attempts = 0, error = NULL,"
                " not_before = now(), finished_at = NULL, priority = :priority,"
                " queued_because = :reason"
                " WHERE j.state = 'failed'"
                " AND (CAST(:analyzer AS text) IS NULL OR j.analyzer = :analyzer)"
                " AND (CAST(:track_ids AS text[]) IS NULL OR j.content_id IN"
                "  (SELECT t.content_id FROM tracks t WHERE t.id = ANY(:track_ids)))"
            ),
            {
                "analyzer": analyzer,
                "track_ids": track_ids,
                "priority": PRIORITY_NEW_FILE,
                "reason": RETRIED_BY_HAND,
            },
        )
        return retried.rowcount


async def queued_reasons(engine: AsyncEngine) -> dict[str, list[dict]]:
    """Per analyzer, why its waiting jobs (pending or running, present tracks) were queued:
    `[{"reason": str, "jobs": int}]`, the largest group first."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT j.analyzer, j.queued_because AS reason, count(*) AS jobs"
                " FROM analysis_jobs j WHERE j.state IN ('pending', 'running')"
                " AND EXISTS (SELECT 1 FROM tracks t"
                "  WHERE t.content_id = j.content_id AND t.missing_since IS NULL)"
                " GROUP BY j.analyzer, j.queued_because"
                " ORDER BY j.analyzer, jobs DESC, reason"
            )
        )
        reasons: dict[str, list[dict]] = {}
        for row in rows:
            reasons.setdefault(row.analyzer, []).append({"reason": row.reason, "jobs": row.jobs})
        return reasons

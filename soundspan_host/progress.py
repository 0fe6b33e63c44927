"""Analysis progress as people read it: the pace of the current run and the time still needed.

The rate is measured over the current run only, never over a fixed window, so the idle time
before a run does not lower it; and in minutes of audio as well as in tracks, so an ETA made from
the audio still waiting stays right when long and short tracks are mixed.

The queue keeps no start time per job, so a run is found from what it does keep: when each job
was last queued (`not_before`), when it finished, and its track's length: see `current_run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_host.queue import QueuePolicy

# a run longer than this many finishes is measured over its latest ones (a status read stays
# cheap on a large library; the pace of the latest thousands is the pace that matters)
RECENT_FINISHES = 2000

# each present content once, with its longest present track's length (duplicates share content)
PRESENT_CONTENTS = (
    "WITH present AS (SELECT content_id, max(duration) AS seconds FROM tracks"
    " WHERE missing_since IS NULL GROUP BY content_id),"
    " mean AS (SELECT avg(seconds) AS seconds FROM present)"
)
# an unknown length counts as the library's mean track length
AUDIO_SECONDS = "coalesce(p.seconds, mean.seconds)"
STATES = ("done", "pending", "running", "failed")
WAITS = "j.state IN ('pending', 'running')"


@dataclass(frozen=True)
class Finish:
    """An analysis done: when its job was last queued and when it finished (epoch seconds), and
    how much audio it was (None only where the library knows no track's length at all)."""

    queued_at: float
    at: float
    audio_seconds: float | None


@dataclass(frozen=True)
class Waiting:
    """The jobs still to do (pending or running), their audio, and when the earliest of them
    was queued (epoch seconds; None when none waits)."""

    jobs: int
    audio_seconds: float
    longest_audio_seconds: float | None
    queued_since: float | None


@dataclass(frozen=True)
class RunProgress:
    """The fields of the status API (see its schema); None where not measured."""

    tracks_per_minute: float | None
    audio_minutes_per_minute: float | None
    audio_minutes_waiting: float
    eta_seconds: int | None
    run_started_at: float | None


@dataclass(frozen=True)
class JobCounts:
    """An analyzer's jobs of present tracks, by state."""

    done: int = 0
    pending: int = 0
    running: int = 0
    failed: int = 0

    @property
    def waiting(self) -> int:
        return self.pending + self.running


@dataclass(frozen=True)
class AnalyzerProgress:
    """An analyzer's jobs and the pace of its current run."""

    counts: JobCounts
    run: RunProgress


NO_JOBS = AnalyzerProgress(JobCounts(), RunProgress(None, None, 0.0, None, None))
"""The progress of an analyzer that has no jobs yet."""


def current_run(
    finishes: Sequence[Finish], waiting: Waiting, policy: QueuePolicy
) -> Sequence[Finish]:
    """The latest stretch of `finishes` (oldest first) that no idle time or stop divides.

    Before a finish, the queue was idle if every job finished since (and every job waiting)
    was queued only after it; it was stopped if the gap to the next finish is longer than an
    analysis of that track may take (the queue's deadline for it: the deadline grows with the
    track's length, so one long track analyzed alone does not divide a run).
    """
    if not finishes:
        return finishes
    start = len(finishes) - 1
    earliest_queued = finishes[start].queued_at
    if waiting.queued_since is not None:
        earliest_queued = min(earliest_queued, waiting.queued_since)
    while start > 0:
        previous, finish = finishes[start - 1], finishes[start]
        idle = earliest_queued > previous.at
        if idle or finish.at - previous.at > policy.deadline(finish.audio_seconds):
            break
        start -= 1
        earliest_queued = min(earliest_queued, previous.queued_at)
    return finishes[start:]


def measure_run(
    finishes: Sequence[Finish], waiting: Waiting, now: float, policy: QueuePolicy
) -> RunProgress:
    """The pace of the current run and the time the waiting audio still needs.

    The rate counts the finishes after the run's first one over the time from that first
    finish to `now`: the first finish's own work happened before the run could be timed, and
    counting to `now` makes the rate of a stalled run fall. A run ends when nothing waits, when
    all that waits was queued after its last finish (a new run has not finished a track yet),
    or when no finish came for longer than the longest waiting track may take (the host
    stopped, or the analyzer cannot work): its pace then says nothing of what comes next.
    The ETA is the audio waiting over the audio pace; where no track's length is known, the
    tracks waiting over the track pace.
    """
    waiting_minutes = waiting.audio_seconds / 60
    run = current_run(finishes, waiting, policy)
    if (
        waiting.queued_since is None
        or not run
        or waiting.queued_since > run[-1].at
        or now - run[-1].at > policy.deadline(waiting.longest_audio_seconds)
    ):
        return RunProgress(None, None, waiting_minutes, None, None)
    started = run[0].at
    minutes = (now - started) / 60
    if len(run) < 2 or minutes <= 0:
        return RunProgress(None, None, waiting_minutes, None, started)
    timed = run[1:]
    tracks_per_minute = len(timed) / minutes
    audio_per_minute = None
    if all(finish.audio_seconds is not None for finish in timed):
        audio_per_minute = sum(finish.audio_seconds for finish in timed) / 60 / minutes
    if audio_per_minute:
        eta = waiting_minutes / audio_per_minute * 60
    else:
        eta = waiting.jobs / tracks_per_minute * 60
    return RunProgress(tracks_per_minute, audio_per_minute, waiting_minutes, round(eta), started)


async def analysis_progress(
    engine: AsyncEngine, policy: QueuePolicy
) -> dict[str, AnalyzerProgress]:
    """Per analyzer: its jobs by state over present content, and its current run.

    Only analyzers with jobs are listed. Counts and finishes are read from one snapshot, so
    they agree; times are the database's, so a host whose clock differs from a remote
    database's still measures right.
    """
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        counted = await connection.execute(
            text(
                f"{PRESENT_CONTENTS} SELECT j.analyzer,"
                + "".join(
                    f" count(*) FILTER (WHERE j.state = '{state}') AS {state}," for state in STATES
                )
                + f" coalesce(sum({AUDIO_SECONDS}) FILTER (WHERE {WAITS}), 0) AS audio_seconds,"
                f" max({AUDIO_SECONDS}) FILTER (WHERE {WAITS}) AS longest_audio_seconds,"
                f" extract(epoch FROM min(j.not_before) FILTER (WHERE {WAITS})) AS queued_since"
                " FROM analysis_jobs j JOIN present p USING (content_id) CROSS JOIN mean"
                " GROUP BY j.analyzer"
            )
        )
        finished = await connection.execute(
            text(
                f"{PRESENT_CONTENTS} SELECT analyzer, queued_at, at, audio_seconds FROM"
                " (SELECT j.analyzer, extract(epoch FROM j.not_before) AS queued_at,"
                "  extract(epoch FROM j.finished_at) AS at,"
                f"  {AUDIO_SECONDS} AS audio_seconds, row_number() OVER"
                "  (PARTITION BY j.analyzer ORDER BY j.finished_at DESC) AS latest"
                "  FROM analysis_jobs j JOIN present p USING (content_id) CROSS JOIN mean"
                "  WHERE j.state = 'done') recent"
                " WHERE latest <= :recent ORDER BY analyzer, at"
            ),
            {"recent": RECENT_FINISHES},
        )
        now = float((await connection.execute(text("SELECT extract(epoch FROM now())"))).scalar())
    finishes: dict[str, list[Finish]] = {}
    for row in finished:
        finish = Finish(float(row.queued_at), float(row.at), _float_or_none(row.audio_seconds))
        finishes.setdefault(row.analyzer, []).append(finish)
    progress = {}
    for row in counted:
        waiting = Waiting(
            row.pending + row.running,
            float(row.audio_seconds),
            _float_or_none(row.longest_audio_seconds),
            _float_or_none(row.queued_since),
        )
        run = measure_run(finishes.get(row.analyzer, []), waiting, now, policy)
        counts = JobCounts(**{state: getattr(row, state) for state in STATES})
        progress[row.analyzer] = AnalyzerProgress(counts, run)
    return progress


def _float_or_none(value) -> float | None:
    """asyncpg gives PostgreSQL numerics (extract, avg) as Decimal."""
    return None if value is None else float(value)

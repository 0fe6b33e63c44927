"""The analysis queue's status: each analyzer's model and progress, why its jobs wait, the
workers left on another model version, and the library's size.

The host's own route, since the queue is the host's: GET /api/analysis/status, also at
GET /api/vibe/status, where the vibe API served it before. Plugins add fields of their own
through `soundspan_status_fields` (vibe_api: the exclude rules and what they leave out).
"""

from __future__ import annotations

import time
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import HOST, AnalyzerInfo, HostContext
from soundspan_hooks.openapi import component_schemas, operation, ref
from soundspan_host.plugins import PLUGINS
from soundspan_host.progress import NO_JOBS, AnalyzerProgress, analysis_progress
from soundspan_host.queue import QueuePolicy, queued_reasons
from soundspan_host.worker_registry import outdated_workers

routes = web.RouteTableDef()


class Counts(BaseModel):
    done: int
    pending: int
    running: int
    failed: int


class ModelDownload(BaseModel):
    """An analyzer's model on its way from the hub."""

    file: str | None
    bytes_done: int
    bytes_total: int | None
    bytes_per_second: int
    eta_seconds: int | None


class QueueReason(BaseModel):
    reason: str = Field(description='e.g. "new or changed audio", "model updated: a -> b"')
    jobs: int


class OutdatedWorker(BaseModel):
    worker: str = Field(description="host:pid:id of the worker process")
    version: str
    last_seen: float = Field(description="Epoch seconds")


class AnalyzerStatus(BaseModel):
    name: str
    model_id: str
    trained: bool
    device: str
    state: Literal["ready", "loading", "downloading", "unavailable"]
    reason: str | None
    version: str
    dimension: int
    counts: Counts
    tracks_per_minute: float | None = Field(
        description="Tracks finished per minute over the current run (from its first finish to "
        "now); null with no run, or before its second finish."
    )
    audio_minutes_per_minute: float | None = Field(
        description="Minutes of audio analyzed per minute over the current run, whatever the "
        "tracks' lengths; null as tracks_per_minute."
    )
    audio_minutes_waiting: float = Field(
        description="Audio still to analyze (pending and running jobs); a track of unknown "
        "length counts as the library's mean."
    )
    eta_seconds: int | None = Field(
        description="Seconds the audio waiting needs at the run's audio pace; null when not "
        "measured yet or nothing waits."
    )
    run_started_at: float | None = Field(
        description="Epoch seconds of the current run's first finish; null when no run is on."
    )
    download: ModelDownload | None
    detail: str | None = Field(
        description="One line for people about the model, e.g. why a precision was refused."
    )
    workers: int = Field(
        description="Tracks this host analyzes at once (its worker processes); 0: remote "
        "workers only."
    )
    workers_from: str | None = Field(
        description='How `workers` was decided: "auto: 1 of 2 CPUs, shared with clap" (its '
        'share of the CPUs this host may use), "set: workers = 3".'
    )
    queued_because: list[QueueReason] = Field(
        description="Why the waiting jobs were queued, the largest group first."
    )
    outdated_workers: list[OutdatedWorker] = Field(
        description="Workers seen in the last minutes on another model version than this "
        "host's: they take none of its jobs."
    )


class LibraryTotals(BaseModel):
    tracks: int
    missing: int
    distinct_contents: int


class StatusAnswer(BaseModel):
    """The host's fields, and those the enabled plugins add (soundspan_status_fields), e.g.
    vibe_api's `excluded`: the exclude rules in force and the present tracks they leave out."""

    model_config = ConfigDict(extra="allow")

    analyzers: list[AnalyzerStatus]
    library: LibraryTotals
    time: float


def analyzer_status(
    info: AnalyzerInfo,
    progress: AnalyzerProgress,
    queued_because: list[dict],
    outdated: list[dict],
) -> AnalyzerStatus:
    """One analyzer as it describes itself, with its jobs and the pace of its run."""
    run = progress.run
    return AnalyzerStatus(
        name=info.name,
        model_id=info.model_id,
        trained=info.trained,
        device=info.device,
        state=info.state,
        reason=info.reason,
        version=info.version,
        dimension=info.dimension,
        counts=Counts.model_validate(progress.counts, from_attributes=True),
        tracks_per_minute=_rounded(run.tracks_per_minute),
        audio_minutes_per_minute=_rounded(run.audio_minutes_per_minute),
        audio_minutes_waiting=round(run.audio_minutes_waiting, 2),
        eta_seconds=run.eta_seconds,
        run_started_at=run.run_started_at,
        download=info.download,
        detail=info.detail,
        workers=info.workers,
        workers_from=info.workers_from,
        queued_because=queued_because,
        outdated_workers=outdated,
    )


def _rounded(rate: float | None) -> float | None:
    """Three significant digits: a slow CPU's 0.004 tracks a minute is not rounded to 0."""
    return None if rate is None else float(f"{rate:.3g}")


async def library_totals(engine: AsyncEngine) -> LibraryTotals:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE missing_since IS NULL) AS tracks,"
                    " count(*) FILTER (WHERE missing_since IS NOT NULL) AS missing,"
                    " count(DISTINCT content_id) FILTER (WHERE missing_since IS NULL) AS contents"
                    " FROM tracks"
                )
            )
        ).one()
    return LibraryTotals(tracks=row.tracks, missing=row.missing, distinct_contents=row.contents)


async def analysis_status(host: HostContext, policy: QueuePolicy) -> StatusAnswer:
    """The status now; a plugin's field never replaces one of the host's."""
    progress = await analysis_progress(host.engine, policy)
    described = await host.describe_analyzers()
    reasons = await queued_reasons(host.engine)
    outdated = await outdated_workers(host.engine, {info.name: info.version for info in described})
    added: dict = {}
    for fields in await host.call("soundspan_status_fields", host=host):
        added.update(fields or {})
    own = {
        "analyzers": [
            analyzer_status(
                info,
                progress.get(info.name, NO_JOBS),
                reasons.get(info.name, []),
                outdated.get(info.name, []),
            )
            for info in described
        ],
        "library": await library_totals(host.engine),
        "time": time.time(),
    }
    return StatusAnswer(**{**added, **own})


@routes.get("/api/analysis/status")
@routes.get("/api/vibe/status")  # where the vibe API served it before: scripts still read it
async def status(request: web.Request) -> web.Response:
    """Each analyzer's model, device and progress (the pace of its current run, the audio
    waiting and the time it needs); library totals; what the plugins add."""
    policy = request.app[PLUGINS].settings.host.queue_policy
    answer = await analysis_status(request.app[HOST], policy)
    return web.json_response(answer.model_dump(mode="json"))


OPENAPI = {
    "paths": {
        "/api/analysis/status": {
            "get": operation("Analyzers and their progress", {200: ref(StatusAnswer)})
        },
        "/api/vibe/status": {
            "get": operation(
                "Analyzers and their progress (as /api/analysis/status)", {200: ref(StatusAnswer)}
            )
        },
    },
    "schemas": component_schemas(StatusAnswer),
}

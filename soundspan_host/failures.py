"""Failed analyses, for people: which files failed with which reason, and queueing them again.

The host's own routes, since the queue is the host's: GET /api/analysis/failures and
POST /api/analysis/retry.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from soundspan_hooks import HOST
from soundspan_hooks.openapi import (
    Track,
    TrackId,
    component_schemas,
    json_body,
    operation,
    parse,
    ref,
    track_json,
)
from soundspan_host.queue import failed_jobs, retry_failed

routes = web.RouteTableDef()
AnalyzerName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")]


class FailuresQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    analyzer: AnalyzerName | None = None
    limit: int = Field(50, ge=1, le=1000)


class RetryRequest(BaseModel):
    """Which failed jobs to queue again; all of them when both are left out."""

    model_config = ConfigDict(extra="forbid", strict=True)
    analyzer: AnalyzerName | None = None
    track_ids: list[TrackId] | None = Field(None, max_length=1000)


class Failure(BaseModel):
    track: Track
    analyzer: str
    error: str | None
    attempts: int
    finished_at: str | None


class Failures(BaseModel):
    failures: list[Failure]
    total: int


class Retried(BaseModel):
    requeued: int


@routes.get("/api/analysis/failures")
async def failures(request: web.Request) -> web.Response:
    """Failed analyses of present tracks, latest first, with their reasons."""
    query = parse(FailuresQuery, dict(request.query))
    rows, total = await failed_jobs(request.app[HOST].engine, query.analyzer, query.limit)
    return web.json_response(
        {
            "failures": [
                {
                    "track": track_json(row),
                    "analyzer": row.analyzer,
                    "error": row.error,
                    "attempts": row.attempts,
                    "finished_at": row.finished_at.isoformat() if row.finished_at else None,
                }
                for row in rows
            ],
            "total": total,
        }
    )


@routes.post("/api/analysis/retry")
async def retry(request: web.Request) -> web.Response:
    """Queue failed analyses again, e.g. after fixing a file's permissions."""
    wanted = parse(RetryRequest, await json_body(request))
    requeued = await retry_failed(request.app[HOST].engine, wanted.analyzer, wanted.track_ids)
    return web.json_response({"requeued": requeued})


OPENAPI = {
    "paths": {
        "/api/analysis/failures": {
            "get": operation(
                "Failed analyses and their reasons", {200: ref(Failures)}, FailuresQuery
            )
        },
        "/api/analysis/retry": {
            "post": operation("Queue failed analyses again", {200: ref(Retried)}, body=RetryRequest)
        },
    },
    "schemas": component_schemas(Failures, Retried, RetryRequest),
}

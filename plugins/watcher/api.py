"""HTTP routes of the watcher: a reconcile on request, and how the last one went."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from soundspan_hooks.openapi import component_schemas, operation, ref
from soundspan_plugins.watcher.ingest import Ingest, ReconcileCounts

INGEST = web.AppKey("soundspan_ingest", Ingest)
PROBLEMS_SHOWN = 100
routes = web.RouteTableDef()


class ScanStarted(BaseModel):
    scan: Literal["started", "already running"]


class ScanProblem(BaseModel):
    path: str
    reason: str


class ScanState(BaseModel):
    scanning: bool
    last: ReconcileCounts | None
    problems: list[ScanProblem] = Field(
        description=f"files the database cannot record (the first {PROBLEMS_SHOWN})"
    )


@routes.post("/api/library/scan")
async def scan(request: web.Request) -> web.Response:
    """Compare the music dir with the database now, in the background."""
    started = _ingest(request).scan_in_background()
    answer = ScanStarted(scan="started" if started else "already running")
    return web.json_response(text=answer.model_dump_json(), status=202)


@routes.get("/api/library/scan")
async def scan_state(request: web.Request) -> web.Response:
    """Whether a scan is running, and what the last one found."""
    ingest = _ingest(request)
    answer = ScanState(
        scanning=ingest.scanning,
        last=ingest.last_scan,
        problems=[
            ScanProblem(path=path, reason=reason)
            for path, reason in sorted(ingest.problems.items())[:PROBLEMS_SHOWN]
        ],
    )
    return web.json_response(text=answer.model_dump_json())


def _ingest(request: web.Request) -> Ingest:
    if INGEST not in request.app:  # a host for one CLI command: the running host scans
        raise web.HTTPServiceUnavailable(reason="this host answers one command; it never scans")
    return request.app[INGEST]


def openapi_fragment() -> dict[str, Any]:
    return {
        "paths": {
            "/api/library/scan": {
                "post": operation(
                    "Compare the music dir with the database now", {202: ref(ScanStarted)}
                ),
                "get": operation(
                    "Whether a scan is running; the last one's counts and problems",
                    {200: ref(ScanState)},
                ),
            }
        },
        "schemas": component_schemas(ScanStarted, ScanState),
    }

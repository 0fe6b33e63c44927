"""Prometheus metrics at GET /metrics: the queue as the database sees it (so every worker's
work, remote ones included), and this process's analyses and API latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from soundspan_hooks import HOST
from soundspan_host.plugins import PLUGINS
from soundspan_host.progress import analysis_progress

ANALYSIS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
routes = web.RouteTableDef()


class Metrics:
    """One registry per app, so several hosts in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "soundspan_queue_depth",
            "Analysis jobs waiting or running, per analyzer (all workers).",
            ["analyzer"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "soundspan_analysis_jobs",
            "Analysis jobs of present tracks by state (all workers).",
            ["analyzer", "state"],
            registry=self.registry,
        )
        self.analyses = Counter(
            "soundspan_analyses",
            "Analyses this process finished, by outcome (done, retry, failed).",
            ["analyzer", "outcome"],
            registry=self.registry,
        )
        self.analysis_seconds = Histogram(
            "soundspan_analysis_seconds",
            "Seconds this process took to analyze and store one track.",
            ["analyzer"],
            buckets=ANALYSIS_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "soundspan_http_request_seconds",
            "Seconds to answer an HTTP request, by route.",
            ["method", "route", "status"],
            registry=self.registry,
        )

    def analysis_finished(self, analyzer: str, outcome: str, seconds: float) -> None:
        self.analyses.labels(analyzer, outcome).inc()
        if outcome == "done":
            self.analysis_seconds.labels(analyzer).observe(seconds)

    def middleware(self) -> Callable:
        """Time every request, labelled by its route's pattern (never the raw path)."""

        @web.middleware
        async def timed(request: web.Request, handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as error:
                status = error.status
                raise
            finally:
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                self.request_seconds.labels(request.method, route, str(status)).observe(
                    time.perf_counter() - started
                )

        return timed


METRICS = web.AppKey("soundspan_metrics", Metrics)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the queue figures are read from the database at each scrape."""
    collected = request.app[METRICS]
    policy = request.app[PLUGINS].settings.host.queue_policy
    progress = await analysis_progress(request.app[HOST].engine, policy)
    for analyzer, entry in progress.items():
        collected.queue_depth.labels(analyzer).set(entry.counts.waiting)
        for state, jobs in asdict(entry.counts).items():
            collected.jobs.labels(analyzer, state).set(jobs)
    return web.Response(
        body=generate_latest(collected.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


OPENAPI = {
    "paths": {
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics: queue, analyses, API latency",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}
                        },
                    }
                },
            }
        }
    }
}

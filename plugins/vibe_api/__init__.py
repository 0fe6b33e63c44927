"""The vibe API: tracks, similar tracks, text-to-vibe search and analysis progress, over REST.

It asks the analyzers, through hooks, to describe themselves, embed text and detail their
results; it never imports one and knows nothing about models.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from soundspan_hooks import (
    HOST,
    AnalyzerInfo,
    HostContext,
    PluginSettings,
    SettingsSection,
    hookimpl,
)
from soundspan_plugins.vibe_api import queries
from soundspan_plugins.vibe_api.schema import (
    SearchRequest,
    SimilarQuery,
    TrackQuery,
    openapi_fragment,
)

PROGRESS_WINDOW_MINUTES = 10
TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


routes = web.RouteTableDef()


def parse(model: type[BaseModel], values: Any) -> Any:
    """Validate a query or body; a bad one is a 400 with every problem named."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors()
        ]
        # names of unknown parameters are the client's text: keep them to one header-safe line
        message = "; ".join(problems).replace("\r", " ").replace("\n", " ")
        raise web.HTTPBadRequest(reason=message) from None


async def json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(reason="the body is not valid JSON") from None


@routes.get("/api/tracks")
async def list_tracks(request: web.Request) -> web.Response:
    """Find tracks by relative path or by words in their tags."""
    query = parse(TrackQuery, dict(request.query))
    host = request.app[HOST]
    rows, total = await queries.find_tracks(
        host.engine, query.path, query.q, query.limit, query.offset
    )
    return web.json_response(
        {
            "tracks": [queries.track_json(row) for row in rows],
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


@routes.get("/api/tracks/{track_id}")
async def get_track(request: web.Request) -> web.Response:
    """A track's metadata, each analyzer's state and failure reason, and their results."""
    host = request.app[HOST]
    track = await _track_or_404(host, request.match_info["track_id"])
    details: dict[str, Any] = {}
    for answer in await host.call(
        "soundspan_track_details", host=host, content_id=track.content_id
    ):
        details.update(answer or {})
    return web.json_response(
        {
            "track": queries.track_json(track),
            "missing": track.missing_since is not None,
            "analyses": await queries.analysis_states(host.engine, track.content_id),
            "results": details,
        }
    )


@routes.get("/api/vibe/similar/{track_id}")
async def similar(request: web.Request) -> web.Response:
    """Tracks nearest to one track in an analyzer's embedding space (cosine)."""
    query = parse(SimilarQuery, dict(request.query))
    host = request.app[HOST]
    track = await _track_or_404(host, request.match_info["track_id"])
    analyzer = _pick_analyzer(await host.describe_analyzers(), query.analyzer)
    nearest = await queries.nearest_contents(
        host.engine, analyzer.embedding_table, track.content_id, query.limit
    )
    if nearest is None:
        raise web.HTTPConflict(
            reason=f"track {track.id} has no {analyzer.name} analysis yet"
            f" (its state: /api/tracks/{track.id})"
        )
    return web.json_response(
        {
            "track": queries.track_json(track),
            "analyzer": analyzer.name,
            "results": await _results(host, nearest),
        }
    )


@routes.post("/api/vibe/search")
async def search(request: web.Request) -> web.Response:
    """Text-to-vibe: through an analyzer that embeds text, else through tag names."""
    body = parse(SearchRequest, await json_body(request))
    host = request.app[HOST]
    analyzers = {info.name: info for info in await host.describe_analyzers()}
    embedding = await _maybe_await(host.hook.soundspan_embed_text(host=host, text=body.text))
    if embedding is not None and _searchable(analyzers.get(embedding.analyzer)):
        table = analyzers[embedding.analyzer].embedding_table
        nearest = await queries.nearest_to_vector(host.engine, table, embedding.vector, body.limit)
        return web.json_response(
            {"analyzer": embedding.analyzer, "results": await _results(host, nearest)}
        )
    tag_search = await _maybe_await(
        host.hook.soundspan_search_tags(host=host, text=body.text, limit=body.limit)
    )
    if tag_search is None:
        raise web.HTTPServiceUnavailable(
            reason="no analyzer can search by text: enable clap (text embeddings) or musicnn (tags)"
        )
    contents = [(result.content_id, result.score) for result in tag_search.results]
    return web.json_response(
        {
            "analyzer": tag_search.analyzer,
            "matched_tags": list(tag_search.matched_tags),
            "results": await _results(host, contents, scores_are_distances=False),
        }
    )


@routes.get("/api/vibe/status")
async def status(request: web.Request) -> web.Response:
    """Each analyzer's model, device and progress; library totals."""
    host = request.app[HOST]
    progress = await queries.analyzer_progress(host.engine, PROGRESS_WINDOW_MINUTES)
    analyzers = []
    for info in await host.describe_analyzers():
        entry = progress.get(info.name, {"counts": {}, "recent": 0})
        counts = {"done": 0, "pending": 0, "running": 0, "failed": 0, **entry["counts"]}
        per_minute = entry["recent"] / PROGRESS_WINDOW_MINUTES
        remaining = counts["pending"] + counts["running"]
        analyzers.append(
            {
                "name": info.name,
                "model_id": info.model_id,
                "trained": info.trained,
                "device": info.device,
                "state": info.state,
                "reason": info.reason,
                "version": info.version,
                "dimension": info.dimension,
                "counts": counts,
                "tracks_per_minute": round(per_minute, 2),
                "eta_seconds": round(remaining / per_minute * 60) if per_minute else None,
            }
        )
    return web.json_response(
        {
            "analyzers": analyzers,
            "library": await queries.library_totals(host.engine),
            "time": time.time(),
        }
    )


async def _track_or_404(host: HostContext, track_id: str) -> Any:
    track = await queries.track_by_id(host.engine, track_id) if len(track_id) <= 64 else None
    if track is None:
        raise web.HTTPNotFound(reason=f"no track with id {track_id[:64]!r}")
    return track


def _searchable(info: AnalyzerInfo | None) -> bool:
    return (
        info is not None
        and info.embedding_table is not None
        and TABLE_NAME.match(info.embedding_table) is not None
    )


def _pick_analyzer(analyzers: list[AnalyzerInfo], name: str | None) -> AnalyzerInfo:
    """The asked-for analyzer, else CLAP when trained weights are loaded, else MusiCNN."""
    usable = {info.name: info for info in analyzers if _searchable(info)}
    if name is not None:
        if name not in usable:
            raise web.HTTPBadRequest(
                reason=f"unknown analyzer {name[:100]!r}; choose one of {sorted(usable)}"
            )
        return usable[name]
    clap = usable.get("clap")
    if clap is not None and clap.trained and clap.state == "ready":
        return clap
    for preferred in ("musicnn", *sorted(usable)):
        if preferred in usable:
            return usable[preferred]
    raise web.HTTPServiceUnavailable(reason="no analyzer with embeddings is enabled")


async def _results(
    host: HostContext, contents: list[tuple[str, float]], scores_are_distances: bool = True
) -> list[dict[str, Any]]:
    tracks = await queries.representative_tracks(host.engine, [content for content, _ in contents])
    return [
        {
            "track": queries.track_json(tracks[content]),
            "score": round(1.0 - value if scores_are_distances else value, 6),
        }
        for content, value in contents
        if content in tracks
    ]


async def _maybe_await(answer: Any) -> Any:
    return await answer if answer is not None else None


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection("vibe_api", PluginSettings)


@hookimpl
def soundspan_routes() -> web.RouteTableDef:
    return routes


@hookimpl
def soundspan_openapi() -> dict:
    return openapi_fragment()

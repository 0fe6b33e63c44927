"""What the vibe API's handlers share: track lookup, the analyzer to ask, and scored results
as clients see them."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from soundspan_hooks import AnalyzerInfo, HostContext
from soundspan_hooks.openapi import track_json
from soundspan_plugins.vibe_api import queries

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


async def track_or_404(host: HostContext, track_id: str) -> Any:
    plausible = len(track_id) <= 64 and "\x00" not in track_id
    track = await queries.track_by_id(host.engine, track_id) if plausible else None
    if track is None:
        raise web.HTTPNotFound(reason=f"no track with id {track_id[:64]!r}")
    return track


def searchable(info: AnalyzerInfo | None) -> bool:
    return (
        info is not None
        and info.embedding_table is not None
        and TABLE_NAME.match(info.embedding_table) is not None
    )


def pick_analyzer(analyzers: list[AnalyzerInfo], name: str | None) -> AnalyzerInfo:
    """The asked-for analyzer, else CLAP when trained weights are loaded, else MusiCNN."""
    usable = {info.name: info for info in analyzers if searchable(info)}
    if name is not None:
        if name not in usable:
            # a 404, like an unknown track: the names depend on the plugins enabled
            raise web.HTTPNotFound(
                reason=f"no analyzer {name[:100]!r} with embeddings; choose one of {sorted(usable)}"
            )
        return usable[name]
    clap = usable.get("clap")
    if clap is not None and clap.trained and clap.state == "ready":
        return clap
    for preferred in ("musicnn", *sorted(usable)):
        if preferred in usable:
            return usable[preferred]
    raise web.HTTPServiceUnavailable(reason="no analyzer with embeddings is enabled")


async def scored_results(
    host: HostContext, contents: list[tuple[str, float]], scores_are_distances: bool = True
) -> list[dict[str, Any]]:
    """Each content's representative track with its score (a similarity: higher is nearer)."""
    tracks = await queries.representative_tracks(host.engine, [content for content, _ in contents])
    return [
        {
            "track": track_json(tracks[content]),
            "score": round(1.0 - value if scores_are_distances else value, 6),
        }
        for content, value in contents
        if content in tracks
    ]


async def maybe_await(answer: Any) -> Any:
    return await answer if answer is not None else None

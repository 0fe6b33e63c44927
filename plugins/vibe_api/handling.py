"""What the vibe API's handlers share: track lookup (by our id, path or MusicBrainz id), the
analyzer to ask, and scored results as clients see them, each with why it was chosen."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from soundspan_hooks import AnalyzerInfo, HostContext, KeepsTags, by_search_rank
from soundspan_hooks.openapi import track_json
from soundspan_plugins.vibe_api import queries
from soundspan_plugins.vibe_api.shaping import Chosen

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


async def track_or_404(host: HostContext, track_id: str) -> Any:
    plausible = len(track_id) <= 64 and "\x00" not in track_id
    track = await queries.track_by_id(host.reader, track_id) if plausible else None
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
    """The asked-for analyzer, else the one with embeddings that ranks first for searches
    (CLAP when trained weights are loaded, else MusiCNN)."""
    usable = {info.name: info for info in analyzers if searchable(info)}
    if name is not None:
        if name not in usable:
            # a 404, like an unknown track: the names depend on the plugins enabled
            raise web.HTTPNotFound(
                reason=f"no analyzer {name[:100]!r} with embeddings; choose one of {sorted(usable)}"
            )
        return usable[name]
    if not usable:
        raise web.HTTPServiceUnavailable(reason="no analyzer with embeddings is enabled")
    return min(usable.values(), key=lambda info: (-info.search_rank, info.name))


async def scored_results(
    host: HostContext,
    chosen: list[Chosen],
    query_contents: Iterable[str] = (),
    query_tags: Iterable[str] = (),
    scores_are_distances: bool = True,
) -> list[dict[str, Any]]:
    """Each chosen track with its score (a similarity: higher is nearer), the versions folded
    into it, and why it was chosen: the tags it shares with the query's contents or words."""
    query_contents = list(query_contents)
    tags = await content_tags(host, [*query_contents, *(one.content_id for one in chosen)])
    wanted = set(query_tags).union(*(tags.get(content, ()) for content in query_contents))
    return [
        {
            "track": track_json(one.track),
            "score": round(1.0 - one.value if scores_are_distances else one.value, 6),
            "why": why(tags.get(one.content_id, ()), wanted),
            "versions": [track_json(version) for version in one.versions],
        }
        for one in chosen
    ]


def tag_keeper(host: HostContext) -> KeepsTags | None:
    """The analyzer whose tags explain results, label maps and answer tag searches: the first
    that keeps tags, by search rank; None where none does."""
    return next(iter(by_search_rank(host.analyzers.values(), KeepsTags)), None)


async def content_tags(host: HostContext, content_ids: list[str]) -> dict[str, list[str]]:
    """Each content's top tags, from the analyzer that keeps tags; none without one."""
    keeper = tag_keeper(host)
    if not content_ids or keeper is None:
        return {}
    return await keeper.content_tags(content_ids)


def why(result_tags: Iterable[str], query_tags: set[str]) -> dict[str, list[str]]:
    return {"shared_tags": [tag for tag in result_tags if tag in query_tags]}


async def track_named(
    host: HostContext,
    track_id: str | None,
    path: str | None,
    recording_id: str | None,
    names: tuple[str, str, str],
) -> Any:
    """The one track a request names: by our id, by its path relative to the music dir, or by
    its MusicBrainz recording id (the keys a music server knows it by)."""
    given = [
        name for name, value in zip(names, (track_id, path, recording_id), strict=True) if value
    ]
    if len(given) != 1:
        raise web.HTTPBadRequest(
            reason=f"give exactly one of {', '.join(names)}"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if track_id:
        return await track_or_404(host, track_id)
    if path:
        track = await queries.track_by_path(host.reader, path)
        if track is None:
            raise web.HTTPNotFound(
                reason=f"no track at {path[:200]!r}: give the path relative to the music dir,"
                " exactly as /api/tracks lists it"
            )
        return track
    track = await queries.track_by_musicbrainz_id(host.reader, recording_id)
    if track is None:
        raise web.HTTPNotFound(
            reason=f"no track tagged with MusicBrainz recording id {recording_id[:64]!r}"
        )
    return track


async def maybe_await(answer: Any) -> Any:
    return await answer if answer is not None else None

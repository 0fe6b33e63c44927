"""Answers built from the embedding space: similar tracks, text search, paths and mixes.

Each takes the host and a validated request and returns the JSON answer, so the playlist
route can turn any of them into a playlist.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from aiohttp import web

from soundspan_hooks import AnalyzerInfo, HostContext
from soundspan_hooks.openapi import track_json
from soundspan_plugins.vibe_api import queries
from soundspan_plugins.vibe_api.handling import (
    maybe_await,
    pick_analyzer,
    scored_results,
    searchable,
    track_or_404,
)
from soundspan_plugins.vibe_api.schema import MixRequest, PathQuery, SearchRequest, SimilarQuery

TRACK_ID = re.compile(r"^[0-9a-f]{32}$")
TAG_CENTROID_TRACKS = 10  # a text placed through tags sits at the mean of its best matches


async def similar_answer(host: HostContext, track_id: str, query: SimilarQuery) -> dict[str, Any]:
    track = await track_or_404(host, track_id)
    analyzer = pick_analyzer(await host.describe_analyzers(), query.analyzer)
    nearest = await queries.nearest_contents(
        host.engine, analyzer.embedding_table, track.content_id, query.limit
    )
    if nearest is None:
        raise _not_analyzed(track, analyzer)
    return {
        "track": track_json(track),
        "analyzer": analyzer.name,
        "results": await scored_results(host, nearest),
    }


async def search_answer(host: HostContext, body: SearchRequest) -> dict[str, Any]:
    analyzers = {info.name: info for info in await host.describe_analyzers()}
    embedding = await maybe_await(host.hook.soundspan_embed_text(host=host, text=body.text))
    if embedding is not None and searchable(analyzers.get(embedding.analyzer)):
        table = analyzers[embedding.analyzer].embedding_table
        nearest = await queries.nearest_to_vector(host.engine, table, embedding.vector, body.limit)
        return {"analyzer": embedding.analyzer, "results": await scored_results(host, nearest)}
    tag_search = await _search_tags(host, body.text, body.limit)
    contents = [(result.content_id, result.score) for result in tag_search.results]
    return {
        "analyzer": tag_search.analyzer,
        "matched_tags": list(tag_search.matched_tags),
        "results": await scored_results(host, contents, scores_are_distances=False),
    }


async def path_answer(host: HostContext, query: PathQuery) -> dict[str, Any]:
    """Tracks whose embeddings step evenly from one track's to another's.

    The ideal points lie on the great circle between the two (cosine space); each step takes
    the nearest unused track, by another artist than the step before where one is near.
    """
    start = await track_or_404(host, query.start)
    end = await track_or_404(host, query.end)
    if start.content_id == end.content_id:
        raise web.HTTPBadRequest(reason="from and to are the same recording")
    analyzer = pick_analyzer(await host.describe_analyzers(), query.analyzer)
    table = analyzer.embedding_table
    known = await queries.embeddings(host.engine, table, [start.content_id, end.content_id])
    for track in (start, end):
        if track.content_id not in known:
            raise _not_analyzed(track, analyzer)
    ideal = waypoints(known[start.content_id], known[end.content_id], query.length)
    candidates = await queries.nearest_to_each(
        host.engine, table, ideal[1:-1], limit=query.length + 10
    )
    every_content = {content for found in candidates for content, _ in found}
    tracks = await queries.representative_tracks(host.engine, list(every_content))
    tracks.update({start.content_id: start, end.content_id: end})
    last = len(ideal) - 1
    chosen = [(start.content_id, 0.0, 0)]
    used = {start.content_id, end.content_id}
    for step, found in enumerate(candidates, start=1):
        previous_artist = tracks[chosen[-1][0]].artist
        unused = sorted(
            (pair for pair in found if pair[0] not in used and pair[0] in tracks),
            key=lambda pair: pair[1],
        )
        if not unused:
            continue  # a library smaller than the path: a shorter path
        by_others = [pair for pair in unused if not _same_artist(tracks[pair[0]], previous_artist)]
        content, distance = (by_others or unused)[0]
        chosen.append((content, distance, step))
        used.add(content)
    chosen.append((end.content_id, 0.0, last))
    return {
        "analyzer": analyzer.name,
        "steps": [
            {
                "track": track_json(tracks[content]),
                "position": round(step / last, 6),
                "distance": round(distance, 6),
            }
            for content, distance, step in chosen
        ],
    }


def waypoints(start: np.ndarray, end: np.ndarray, count: int) -> np.ndarray:
    """`count` unit vectors evenly spaced along the great circle from start to end."""
    a, b = _unit(start), _unit(end)
    angle = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
    steps = np.linspace(0.0, 1.0, count)[:, None]
    if np.sin(angle) < 1e-6:  # (anti)parallel: no single great circle, a straight line will do
        return np.array([_unit(point) for point in (1 - steps) * a + steps * b])
    return (np.sin((1 - steps) * angle) * a + np.sin(steps * angle) * b) / np.sin(angle)


async def mix_answer(host: HostContext, body: MixRequest) -> dict[str, Any]:
    """Tracks nearest to the normalised sum of some vibes less others (tracks or texts)."""
    analyzer = pick_analyzer(await host.describe_analyzers(), body.analyzer)
    items, total, own_contents = [], None, set()
    for sign, group in ((1, body.add), (-1, body.subtract)):
        for item in group:
            vector, kind, via, content = await _place(host, analyzer, item)
            items.append({"item": item, "sign": sign, "kind": kind, "via": via})
            total = sign * vector if total is None else total + sign * vector
            if content is not None:
                own_contents.add(content)
    if total is None or np.linalg.norm(total) < 1e-6:
        raise web.HTTPBadRequest(reason="the mix cancels out: nothing is left to search near")
    nearest = await queries.nearest_to_vector(
        host.engine, analyzer.embedding_table, _unit(total), body.limit + len(own_contents)
    )
    found = [pair for pair in nearest if pair[0] not in own_contents][: body.limit]
    return {
        "analyzer": analyzer.name,
        "items": items,
        "results": await scored_results(host, found),
    }


async def _place(
    host: HostContext, analyzer: AnalyzerInfo, item: str
) -> tuple[np.ndarray, str, str, str | None]:
    """An item's unit vector in the analyzer's space: a track's embedding, else a text's,
    through the analyzer's text tower or, without one, the tracks its words' tags name."""
    table = analyzer.embedding_table
    track = await queries.track_by_id(host.engine, item) if TRACK_ID.match(item) else None
    if track is not None:
        known = await queries.embeddings(host.engine, table, [track.content_id])
        if track.content_id not in known:
            raise _not_analyzed(track, analyzer)
        return _unit(known[track.content_id]), "track", analyzer.name, track.content_id
    embedding = await maybe_await(host.hook.soundspan_embed_text(host=host, text=item))
    if embedding is not None and embedding.analyzer == analyzer.name:
        return _unit(np.asarray(embedding.vector)), "text", analyzer.name, None
    tag_search = await _search_tags(host, item, TAG_CENTROID_TRACKS)
    known = await queries.embeddings(
        host.engine, table, [result.content_id for result in tag_search.results]
    )
    if not known:
        raise web.HTTPNotFound(
            reason=f"cannot place {item[:100]!r}: it is no track id, and no"
            f" {analyzer.name}-analyzed track carries a tag it names"
        )
    centroid = np.mean([_unit(vector) for vector in known.values()], axis=0)
    return _unit(centroid), "text", tag_search.analyzer, None


async def _search_tags(host: HostContext, text: str, limit: int) -> Any:
    tag_search = await maybe_await(
        host.hook.soundspan_search_tags(host=host, text=text, limit=limit)
    )
    if tag_search is None:
        raise web.HTTPServiceUnavailable(
            reason="no analyzer can search by text: enable clap (text embeddings) or musicnn (tags)"
        )
    return tag_search


def _same_artist(track: Any, artist: str | None) -> bool:
    return artist is not None and track.artist == artist


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def _not_analyzed(track: Any, analyzer: AnalyzerInfo) -> web.HTTPConflict:
    return web.HTTPConflict(
        reason=f"track {track.id} has no {analyzer.name} analysis yet"
        f" (its state: /api/tracks/{track.id})"
    )

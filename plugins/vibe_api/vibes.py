"""Answers built from the embedding space: similar tracks, text search, paths and mixes.

Each takes the host and a validated request and returns the JSON answer, so the playlist
route can turn any of them into a playlist. Lists are shaped for listening (shaping.py): caps
per artist and album, versions folded, and why each track was chosen.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from aiohttp import web

from soundspan_hooks import (
    AnalyzerInfo,
    EmbedsText,
    HostContext,
    TagSearch,
    TextEmbedding,
    by_search_rank,
)
from soundspan_hooks.openapi import track_json
from soundspan_plugins.vibe_api import queries
from soundspan_plugins.vibe_api.exclusions import excluded_among, excluded_near
from soundspan_plugins.vibe_api.handling import (
    content_tags,
    pick_analyzer,
    scored_results,
    searchable,
    tag_keeper,
    track_named,
    track_or_404,
    why,
)
from soundspan_plugins.vibe_api.schema import (
    MixRequest,
    PathQuery,
    SearchRequest,
    SimilarLookup,
    SimilarQuery,
)
from soundspan_plugins.vibe_api.settings import exclusions_of
from soundspan_plugins.vibe_api.shaping import Caps, Chosen, Shaper, shaped_nearest

TRACK_ID = re.compile(r"^[0-9a-f]{32}$")
TAG_CENTROID_TRACKS = 10  # a text placed through tags sits at the mean of its best matches
EVERYWHERE = 2.0  # the largest cosine distance


async def similar_answer(
    host: HostContext, track_id: str | None, query: SimilarQuery | SimilarLookup
) -> dict[str, Any]:
    """Tracks nearest to one track: by `track_id`, else by the lookup's id, path or mbid."""
    if track_id is not None:
        track = await track_or_404(host, track_id)
    else:
        track = await track_named(host, query.id, query.path, query.mbid, ("id", "path", "mbid"))
    analyzer = pick_analyzer(await host.describe_analyzers(), query.analyzer)

    async def nearest(count: int) -> list[tuple[str, float]]:
        found = await queries.nearest_contents(
            host.reader,
            analyzer.embedding_table,
            track.content_id,
            count,
            exclusions=exclusions_of(host),
        )
        if found is None:
            raise _not_analyzed(track, analyzer)
        return found

    chosen = await shaped_nearest(nearest, _tracks_of(host), _caps(query), [track], query.limit)
    answer = {
        "track": track_json(track),
        "analyzer": analyzer.name,
        "results": await scored_results(host, chosen, query_contents=[track.content_id]),
    }
    if not exclusions_of(host).conditions():
        return answer
    table = analyzer.embedding_table
    source = (await queries.embeddings(host.reader, table, [track.content_id]))[track.content_id]
    point = (source, _reach(chosen, query.limit))
    return await _telling_excluded(host, answer, table, [point], [track])


async def search_answer(host: HostContext, body: SearchRequest) -> dict[str, Any]:
    embedding, info = await _embedded(host, body.text)
    if embedding is not None and info is not None:
        table = info.embedding_table

        async def nearest(count: int) -> list[tuple[str, float]]:
            return await queries.nearest_to_vector(
                host.reader, table, embedding.vector, count, exclusions=exclusions_of(host)
            )

        chosen = await shaped_nearest(nearest, _tracks_of(host), _caps(body), [], body.limit)
        results = await scored_results(host, chosen, query_tags=await _tags_named(host, body.text))
        answer = {"analyzer": embedding.analyzer, "results": results}
        point = (embedding.vector, _reach(chosen, body.limit))
        return await _telling_excluded(host, answer, table, [point], [])
    searches = []  # each look's tag search: the last one names the tags matched

    async def ranked(count: int) -> list[tuple[str, float]]:
        searches.append(await _search_tags(host, body.text, count))
        return [(result.content_id, result.score) for result in searches[-1].results]

    chosen = await shaped_nearest(ranked, _tracks_of(host), _caps(body), [], body.limit)
    tag_search = searches[-1]
    answer = {
        "analyzer": tag_search.analyzer,
        "matched_tags": list(tag_search.matched_tags),
        "results": await scored_results(
            host, chosen, query_tags=tag_search.matched_tags, scores_are_distances=False
        ),
    }
    # the rules' losses: the tag ranking's contents above its last result (all, if short)
    ranking = [result.content_id for result in tag_search.results]
    if len(chosen) >= body.limit:
        ranking = ranking[: ranking.index(chosen[-1].content_id)]
    excluded = await excluded_among(host.reader, exclusions_of(host), ranking)
    return answer | ({"excluded": excluded} if excluded else {})


async def path_answer(host: HostContext, query: PathQuery) -> dict[str, Any]:
    """Tracks whose embeddings step evenly from one track's to another's.

    The ideal points lie on the great circle between the two (cosine space); each step takes
    the nearest unused track within the caps and not a version of one taken, by another
    artist than the step before where one is near.
    """
    start = await track_named(
        host, query.start, query.start_path, query.start_mbid, ("from", "from_path", "from_mbid")
    )
    end = await track_named(
        host, query.end, query.end_path, query.end_mbid, ("to", "to_path", "to_mbid")
    )
    if start.content_id == end.content_id:
        raise web.HTTPBadRequest(reason="from and to are the same recording")
    analyzer = pick_analyzer(await host.describe_analyzers(), query.analyzer)
    table = analyzer.embedding_table
    known = await queries.embeddings(host.reader, table, [start.content_id, end.content_id])
    for track in (start, end):
        if track.content_id not in known:
            raise _not_analyzed(track, analyzer)
    ideal = waypoints(known[start.content_id], known[end.content_id], query.length)
    # room for the tracks used by earlier steps and for those the caps leave out
    candidates = await queries.nearest_to_each(
        host.reader, table, ideal[1:-1], limit=2 * query.length + 10, exclusions=exclusions_of(host)
    )
    every_content = {content for found in candidates for content, _ in found}
    tracks = await _tracks_of(host)(list(every_content))
    tracks.update({start.content_id: start, end.content_id: end})
    last = len(ideal) - 1
    chosen = [(start.content_id, 0.0, 0)]
    used = {start.content_id, end.content_id}
    shaper = Shaper(_caps(query), [start, end])
    for step, found in enumerate(candidates, start=1):
        previous_artist = tracks[chosen[-1][0]].artist
        allowed = sorted(
            (
                pair
                for pair in found
                if pair[0] not in used
                and pair[0] in tracks
                and not shaper.folds(tracks[pair[0]])
                and shaper.within_caps(tracks[pair[0]])
            ),
            key=lambda pair: pair[1],
        )
        if not allowed:
            continue  # a library smaller than the path, or capped: a shorter path
        by_others = [pair for pair in allowed if not _same_artist(tracks[pair[0]], previous_artist)]
        content, distance = (by_others or allowed)[0]
        chosen.append((content, distance, step))
        used.add(content)
        shaper.count(tracks[content], None)
    chosen.append((end.content_id, 0.0, last))
    tags = await content_tags(host, [content for content, _, _ in chosen])
    ends = {content: set(tags.get(content, ())) for content in (start.content_id, end.content_id)}
    answer = {
        "analyzer": analyzer.name,
        "steps": [
            {
                "track": track_json(tracks[content]),
                "position": round(step / last, 6),
                "distance": round(distance, 6),
                # an end shares with the other end, a step between with either end
                "why": why(
                    tags.get(content, ()),
                    set().union(*(shared for other, shared in ends.items() if other != content)),
                ),
            }
            for content, distance, step in chosen
        ],
    }
    # each step between the ends lost what lay nearer its ideal point than the track it took
    points = [(ideal[step], distance) for _, distance, step in chosen[1:-1]]
    return await _telling_excluded(host, answer, table, points, [start, end])


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
    items, total, own_contents, seeds, words = [], None, set(), {}, []
    for sign, group in ((1, body.add), (-1, body.subtract)):
        for item in group:
            vector, kind, via, track = await _place(host, analyzer, item)
            items.append({"item": item, "sign": sign, "kind": kind, "via": via})
            total = sign * vector if total is None else total + sign * vector
            if track is not None:
                own_contents.add(track.content_id)
            # what is added counts towards the caps, and the tags it has say why
            if sign > 0 and track is not None:
                seeds[track.id] = track
            elif sign > 0:
                words.extend(await _tags_named(host, item))
    if total is None or np.linalg.norm(total) < 1e-6:
        raise web.HTTPBadRequest(reason="the mix cancels out: nothing is left to search near")
    query = _unit(total)

    async def nearest(count: int) -> list[tuple[str, float]]:
        found = await queries.nearest_to_vector(
            host.reader,
            analyzer.embedding_table,
            query,
            count + len(own_contents),
            exclusions=exclusions_of(host),
        )
        return [pair for pair in found if pair[0] not in own_contents][:count]

    chosen = await shaped_nearest(
        nearest, _tracks_of(host), _caps(body), seeds.values(), body.limit
    )
    answer = {
        "analyzer": analyzer.name,
        "items": items,
        "results": await scored_results(
            host,
            chosen,
            query_contents=[seed.content_id for seed in seeds.values()],
            query_tags=words,
        ),
    }
    point = (query, _reach(chosen, body.limit))
    return await _telling_excluded(
        host, answer, analyzer.embedding_table, [point], own_contents=own_contents
    )


async def _place(
    host: HostContext, analyzer: AnalyzerInfo, item: str
) -> tuple[np.ndarray, str, str, Any | None]:
    """An item's unit vector in the analyzer's space: a track's embedding, else a text's,
    through the analyzer's text tower or, without one, the tracks its words' tags name."""
    table = analyzer.embedding_table
    track = await queries.track_by_id(host.reader, item) if TRACK_ID.match(item) else None
    if track is not None:
        known = await queries.embeddings(host.reader, table, [track.content_id])
        if track.content_id not in known:
            raise _not_analyzed(track, analyzer)
        return _unit(known[track.content_id]), "track", analyzer.name, track
    embedder = host.analyzers.get(analyzer.name)
    embedding = await embedder.embed_text(item) if isinstance(embedder, EmbedsText) else None
    if embedding is not None:
        return _unit(np.asarray(embedding.vector)), "text", analyzer.name, None
    tag_search = await _search_tags(host, item, TAG_CENTROID_TRACKS)
    known = await queries.embeddings(
        host.reader, table, [result.content_id for result in tag_search.results]
    )
    if not known:
        raise web.HTTPNotFound(
            reason=f"cannot place {item[:100]!r}: it is no track id, and no"
            f" {analyzer.name}-analyzed track carries a tag it names"
        )
    centroid = np.mean([_unit(vector) for vector in known.values()], axis=0)
    return _unit(centroid), "text", tag_search.analyzer, None


async def _embedded(
    host: HostContext, text: str
) -> tuple[TextEmbedding | None, AnalyzerInfo | None]:
    """The text in the space of the first analyzer, by search rank, that can embed it now and
    has embeddings to search; (None, None) where none can."""
    for embedder in by_search_rank(host.analyzers.values(), EmbedsText):
        info = embedder.info()
        if searchable(info) and (embedding := await embedder.embed_text(text)) is not None:
            return embedding, info
    return None, None


async def _search_tags(host: HostContext, text: str, limit: int) -> TagSearch:
    keeper = tag_keeper(host)
    if keeper is None:
        raise web.HTTPServiceUnavailable(
            reason="no analyzer can search by text: enable clap (text embeddings) or musicnn (tags)"
        )
    return await keeper.search_tags(text, limit)


async def _tags_named(host: HostContext, text: str) -> tuple[str, ...]:
    """The tags a text names (e.g. "chill jazz piano": chill, jazz); none without a tagger."""
    keeper = tag_keeper(host)
    return (await keeper.search_tags(text, 0)).matched_tags if keeper is not None else ()


def _tracks_of(host: HostContext) -> Any:
    return functools.partial(
        queries.representative_tracks, host.reader, exclusions=exclusions_of(host)
    )


def _reach(chosen: list[Chosen], limit: int) -> float:
    """How far a list reached from its query: its farthest result, or everywhere when it came
    out short (then every excluded track could have been in it)."""
    return max(one.value for one in chosen) if len(chosen) >= limit else EVERYWHERE


async def _telling_excluded(
    host: HostContext,
    answer: dict[str, Any],
    table: str,
    points: list[tuple[Any, float]],
    seeds: Sequence[Any] = (),
    own_contents: Iterable[str] = (),
) -> dict[str, Any]:
    """The answer with `excluded` (how many tracks the rules left out of it, and by which
    rule) where they left some out."""
    contents = {*own_contents, *(seed.content_id for seed in seeds)}
    excluded = await excluded_near(host.reader, table, exclusions_of(host), points, contents)
    return answer | ({"excluded": excluded} if excluded else {})


def _caps(request: Any) -> Caps:
    return Caps.asked(request.max_per_artist, request.max_per_album)


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

"""Similar tracks, paths and mixes as plain ranked lists, for other plugins (through the
soundspan_similar_tracks, soundspan_track_path and soundspan_track_mix hooks): the same
queries as the API's, without the answer's JSON and its `why`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from soundspan_hooks import HostContext, RankedTrack, TrackUnavailable
from soundspan_plugins.vibe_api import queries, vibes
from soundspan_plugins.vibe_api.handling import pick_analyzer, track_or_404
from soundspan_plugins.vibe_api.schema import MAX_LIMIT, MAX_PATH_LENGTH, MixRequest, PathQuery
from soundspan_plugins.vibe_api.settings import exclusions_of
from soundspan_plugins.vibe_api.shaping import MAX_CANDIDATES, Caps, shaped_nearest

# a music server's mix asks for up to 200 at every click: a first look a quarter larger than
# the list (the API's lists look at four times more), further only where caps thinned it
FIRST_LOOK_MARGIN = 4
# what the API answers for a track it cannot use: unknown (404) or not analyzed (409)
UNAVAILABLE = (web.HTTPNotFound, web.HTTPConflict)


def reporting_unavailable(
    answer: Callable[..., Awaitable[list[RankedTrack]]],
) -> Callable[..., Awaitable[list[RankedTrack]]]:
    """The API's 404 and 409 for a track as the hooks' TrackUnavailable."""

    @functools.wraps(answer)
    async def wrapped(*args: Any, **kwargs: Any) -> list[RankedTrack]:
        try:
            return await answer(*args, **kwargs)
        except UNAVAILABLE as error:
            raise TrackUnavailable(error.reason) from None

    return wrapped


@reporting_unavailable
async def similar_tracks(
    host: HostContext, track_id: str, limit: int, shaped: bool, max_per_artist: int
) -> list[RankedTrack]:
    """Nearest first; `shaped` as the API's lists (versions folded, caps), else as found."""
    track = await track_or_404(host, track_id)
    analyzer = pick_analyzer(await host.describe_analyzers(), None)
    limit = min(limit, MAX_CANDIDATES)  # a caller may drop some (a server lacks them)
    exclusions = exclusions_of(host)

    async def nearest(count: int) -> list[tuple[str, float]]:
        found = await queries.nearest_contents(
            host.reader, analyzer.embedding_table, track.content_id, count, exclusions=exclusions
        )
        if found is None:
            raise web.HTTPConflict(reason=f"track {track.id} has no {analyzer.name} analysis yet")
        return found

    tracks_of = functools.partial(queries.representative_tracks, host.reader, exclusions=exclusions)
    if shaped:
        caps = Caps.asked(max_per_artist, 0)
        first_look = limit + limit // FIRST_LOOK_MARGIN + 1
        chosen = await shaped_nearest(nearest, tracks_of, caps, [track], limit, first_look)
        return [_ranked(one.track, one.value) for one in chosen]
    found = await nearest(limit)
    tracks = await tracks_of([content for content, _ in found])
    return [_ranked(tracks[content], distance) for content, distance in found if content in tracks]


@reporting_unavailable
async def track_path(
    host: HostContext, start_track_id: str, end_track_id: str, length: int
) -> list[RankedTrack]:
    query = PathQuery.model_validate(
        {"from": start_track_id, "to": end_track_id, "length": min(max(length, 2), MAX_PATH_LENGTH)}
    )
    answer = await vibes.path_answer(host, query)
    return [_ranked_json(step["track"], step["distance"]) for step in answer["steps"]]


@reporting_unavailable
async def track_mix(
    host: HostContext, add: list[str], subtract: list[str], limit: int
) -> list[RankedTrack]:
    body = MixRequest(add=add, subtract=subtract, limit=min(limit, MAX_LIMIT))
    answer = await vibes.mix_answer(host, body)
    return [_ranked_json(result["track"], 1.0 - result["score"]) for result in answer["results"]]


def _ranked(track: Any, distance: float) -> RankedTrack:
    return RankedTrack(track.id, track.path, track.title, track.artist, track.album, distance)


def _ranked_json(track: dict[str, Any], distance: float) -> RankedTrack:
    return RankedTrack(
        track["id"], track["path"], track["title"], track["artist"], track["album"], distance
    )

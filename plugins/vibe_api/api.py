"""The vibe API's routes: tracks, similar tracks, text-to-vibe search, paths, mixes, the
library map and playlists. Each handler validates its request and hands it to vibes.py (or
playlists.py), which builds the answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from soundspan_hooks import HOST, HostContext
from soundspan_hooks.openapi import json_body, parse, track_json
from soundspan_plugins.vibe_api import queries, vibes
from soundspan_plugins.vibe_api.handling import maybe_await, pick_analyzer, track_or_404
from soundspan_plugins.vibe_api.playlists import (
    PlaylistFolderRefused,
    PlaylistRefused,
    playlists_folder,
    write_playlist,
)
from soundspan_plugins.vibe_api.schema import (
    MapQuery,
    MixRequest,
    PathQuery,
    PlaylistRecipe,
    PlaylistRequest,
    SearchRequest,
    SimilarLookup,
    SimilarQuery,
    TrackQuery,
)
from soundspan_plugins.vibe_api.settings import settings_of
from soundspan_plugins.vibe_api.vibe_map import LibraryMaps

MAPS = web.AppKey("vibe_api_maps", LibraryMaps)


routes = web.RouteTableDef()


@routes.get("/api/tracks")
async def list_tracks(request: web.Request) -> web.Response:
    """Find tracks by relative path or by words in their tags."""
    query = parse(TrackQuery, dict(request.query))
    host = request.app[HOST]
    rows, total = await queries.find_tracks(
        host.reader, query.path, query.q, query.limit, query.offset
    )
    return web.json_response(
        {
            "tracks": [track_json(row) for row in rows],
            "total": total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


@routes.get("/api/tracks/{track_id}")
async def get_track(request: web.Request) -> web.Response:
    """A track's metadata, each analyzer's state and failure reason, and their results."""
    host = request.app[HOST]
    track = await track_or_404(host, request.match_info["track_id"])
    details: dict[str, Any] = {}
    for name, analyzer in host.analyzers.items():
        if (result := await analyzer.details(track.content_id)) is not None:
            details[name] = result
    return web.json_response(
        {
            "track": track_json(track),
            "missing": track.missing_since is not None,
            "analyses": await queries.analysis_states(host.reader, track.content_id),
            "results": details,
        }
    )


@routes.get("/api/vibe/similar/{track_id}")
async def similar(request: web.Request) -> web.Response:
    """Tracks nearest to one track in an analyzer's embedding space (cosine)."""
    query = parse(SimilarQuery, dict(request.query))
    answer = await vibes.similar_answer(request.app[HOST], request.match_info["track_id"], query)
    return web.json_response(answer)


@routes.get("/api/vibe/similar")
async def similar_by_key(request: web.Request) -> web.Response:
    """Tracks nearest to one track named by our id, its path or its MusicBrainz id: the keys
    a music server's plugin can forward as they are."""
    query = parse(SimilarLookup, dict(request.query))
    return web.json_response(await vibes.similar_answer(request.app[HOST], None, query))


@routes.post("/api/vibe/search")
async def search(request: web.Request) -> web.Response:
    """Text-to-vibe: through an analyzer that embeds text, else through tag names."""
    body = parse(SearchRequest, await json_body(request))
    return web.json_response(await vibes.search_answer(request.app[HOST], body))


@routes.get("/api/vibe/path")
async def path(request: web.Request) -> web.Response:
    """A sequence of tracks drifting evenly from one track to another."""
    query = parse(PathQuery, dict(request.query))
    return web.json_response(await vibes.path_answer(request.app[HOST], query))


@routes.post("/api/vibe/mix")
async def mix(request: web.Request) -> web.Response:
    """Tracks nearest to the vibes of some tracks and texts, less others."""
    body = parse(MixRequest, await json_body(request))
    return web.json_response(await vibes.mix_answer(request.app[HOST], body))


@routes.get("/api/vibe/map")
async def library_map(request: web.Request) -> web.Response:
    """2-D coordinates of every analyzed track, for drawing the library."""
    query = parse(MapQuery, dict(request.query))
    host = request.app[HOST]
    analyzer = pick_analyzer(await host.describe_analyzers(), query.analyzer)
    body = await request.app[MAPS].body(analyzer)
    return web.Response(body=body, content_type="application/json")


@routes.post("/api/playlists")
async def create_playlist(request: web.Request) -> web.Response:
    """Write an extended M3U playlist from track ids, a path, a mix, similar tracks or a search,
    or send it to a music server (`send_to`)."""
    body = parse(PlaylistRequest, await json_body(request))
    host = request.app[HOST]
    track_ids = await playlist_track_ids(host, body)
    if body.send_to is not None:
        return await _send(host, body, track_ids)
    tracks = await queries.playlist_tracks(host.reader, track_ids)
    if not tracks:
        raise web.HTTPNotFound(reason="none of the playlist's tracks is in the library")
    try:
        folder = playlists_folder(host.music_dir, settings_of(host).playlists_dir)
        written = await asyncio.to_thread(
            write_playlist, folder, body.name, host.music_dir, tracks, body.overwrite
        )
    except PlaylistRefused as error:
        raise web.HTTPBadRequest(reason=str(error)) from None
    except PlaylistFolderRefused as error:
        raise web.HTTPServiceUnavailable(reason=str(error)) from None
    except FileExistsError as error:
        raise web.HTTPConflict(reason=str(error)) from None
    except OSError as error:
        raise web.HTTPServiceUnavailable(
            reason=f"cannot write into {folder}: {error.strerror}"
            " (is the music dir mounted read-only? set [vibe_api] playlists_dir)"
        ) from None
    answer: dict[str, Any] = {
        "name": body.name,
        "file": str(written.file.relative_to(host.music_dir))
        if written.file.is_relative_to(host.music_dir)
        else str(written.file),
        "tracks": written.tracks,
    }
    if written.left_out:
        answer["left_out"] = written.left_out
    return web.json_response(answer, status=201)


async def _send(host: HostContext, body: PlaylistRequest, track_ids: list[str]) -> web.Response:
    """Not an M3U as well: Navidrome would import the file as a second copy of the playlist."""
    assert body.send_to is not None
    destination = body.send_to.model_dump()
    sent = await maybe_await(
        host.hook.soundspan_send_playlist(
            host=host, name=body.name, track_ids=track_ids, destination=destination
        )
    )
    if sent is None:  # switched off, not away: a 4xx, so a client does not retry it
        raise web.HTTPConflict(
            reason="no plugin sends playlists to a music server: enable [subsonic] (enabled ="
            " true with its url and users in settings.toml, or SOUNDSPAN_SUBSONIC__ENABLED=true)"
        )
    return web.json_response({"name": body.name, "sent": sent}, status=201)


async def playlist_track_ids(host: HostContext, body: PlaylistRecipe) -> list[str]:
    """The track ids of a playlist, in order, from its one source."""
    if body.track_ids is not None:
        return body.track_ids
    if body.path is not None:
        answer = await vibes.path_answer(host, PathQuery.model_validate(body.path.model_dump()))
        return [step["track"]["id"] for step in answer["steps"]]
    if body.mix is not None:
        answer = await vibes.mix_answer(host, body.mix)
    elif body.similar is not None:
        source = body.similar
        query = SimilarQuery.model_validate(source.model_dump(exclude={"track_id"}))
        answer = await vibes.similar_answer(host, source.track_id, query)
    else:
        answer = await vibes.search_answer(host, body.search)
        if not answer["results"] and answer.get("matched_tags") == []:
            # what POST /api/vibe/search tells: no tag matched, not "nothing is analyzed"
            raise web.HTTPNotFound(
                reason=f"no tag matches the words of {body.search.text[:100]!r}: without a text"
                f" model, search finds tracks by the words of their tags ({answer['analyzer']});"
                " use such words (rock, piano, chill...), or enable [clap] for any text"
            )
    return [result["track"]["id"] for result in answer["results"]]

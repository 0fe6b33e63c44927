"""The routes the AudioMuse-AI plugins of Navidrome, Jellyfin and Lyrion call, answered from our
index with the music server's ids. Every answer carries only songs the server has."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from aiohttp import web

from soundspan_hooks import HOST, HostContext, RankedTrack
from soundspan_hooks.openapi import json_body, parse
from soundspan_plugins.instant_mix import library
from soundspan_plugins.instant_mix.artists import similar_artists
from soundspan_plugins.instant_mix.errors import ApiError, answering_errors
from soundspan_plugins.instant_mix.lists import vibe_list
from soundspan_plugins.instant_mix.schema import (
    MAX_ALCHEMY_ITEMS,
    MAX_PATH_STEPS,
    MAX_RESULTS,
    AlchemyRequest,
    FindPathQuery,
    SearchTracksQuery,
    SimilarArtistsQuery,
    SimilarTracksQuery,
)
from soundspan_plugins.instant_mix.server_songs import ServerSongs
from soundspan_plugins.instant_mix.settings import NAME, InstantMixSettings

ARTIST_SEED_TRACKS = 5  # an artist in an alchemy stands for this many of its tracks
SIMILAR_CANDIDATES = 4 * MAX_RESULTS  # looked at, at most, for songs the server has
# read once: the metadata's files cost 0.5 ms a read, and clients probe /api/config often
HOST_VERSION = version("soundspan-host")
routes = web.RouteTableDef()


def song_json(song_id: str, track: RankedTrack) -> dict[str, Any]:
    """A song as the plugins read it; a title-less file goes by its file name, as servers do."""
    return {
        "item_id": song_id,
        "title": library.song_title(track.title, track.path),
        "author": track.artist or "",
        "album": track.album or "",
        "distance": round(track.distance, 6),
    }


def _settings(host: HostContext) -> InstantMixSettings:
    return host.section(NAME)


@routes.get("/api/similar_tracks")
@answering_errors
async def similar_tracks(request: web.Request) -> web.Response:
    """Songs that sound like one song, nearest first, the seed left out."""
    query = parse(SimilarTracksQuery, dict(request.query))
    host = request.app[HOST]
    songs = ServerSongs(host, query.server)
    if query.item_id is not None:
        seed = await songs.track_of(query.item_id)
    else:
        seed = await library.track_by_title_and_artist(host.reader, query.title, query.artist)
        if seed is None:
            raise ApiError(404, f"no track {query.title[:100]!r} by {query.artist[:100]!r} here")
    max_per_artist = _settings(host).max_per_artist

    async def nearest(count: int) -> list[RankedTrack]:
        return await vibe_list(
            host,
            "soundspan_similar_tracks",
            track_id=seed,
            limit=count,
            shaped=query.eliminate_duplicates,
            max_per_artist=max_per_artist,
        )

    found = await songs.on_server(nearest, min(query.n, MAX_RESULTS), SIMILAR_CANDIDATES)
    return web.json_response([song_json(song_id, track) for song_id, track in found])


@routes.get("/api/find_path")
@answering_errors
async def find_path(request: web.Request) -> web.Response:
    """Songs stepping evenly from one song to another, both ends included."""
    query = parse(FindPathQuery, dict(request.query))
    host = request.app[HOST]
    songs = ServerSongs(host, query.server)
    start = await songs.track_of(query.start_song_id)
    end = await songs.track_of(query.end_song_id)
    if start == end:
        raise ApiError(400, "the start and end songs are the same track")
    steps = await vibe_list(
        host,
        "soundspan_track_path",
        start_track_id=start,
        end_track_id=end,
        length=min(max(query.max_steps, 2), MAX_PATH_STEPS),
    )
    song_ids = await songs.songs_of([step.track_id for step in steps])
    # the ends are the songs asked for, whichever of a track's songs the matches hold
    song_ids.update({start: query.start_song_id, end: query.end_song_id})
    path = [song_json(song_ids[step.track_id], step) for step in steps if step.track_id in song_ids]
    total = round(sum(song["distance"] for song in path), 6)
    return web.json_response({"path": path, "total_distance": total})


@routes.get("/api/similar_artists")
@answering_errors
async def artists(request: web.Request) -> web.Response:
    """Artists whose songs sound like an artist's, nearest first."""
    query = parse(SimilarArtistsQuery, dict(request.query))
    host = request.app[HOST]
    return web.json_response(await similar_artists(host, ServerSongs(host, query.server), query))


@routes.post("/api/alchemy")
@answering_errors
async def alchemy(request: web.Request) -> web.Response:
    """Songs near the sum of some songs' and artists' vibes, less others'. Writes nothing."""
    body = parse(AlchemyRequest, await json_body(request))
    host = request.app[HOST]
    songs = ServerSongs(host, body.server)
    added: list[str] = []
    subtracted: list[str] = []
    for item in body.items:
        into = added if item.op.upper() == "ADD" else subtracted
        if item.type == "song":
            into.append(await songs.track_of(item.id))
            continue
        name = await songs.artist_name(item.id) or item.id  # the server's id, or a name
        tracks = await library.tracks_by_artist(host.reader, name, ARTIST_SEED_TRACKS)
        if not tracks:
            raise ApiError(404, f"no analyzed track by artist {item.id[:100]!r} here")
        into.extend(track.id for track in tracks)
    added = list(dict.fromkeys(added))[:MAX_ALCHEMY_ITEMS]
    subtracted = list(dict.fromkeys(subtracted))[:MAX_ALCHEMY_ITEMS]

    async def nearest(count: int) -> list[RankedTrack]:
        return await vibe_list(
            host, "soundspan_track_mix", add=added, subtract=subtracted, limit=count
        )

    found = await songs.on_server(nearest, min(body.n, MAX_RESULTS), MAX_RESULTS)
    return web.json_response(
        {"results": [song_json(song_id, track) for song_id, track in found], "filtered_out": []}
    )


@routes.get("/api/search_tracks")
@answering_errors
async def search_tracks(request: web.Request) -> web.Response:
    """The server's songs whose title, artist and album hold the words."""
    query = parse(SearchTracksQuery, dict(request.query))
    words = query.search_query or " ".join(filter(None, (query.artist, query.title)))
    if not words:
        return web.json_response([])
    limit = min((query.end - query.start) if query.end else 20, 500)
    if limit <= 0:
        return web.json_response([])
    host = request.app[HOST]
    rows = await library.tracks_matching(host.reader, words, 2 * (query.start + limit))
    song_ids = await ServerSongs(host, query.server).songs_of([row.id for row in rows])
    found = [row for row in rows if row.id in song_ids][query.start : query.start + limit]
    return web.json_response(
        [
            {
                "item_id": song_ids[row.id],
                "title": library.song_title(row.title, row.path),
                "author": row.artist or "",
                "album": row.album or "",
                "album_artist": row.album_artist or row.artist or "",
            }
            for row in found
        ]
    )


@routes.get("/api/config")
@answering_errors
async def config(request: web.Request) -> web.Response:
    """What this API answers with; clients also call it to see that it answers at all."""
    return web.json_response(
        {
            "server_kind": "soundspan",
            "version": HOST_VERSION,
            "max_songs_per_artist": _settings(request.app[HOST]).max_per_artist,
            "alchemy_default_n_results": AlchemyRequest.model_fields["n"].default,
            "alchemy_max_n_results": MAX_RESULTS,
            "path_distance_metric": "angular",
        }
    )


@routes.get("/api/active_tasks")
@answering_errors
async def active_tasks(request: web.Request) -> web.Response:
    """Nothing to start or wait for here (the index keeps itself): the Jellyfin plugin's
    connection test reads an empty object as a working server."""
    return web.json_response({})

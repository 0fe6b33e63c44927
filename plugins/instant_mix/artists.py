"""Similar artists, from our index: the artists of the tracks nearest to the mix of an
artist's own tracks, nearest first, each with the server's artist id."""

from __future__ import annotations

from statistics import fmean
from typing import Any

from soundspan_hooks import HostContext, RankedTrack
from soundspan_plugins.instant_mix import library
from soundspan_plugins.instant_mix.errors import ApiError
from soundspan_plugins.instant_mix.lists import vibe_list
from soundspan_plugins.instant_mix.schema import SimilarArtistsQuery
from soundspan_plugins.instant_mix.server_songs import ServerSongs

SEED_TRACKS = 10  # the artist's sound: the mix of this many of its tracks
NEIGHBOURS = 200  # tracks near that mix whose artists are ranked
REPRESENTATIVE_SONGS = 3


async def similar_artists(
    host: HostContext, songs: ServerSongs, query: SimilarArtistsQuery
) -> list[dict[str, Any]]:
    name = await _artist_named(songs, query)
    seeds = await library.tracks_by_artist(host.reader, name, SEED_TRACKS)
    if not seeds:
        raise ApiError(404, f"no analyzed track by artist {name[:100]!r} here")
    near = await vibe_list(
        host, "soundspan_track_mix", add=[seed.id for seed in seeds], subtract=[], limit=NEIGHBOURS
    )
    song_ids = await songs.songs_of([track.track_id for track in near] + [s.id for s in seeds])
    by_artist: dict[str, list[RankedTrack]] = {}  # in order of each artist's nearest track
    for track in near:
        if track.artist and track.track_id in song_ids and not _same(track.artist, name):
            by_artist.setdefault(track.artist.casefold(), []).append(track)
    chosen = list(by_artist.values())[: query.n]
    artist_ids = await songs.artist_ids([song_ids[tracks[0].track_id] for tracks in chosen])
    own = [
        {"item_id": song_ids[seed.id], "title": library.song_title(seed.title, seed.path)}
        for seed in seeds
        if seed.id in song_ids
    ][:REPRESENTATIVE_SONGS]
    answer = []
    for tracks in chosen:
        artist: dict[str, Any] = {
            "artist": tracks[0].artist,
            "artist_id": artist_ids.get(song_ids[tracks[0].track_id]),
            "divergence": round(fmean(track.distance for track in tracks), 6),
        }
        if query.include_component_matches:
            theirs = [
                {
                    "item_id": song_ids[track.track_id],
                    "title": library.song_title(track.title, track.path),
                }
                for track in tracks[:REPRESENTATIVE_SONGS]
            ]
            artist["component_matches"] = [
                {"artist1_representative_songs": own, "artist2_representative_songs": theirs}
            ]
        answer.append(artist)
    return answer


async def _artist_named(songs: ServerSongs, query: SimilarArtistsQuery) -> str:
    """The artist's name: the server's artist id asked of the server, else the name given
    (the Navidrome plugin sends the id as `artist`)."""
    if query.artist_id is not None:
        name = await songs.artist_name(query.artist_id)
        if name is None:
            raise ApiError(404, f"the server has no artist {query.artist_id[:100]!r}")
        return name
    assert query.artist is not None
    return await songs.artist_name(query.artist) or query.artist


def _same(artist: str, name: str) -> bool:
    return artist.casefold() == name.casefold()

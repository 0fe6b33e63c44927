"""Instant Mix in the player: the requests that the released AudioMuse-AI plugins send, as
their sources build them, answered by a real host over real HTTP with the song ids of a real
Subsonic server (supysonic, its own process), and parsed as those plugins read the answers.

The library is the vector analyzer's (a file's first eight samples are its embedding), in
tagged FLAC files, so every list is known in advance. The server holds the same files, except
one track we keep locally only: it is the nearest to the seeds, and must never be answered.

Jellyfin and Lyrion send their own ids (a GUID, an LMS number), which no plugin here matches
yet: their request lines are sent with the Subsonic server's ids in their place.
"""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest
from openapi_spec_validator import validate

from soundspan_plugins.subsonic.client import Login, SubsonicClient
from tests.harness.instant_mix_library import (
    LIBRARY,
    listed_songs,
    mix_host,
    read_songs,
    server_song_ids,
    serving,
)
from tests.harness.subsonic_library import USERS


@pytest.fixture
def server(tmp_path, music_dir):
    with serving(tmp_path, music_dir) as running:
        yield running


@pytest.fixture
async def song_ids(server) -> dict[str, str]:
    """Our path -> the server's song id, as the server lists its songs."""
    return await server_song_ids(server)


@pytest.fixture
async def artist_ids(server, song_ids) -> dict[str, str]:
    """Artist name -> the server's artist id."""
    async with aiohttp.ClientSession() as session:
        client = SubsonicClient(session, server.url, Login("alice", USERS["alice"], legacy=True))
        found = {}
        for path, song_id in song_ids.items():
            song = (await client.call("getSong", id=song_id))["song"]
            found[LIBRARY[path][2]] = str(song["artistId"])
        return found


@pytest.fixture
async def host(fast_host, server, vector_analyzer):
    return await mix_host(fast_host, server)


def nearest(seed: str, count: int) -> list[str]:
    """The server's songs nearest to a seed by cosine distance: what an unshaped list holds."""
    others = [path for path in LIBRARY if path != seed]
    return sorted(others, key=lambda path: -float(LIBRARY[path][0] @ LIBRARY[seed][0]))[:count]


async def test_navidrome_instant_mix_gets_the_servers_songs_nearest_first(host, song_ids):
    """NeptuneHub/AudioMuse-AI-NV-plugin, main.go, getAudioMuseSimilarTracks (Go's
    url.Values.Encode sorts the keys):

        GET /api/similar_tracks?eliminate_duplicates=true&item_id=<id>&n=<count>&radius_similarity=true

    read into []audioMuseTrackResponse {item_id, title, author, album string; distance
    float64}; GetSonicSimilarTracks shows 1 - distance, clamped to 0..1, as the similarity."""  # noqa: E501
    by_song = {song_id: path for path, song_id in song_ids.items()}
    seed = "Aurora/North/2.flac"
    plain = await host.get(
        f"/api/similar_tracks?eliminate_duplicates=false&item_id={song_ids[seed]}&n=4"
        "&radius_similarity=true"
    )
    assert plain.status == 200
    songs = read_songs(await plain.json())
    # the local-only track is the nearest of all, and the server has no song for it
    assert [by_song[song["item_id"]] for song in songs] == nearest(seed, 4)
    distances = [song["distance"] for song in songs]
    assert distances == sorted(distances) and 0 <= distances[0] < distances[-1] < 1
    expected = 1 - float(LIBRARY[seed][0] @ LIBRARY[by_song[songs[0]["item_id"]]][0])
    assert distances[0] == pytest.approx(expected, abs=1e-3)
    assert songs[0] | {"distance": 0} == {
        "item_id": song_ids["Aurora/North/1.flac"],
        "title": "Song 1",
        "author": "Aurora",
        "album": "North",
        "distance": 0,
    }

    shaped = await host.get(
        f"/api/similar_tracks?eliminate_duplicates=true&item_id={song_ids[seed]}&n=200"
        "&radius_similarity=true"
    )
    paths = [by_song[song["item_id"]] for song in read_songs(await shaped.json())]
    # "Song 1" once, not its live version; at most two songs of the seed's album with it
    assert paths[:3] == ["Aurora/North/1.flac", "Borealis/Sky/1.flac", "Borealis/Sky/2.flac"]
    assert sorted(paths[3:]) == ["Cirrus/High/1.flac", "Cirrus/High/2.flac", "Dusk/Low/1.flac"]


async def test_jellyfin_instant_mix_and_lyrion_mixer_requests(host, song_ids):
    """NeptuneHub/audiomuse-ai-plugin, Services/AudioMuseService.cs, GetSimilarTracksAsync,
    called by Controller/InstantMixController.cs with an item id (the ids are Jellyfin's; here
    the server's), or with title and artist:

        GET /api/similar_tracks?n=<k>&item_id=<id>
        GET /api/similar_tracks?n=<k>&title=<title>&artist=<artist>

    the answer's array of objects is read for `item_id` (a string). CDrummond/lms-audiomuse-
    mixer, AudioMuseMixer/API.pm, similar_tracks (with Accept: application/json):

        GET /api/similar_tracks?item_id=<id>&n=<n>&eliminate_duplicates=true&radius_similarity=true&mood_similarity=true

    read by Plugin.pm _extractTracks (a bare array) for each `item_id` (or `id`)."""  # noqa: E501
    seed = song_ids["Borealis/Sky/1.flac"]
    jellyfin = await host.get(f"/api/similar_tracks?n=3&item_id={seed}")
    by_id = read_songs(await jellyfin.json())
    assert len(by_id) == 3 and seed not in [song["item_id"] for song in by_id]
    by_tags = await host.get("/api/similar_tracks?n=3&title=lights&artist=BOREALIS")
    assert read_songs(await by_tags.json()) == by_id
    lyrion = await host.get(
        f"/api/similar_tracks?item_id={seed}&n=40&eliminate_duplicates=true"
        "&radius_similarity=true&mood_similarity=true",
        headers={"Accept": "application/json"},
    )
    songs = read_songs(await lyrion.json())
    assert {song["item_id"] for song in songs} <= set(song_ids.values()) - {seed}


async def test_an_unknown_or_unmatched_seed_is_a_404_the_server_falls_back_from(host):
    """Each plugin treats any status but 200 as "ask the next agent" (main.go: `if
    resp.StatusCode != 200`; API.pm _decode: a JSON object with a non-empty `error`)."""
    for request in (
        "/api/similar_tracks?eliminate_duplicates=true&item_id=no-such-song&n=10"
        "&radius_similarity=true",
        "/api/similar_tracks?n=10&title=Only&artist=Nobody",
        "/api/find_path?count=25&end_song_id=x&max_steps=25&mood_pct=100&path_fix_size=false"
        "&start_song_id=y",
    ):
        answer = await host.get(request)
        assert answer.status == 404, request
        body = await answer.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    for request in ("/api/similar_tracks?n=10", "/api/similar_tracks?n=10&item_id=1&server=x"):
        bad = await host.get(request)
        assert bad.status == 400 and isinstance((await bad.json())["error"], str), request


async def test_paths_from_navidrome_jellyfin_and_lyrion_go_from_start_to_end(host, song_ids):
    """NeptuneHub/AudioMuse-AI-NV-plugin, main.go, FindSonicPath (keys sorted by Encode):

        GET /api/find_path?count=25&end_song_id=<id>&max_steps=25&mood_pct=100&path_fix_size=false&start_song_id=<id>

    read into audioMusePathResponse {path: []audioMuseTrackResponse}; NeptuneHub/audiomuse-ai-
    plugin, Services/AudioMuseService.cs, FindPathAsync, and CDrummond/lms-audiomuse-mixer,
    AudioMuseMixer/API.pm, find_path:

        GET /api/find_path?start_song_id=<id>&end_song_id=<id>&max_steps=<n>"""  # noqa: E501
    start, end = song_ids["Aurora/North/1.flac"], song_ids["Cirrus/High/1.flac"]
    for request in (
        f"/api/find_path?count=25&end_song_id={end}&max_steps=25&mood_pct=100"
        f"&path_fix_size=false&start_song_id={start}",
        f"/api/find_path?start_song_id={start}&end_song_id={end}&max_steps=4",
    ):
        answer = await host.get(request)
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        assert set(body) == {"path", "total_distance"} and isinstance(body["total_distance"], float)
        path = read_songs(body["path"])
        ids = [song["item_id"] for song in path]
        assert ids[0] == start and ids[-1] == end and len(ids) == len(set(ids)) >= 3
        assert set(ids) <= set(song_ids.values())
    assert len(ids) <= 4


async def test_similar_artists_and_artist_radio_from_navidrome(host, song_ids, artist_ids):
    """NeptuneHub/AudioMuse-AI-NV-plugin, audiomuse_api.go, getSimilarArtists, with the
    server's artist id (Encode sorts the keys; artistSimilarCount defaults to 10):

        GET /api/similar_artists?artist=<artist id>&include_component_matches=true&n=10

    read into []SimilarArtistsResponse {artist, artist_id string; component_matches
    [{artist1_representative_songs, artist2_representative_songs [{item_id, title}]}]}."""
    for include in ("true", "false"):
        answer = await host.get(
            f"/api/similar_artists?artist={artist_ids['Aurora']}"
            f"&include_component_matches={include}&n=10"
        )
        assert answer.status == 200, await answer.text()
        artists = await answer.json()
        names = [artist["artist"] for artist in artists]
        # by how near their songs are; the local-only artist has no song on the server
        assert names == ["Borealis", "Cirrus", "Dusk"]
        for artist in artists:
            assert artist["artist_id"] == artist_ids[artist["artist"]]
            assert isinstance(artist["divergence"], float)
            assert ("component_matches" in artist) is (include == "true")
    nearest_one = await host.get(
        f"/api/similar_artists?artist={artist_ids['Aurora']}&include_component_matches=true&n=1"
    )
    [borealis] = await nearest_one.json()
    [match] = borealis["component_matches"]
    ours = {song["item_id"] for song in match["artist1_representative_songs"]}
    theirs = {song["item_id"] for song in match["artist2_representative_songs"]}
    assert ours and ours <= {song_ids[path] for path in LIBRARY if path.startswith("Aurora/")}
    assert theirs == {song_ids["Borealis/Sky/1.flac"], song_ids["Borealis/Sky/2.flac"]}
    assert all(isinstance(song["title"], str) for song in match["artist2_representative_songs"])


async def test_alchemy_search_config_and_the_jellyfin_probes(host, song_ids):
    """CDrummond/lms-audiomuse-mixer, AudioMuseMixer/API.pm, alchemy (Content-Type
    application/json; Plugin.pm _extractTracks reads `results`, then each `item_id`):

        POST /api/alchemy {"items": [{"id": <id>, "op": "ADD", "type": "song"}, ...], "n": <n>}

    NeptuneHub/audiomuse-ai-plugin, Services/AudioMuseService.cs: SearchTracksAsync, and the
    probes HealthCheckAsync, GetConfigAsync and (Controller/AudioMuseController.cs,
    TestConnection) `GET /api/active_tasks`:

        GET /api/search_tracks?title=<title>&artist=<artist>
        GET /    GET /api/config    GET /api/active_tasks"""
    seeds = [song_ids["Aurora/North/1.flac"], song_ids["Borealis/Sky/1.flac"]]
    answer = await host.post(
        "/api/alchemy",
        json={"items": [{"id": seed, "op": "ADD", "type": "song"} for seed in seeds], "n": 40},
        headers={"Accept": "application/json"},
    )
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    results = read_songs(body["results"])
    assert {song["item_id"] for song in results} <= set(song_ids.values()) - set(seeds)
    assert results and body["filtered_out"] == []

    found = await host.get("/api/search_tracks?title=Song&artist=Aurora")
    songs = read_songs(await found.json(), {"item_id": str, "title": str, "author": str,
                                            "album": str, "album_artist": str})  # fmt: skip
    assert sorted(song["item_id"] for song in songs) == sorted(
        song_ids[path] for path in LIBRARY if path.startswith("Aurora/")
    )
    for probe in ("/", "/api/config", "/api/active_tasks"):
        assert (await host.get(probe)).status == 200, probe
    assert await (await host.get("/api/active_tasks")).json() == {}
    spec = await (await host.get("/api/openapi.json")).json()
    validate(spec)
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = {(r.method, r.resource.canonical) for r in host.app.router.routes()}
    assert documented == served - {("HEAD", r.resource.canonical) for r in host.app.router.routes()}


async def test_a_seed_the_server_has_but_we_could_not_analyze_is_a_404(
    tmp_path, music_dir, fast_host, vector_analyzer
):
    """Matched to the server's song, but its analysis failed (four samples where the analyzer
    needs eight): no list can start from it, and the server must ask its next agent."""
    short = {"Aurora/North/short.flac": (np.full(4, 0.5), "Short", "Aurora", "North")}
    with serving(tmp_path, music_dir, LIBRARY | short) as server:
        host = await mix_host(fast_host, server, on_server=LIBRARY | short)
        [song_id] = [
            str(song["id"]) for song in await listed_songs(server) if song["title"] == "Short"
        ]
        answer = await host.get(f"/api/similar_tracks?n=10&item_id={song_id}")
        assert answer.status == 404
        assert "analysis" in (await answer.json())["error"]

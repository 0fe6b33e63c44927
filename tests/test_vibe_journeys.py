"""Paths, mixes, the library map and playlists, over real HTTP, on a library whose
embeddings are known (harness/vector_library.py): the test analyzer reads each WAV's first
eight samples as its vector.

Eleven tracks lie on the arc from e0 to e1 (arc/00 .. arc/10); five others point elsewhere,
three of them "south" (a negative first component).
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_host.errors import ConfigError
from soundspan_plugins.vibe_api.playlists import PlaylistRefused, playlist_file
from tests.harness.library import eventually, scalar, settled
from tests.harness.vector_library import (
    ARC,
    OTHERS,
    analyzed_library,
    arc,
    arc_vector,
    axis,
    ids,
    unit,
    write_vector_wav,
)


@pytest.fixture
async def library(fast_host, vector_analyzer, music_dir):
    return await analyzed_library(fast_host, music_dir)


async def test_a_path_steps_evenly_closer_to_its_target(library):
    by_path = await ids(library)
    answer = await library.get(
        "/api/vibe/path", params={"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 6}
    )
    assert answer.status == 200
    body = await answer.json()
    assert body["analyzer"] == "vectors"
    paths = [step["track"]["path"] for step in body["steps"]]
    assert paths == [arc(0), arc(2), arc(4), arc(6), arc(8), arc(10)]
    assert [step["position"] for step in body["steps"]] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert all(step["distance"] < 1e-3 for step in body["steps"])
    target = arc_vector(10)
    vectors = {arc(step): arc_vector(step) for step in range(ARC)}
    to_target = [1 - vectors[path] @ target for path in paths]
    assert all(np.diff(to_target) < 0)


async def test_a_path_avoids_the_same_artist_twice_in_a_row_where_it_can(library):
    by_path = await ids(library)
    engine = library.app[HOST].engine

    async def set_artist(artist: str, *paths: str) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE tracks SET artist = :artist WHERE path = ANY(:paths)"),
                {"artist": artist, "paths": list(paths)},
            )

    async def middle() -> str:
        params = {"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 3}
        body = await (await library.get("/api/vibe/path", params=params)).json()
        return body["steps"][1]["track"]["path"]

    assert await middle() == arc(5)
    await set_artist("Ann", arc(0), arc(5), arc(6))
    assert await middle() == arc(4)  # the nearest by another artist
    await set_artist("Ann", *by_path)
    assert await middle() == arc(5)  # everyone is Ann: the nearest after all


async def test_path_errors_are_clear(library):
    by_path = await ids(library)
    same = {"from": by_path[arc(3)], "to": by_path[arc(3)]}
    cases = [
        (same, 400, "same recording"),
        ({"from": "nope", "to": by_path[arc(3)]}, 404, "no track with id 'nope'"),
        ({"from": by_path[arc(3)], "to": by_path[arc(4)], "length": 1}, 400, "length"),
        ({"from": by_path[arc(3)]}, 400, "to"),
    ]
    for params, status, message in cases:
        answer = await library.get("/api/vibe/path", params=params)
        assert answer.status == status
        assert message in (await answer.json())["error"]["message"]


async def mix(client, add, subtract=(), limit=5):
    answer = await client.post(
        "/api/vibe/mix", json={"add": list(add), "subtract": list(subtract), "limit": limit}
    )
    return answer.status, await answer.json()


async def test_subtracting_a_track_moves_the_mix_away_from_it(library):
    by_path = await ids(library)
    path_of = {track_id: path for path, track_id in by_path.items()}
    vectors = {arc(step): arc_vector(step) for step in range(ARC)} | OTHERS
    away_from = vectors[arc(10)]

    def mean_similarity(body) -> float:
        found = [vectors[path_of[result["track"]["id"]]] for result in body["results"]]
        return float(np.mean([vector @ away_from for vector in found]))

    status, plain = await mix(library, [by_path[arc(5)]])
    assert status == 200
    assert by_path[arc(5)] not in [result["track"]["id"] for result in plain["results"]]
    status, less = await mix(library, [by_path[arc(5)]], [by_path[arc(10)]])
    assert status == 200
    assert mean_similarity(less) < mean_similarity(plain) - 0.1
    assert less["items"] == [
        {"item": by_path[arc(5)], "sign": 1, "kind": "track", "via": "vectors"},
        {"item": by_path[arc(10)], "sign": -1, "kind": "track", "via": "vectors"},
    ]


async def test_a_text_in_a_mix_is_placed_through_tags_without_a_text_tower(library):
    status, body = await mix(library, ["south"], limit=3)
    assert status == 200
    assert body["items"] == [{"item": "south", "sign": 1, "kind": "text", "via": "vectors-tags"}]
    assert {result["track"]["path"] for result in body["results"]} == {
        "south/a.wav",
        "south/b.wav",
        "south/caf\ufffd.wav",  # the readable form of a name that is not UTF-8
    }
    by_path = await ids(library)
    status, body = await mix(library, [by_path[arc(4)]], [by_path[arc(4)]])
    assert status == 400 and "cancels out" in body["error"]["message"]
    status, body = await mix(library, ["polka"])
    assert status == 404 and "cannot place 'polka'" in body["error"]["message"]


async def test_the_map_places_every_analyzed_track_and_follows_new_ones(library, music_dir):
    answer = await library.get("/api/vibe/map")
    assert answer.status == 200
    body = await answer.json()
    assert (body["analyzer"], body["method"]) == ("vectors", "pca")
    by_path = await ids(library)
    points = {point["id"]: point for point in body["points"]}
    assert set(points) == set(by_path.values())
    assert all(-1 <= point["x"] <= 1 and -1 <= point["y"] <= 1 for point in points.values())
    assert points[by_path["south/a.wav"]]["label"] == "south"
    assert points[by_path[arc(3)]]["label"] == "north"
    place = {path: np.array([points[i]["x"], points[i]["y"]]) for path, i in by_path.items()}
    others = [path for path in place if path != arc(5)]
    nearest = min(others, key=lambda path: np.linalg.norm(place[path] - place[arc(5)]))
    assert nearest in (arc(4), arc(6))

    write_vector_wav(music_dir / "late.wav", unit(axis(0) + axis(3)))

    async def mapped() -> bool:
        body = await (await library.get("/api/vibe/map")).json()
        return len(body["points"]) == ARC + len(OTHERS) + 1

    await eventually(mapped, what="the new track on the map")


async def read_playlist(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


async def test_a_path_becomes_an_m3u_playlist_whose_paths_resolve(library, music_dir):
    by_path = await ids(library)
    request = {
        "name": "Drift",
        "path": {"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 4},
    }
    answer = await library.post("/api/playlists", json=request)
    assert answer.status == 201, await answer.text()
    assert await answer.json() == {"name": "Drift", "file": "Playlists/Drift.m3u", "tracks": 4}
    lines = await read_playlist(music_dir / "Playlists" / "Drift.m3u")
    assert lines[0] == b"#EXTM3U"
    assert all(line.startswith(b"#EXTINF:") for line in lines[1::2])
    located = [(music_dir / "Playlists" / os.fsdecode(line)).resolve() for line in lines[2::2]]
    assert located == [music_dir / arc(step) for step in (0, 3, 7, 10)]
    assert all(path.is_file() for path in located)

    again = await library.post("/api/playlists", json=request)
    assert again.status == 409 and "overwrite" in (await again.json())["error"]["message"]
    replaced = await library.post("/api/playlists", json={**request, "overwrite": True})
    assert replaced.status == 201
    assert sorted(path.name for path in (music_dir / "Playlists").iterdir()) == [
        "Drift.m3u",
        "stray.wav",
    ]  # no temporary file left behind
    engine = library.app[HOST].engine
    indexed = await scalar(engine, "SELECT count(*) FROM tracks WHERE path LIKE 'Playlists/%'")
    assert indexed == 0


async def test_playlists_from_a_search_keep_exact_file_names(library, music_dir):
    answer = await library.post(
        "/api/playlists", json={"name": "Down south", "search": {"text": "south", "limit": 10}}
    )
    assert answer.status == 201
    lines = await read_playlist(music_dir / "Playlists" / "Down south.m3u")
    assert sorted(lines[2::2]) == [b"../south/a.wav", b"../south/b.wav", b"../south/caf\xe9.wav"]


@pytest.mark.parametrize(
    "name", ["../../etc/x", "a/b", ".hidden", " padded", "tab\there", "..", ""]
)
async def test_a_playlist_name_that_is_a_path_is_refused(library, music_dir, tmp_path, name):
    by_path = await ids(library)
    answer = await library.post(
        "/api/playlists", json={"name": name, "track_ids": [by_path[arc(1)]]}
    )
    assert answer.status == 400
    assert "name" in (await answer.json())["error"]["message"]
    assert list(tmp_path.rglob("*.m3u")) == []


async def test_a_playlist_needs_exactly_one_source_of_tracks(library):
    for body in ({"name": "x"}, {"name": "x", "track_ids": ["a"], "search": {"text": "south"}}):
        answer = await library.post("/api/playlists", json=body)
        assert answer.status == 400
        assert "exactly one of" in (await answer.json())["error"]["message"]
    answer = await library.post("/api/playlists", json={"name": "x", "track_ids": ["f" * 32]})
    assert answer.status == 404
    assert "none of the playlist's tracks" in (await answer.json())["error"]["message"]


async def test_umap_is_used_when_installed_and_refused_when_asked_for_without_it(
    write_settings, fast_host, vector_analyzer, music_dir
):
    """A stand-in `umap` module proves the host picks UMAP when the package is there and
    refuses it by name when not. umap-learn itself stays out of the test extra: it installs
    from wheels (~480 MB with numba, llvmlite, scipy and scikit-learn), but its import took
    3-33 s and its first fit on 20 points 16-19 s of numba compiling on a 2-core machine, and
    installed it would turn every other map test's `auto` into UMAP."""
    with pytest.raises(ConfigError, match="umap-learn"):
        write_settings('[vibe_api]\nmap_projection = "umap"\n')
    (vector_analyzer / "umap.py").write_text(
        "class UMAP:\n"
        "    def __init__(self, **options):\n        self.options = options\n"
        "    def fit_transform(self, vectors):\n        return vectors[:, :2]\n"
    )
    try:
        for step in range(3):
            write_vector_wav(music_dir / f"{step}.wav", arc_vector(step * 5))
        client = await fast_host()
        await eventually(lambda: settled(client.app[HOST].engine, 3), what="library")
        body = await (await client.get("/api/vibe/map")).json()
        assert body["method"] == "umap" and len(body["points"]) == 3
    finally:
        sys.modules.pop("umap", None)


def test_playlist_files_never_leave_their_folder(tmp_path):
    folder = tmp_path / "Playlists"
    folder.mkdir()
    assert playlist_file(folder, "Late night") == folder / "Late night.m3u"
    for name in ("../x", "a/b", ".x", "..", "x\n", "é" * 200):
        with pytest.raises(PlaylistRefused):
            playlist_file(folder, name)
    (folder / "escape.m3u").symlink_to(tmp_path / "elsewhere.m3u")
    with pytest.raises(PlaylistRefused, match="leaves the folder"):
        playlist_file(folder, "escape")

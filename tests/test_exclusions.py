"""Rules every list obeys: `[vibe_api] exclude_*` leaves tracks out of similar, search, path,
mix, the map, playlists and Instant Mix, by path glob, genre and duration, and says so; tracks
a request names itself are still used.

On the known-vector library (harness/vector_library.py: a WAV's first eight samples are its
embedding), plus an audiobook chapter that is the nearest of all to arc/00; genres and
durations are set in the database, as ingest would have read them from tags.
"""

from __future__ import annotations

import os
import re

import asyncpg
import pytest
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_host.errors import ConfigError
from soundspan_plugins.vibe_api.exclusions import glob_regex
from tests.harness.database import database_url_for
from tests.harness.instant_mix_library import (
    LIBRARY,
    mix_host,
    read_songs,
    server_song_ids,
    serving,
)
from tests.harness.library import eventually, settled
from tests.harness.vector_library import (
    ARC,
    arc,
    arc_vector,
    axis,
    ids,
    unit,
    write_vector_library,
    write_vector_wav,
)

CHAPTER = "Audiobooks/Someone/01.wav"
RULES = (
    "[vibe_api]\n"
    'exclude_paths = ["Audiobooks/**"]\n'
    'exclude_genres = ["Audiobook", "Podcast"]\n'
    "exclude_shorter_than_seconds = 30\n"
    "exclude_longer_than_seconds = 3600\n"
)
# by glob, by one of the genres in its tag (case aside), too short, too long
EXCLUDED = (CHAPTER, arc(2), arc(3), arc(4))
EACH_RULE_ONCE = {
    "exclude_paths": 1,
    "exclude_genres": 1,
    "exclude_shorter_than_seconds": 1,
    "exclude_longer_than_seconds": 1,
}


async def set_tags(client, paths, **tags) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in tags)
    async with client.app[HOST].engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE tracks SET {assignments} WHERE path = ANY(:paths)"),
            {**tags, "paths": list(paths)},
        )


@pytest.fixture
async def library(fast_host, vector_analyzer, music_dir):
    count = write_vector_library(music_dir)
    write_vector_wav(music_dir / CHAPTER, unit(arc_vector(0) + 0.05 * axis(6)))
    client = await fast_host(RULES)
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, count + 1), what="library")
    every = list(await ids(client))
    await set_tags(client, every, duration=200.0)
    await set_tags(client, [arc(2)], genre="audiobook; Fiction")
    await set_tags(client, [arc(3)], duration=10.0)
    await set_tags(client, [arc(4)], duration=5000.0)
    await set_tags(client, [arc(5)], duration=None)  # unknown: kept
    await set_tags(client, ["elsewhere/up.wav"], genre="Rock")
    return client


async def ok(answer) -> dict:
    assert answer.status in (200, 201), await answer.text()
    return await answer.json()


def paths_of(results: list[dict]) -> list[str]:
    return [result["track"]["path"] for result in results]


@pytest.mark.parametrize(
    ("glob", "inside", "outside"),
    [
        ("Audiobooks/**", ["Audiobooks/a.mp3", "Audiobooks/x/y/z.m4b"], ["audiobooks/a.mp3"]),
        ("**/Podcasts/**", ["Podcasts/a.mp3", "Radio/Podcasts/b/c.mp3"], ["Podcasts.mp3"]),
        ("*.m4b", ["book.m4b"], ["Books/book.m4b", "book.m4bx"]),
        ("Live/19[6-7]?/*", ["Live/1969/a.flac"], ["Live/1985/a.flac", "Live/1969/b/c.flac"]),
        ("Misc/[!a]*", ["Misc/b.mp3"], ["Misc/a.mp3", "Misc/b/c.mp3"]),
        ("A (1999) [FLAC]/+.mp3", ["A (1999) F/+.mp3"], ["A (1999) [FLAC]/+.mp3"]),
        ("A (1999) [[]FLAC]/+.mp3", ["A (1999) [FLAC]/+.mp3"], ["A (1999) F/+.mp3"]),
        (r"A (1999) \[FLAC\]/\*", ["A (1999) [FLAC]/*"], ["A (1999) [FLAC]/a"]),
        (
            "Ünïcode & co/#1 ~{x}|$.mp3",
            ["Ünïcode & co/#1 ~{x}|$.mp3"],
            ["Unicode & co/#1 ~{x}|$.mp3"],
        ),
    ],
)
async def test_a_glob_matches_whole_library_paths_in_python_and_postgresql(
    glob, inside, outside, postgres_server
):
    """The settings check the pattern with Python's `re`; PostgreSQL's `~` applies it."""
    pattern = "^(?:" + glob_regex(glob) + ")$"
    assert all(re.fullmatch(pattern, path) for path in inside)
    assert not any(re.fullmatch(pattern, path) for path in outside)
    connection = await asyncpg.connect(database_url_for(postgres_server, "postgres"))
    try:
        for path in [*inside, *outside]:
            assert await connection.fetchval("SELECT $1 ~ $2", path, pattern) == (path in inside)
    finally:
        await connection.close()


def test_a_glob_that_is_no_pattern_stops_start_up(write_settings):
    with pytest.raises(ConfigError, match=r"bad setting \[vibe_api\] exclude_paths"):
        write_settings('[vibe_api]\nexclude_paths = [""]\n')


async def test_similar_search_path_and_mix_leave_excluded_tracks_out_and_say_so(library):
    by_path = await ids(library)
    similar = await ok(await library.get(f"/api/vibe/similar/{by_path[arc(0)]}?limit=4"))
    assert paths_of(similar["results"]) == [arc(1), arc(5), arc(6), arc(7)]
    assert similar["excluded"] == {"tracks": 4, "rules": EACH_RULE_ONCE}
    nearest = await ok(await library.get(f"/api/vibe/similar/{by_path[arc(0)]}?limit=1"))
    # only the chapter lay nearer than the one result
    assert paths_of(nearest["results"]) == [arc(1)]
    assert nearest["excluded"] == {"tracks": 1, "rules": {"exclude_paths": 1}}
    far = await ok(await library.get(f"/api/vibe/similar/{by_path[arc(10)]}?limit=2"))
    assert paths_of(far["results"]) == [arc(9), arc(8)] and "excluded" not in far

    search = await ok(await library.post("/api/vibe/search", json={"text": "north", "limit": 20}))
    north = {arc(step) for step in range(ARC)} | {"elsewhere/up.wav", "elsewhere/side.wav"}
    assert set(paths_of(search["results"])) == north - set(EXCLUDED)
    assert search["excluded"] == {"tracks": 4, "rules": EACH_RULE_ONCE}

    mix = await ok(await library.post("/api/vibe/mix", json={"add": [by_path[arc(1)]], "limit": 3}))
    assert paths_of(mix["results"]) == [arc(0), arc(5), arc(6)]
    assert mix["excluded"] == {"tracks": 4, "rules": EACH_RULE_ONCE}

    params = {"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 6}
    path = await ok(await library.get("/api/vibe/path", params=params))
    steps = paths_of(path["steps"])
    # the ideal points of arc/02 and arc/04 are excluded: the nearest kept tracks stand in
    assert steps == [arc(0), arc(1), arc(5), arc(6), arc(8), arc(10)]
    # arc/02 and arc/04 lay nearer their steps' ideal points (arc/03 ties with arc/05)
    assert path["excluded"]["rules"].keys() >= {"exclude_genres", "exclude_longer_than_seconds"}
    assert "exclude_paths" not in path["excluded"]["rules"]  # the chapter is near no step


async def test_tracks_a_request_names_are_used_even_when_excluded(library, music_dir):
    by_path = await ids(library)
    similar = await ok(await library.get("/api/vibe/similar", params={"path": CHAPTER, "limit": 2}))
    assert similar["track"]["path"] == CHAPTER
    assert paths_of(similar["results"]) == [arc(0), arc(1)]

    params = {"from": by_path[arc(2)], "to": by_path[arc(4)], "length": 3}
    path = await ok(await library.get("/api/vibe/path", params=params))
    steps = paths_of(path["steps"])
    assert steps[0] == arc(2) and steps[-1] == arc(4) and steps[1] not in EXCLUDED

    mix = await ok(await library.post("/api/vibe/mix", json={"add": [by_path[arc(3)]], "limit": 3}))
    assert mix["items"][0]["kind"] == "track"
    assert not set(paths_of(mix["results"])) & set(EXCLUDED)

    chosen = {"name": "Chosen", "track_ids": [by_path[arc(3)], by_path[CHAPTER]]}
    assert (await ok(await library.post("/api/playlists", json=chosen)))["tracks"] == 2


async def test_playlists_the_map_and_the_status_obey_the_rules(library, music_dir):
    by_path = await ids(library)
    recipe = {"name": "Near", "similar": {"track_id": by_path[arc(0)], "limit": 4}}
    assert (await ok(await library.post("/api/playlists", json=recipe)))["tracks"] == 4
    lines = (music_dir / "Playlists" / "Near.m3u").read_bytes().splitlines()
    assert [os.fsdecode(line) for line in lines[2::2]] == [
        f"../{path}" for path in (arc(1), arc(5), arc(6), arc(7))
    ]

    points = (await ok(await library.get("/api/vibe/map")))["points"]
    assert {point["id"] for point in points} == {
        track_id for path, track_id in by_path.items() if path not in EXCLUDED
    }

    status = await ok(await library.get("/api/vibe/status"))
    assert status["excluded"] == {
        "settings": {
            "exclude_paths": ["Audiobooks/**"],
            "exclude_genres": ["Audiobook", "Podcast"],
            "exclude_shorter_than_seconds": 30.0,
            "exclude_longer_than_seconds": 3600.0,
        },
        "tracks": 4,
        "rules": EACH_RULE_ONCE,
    }


@pytest.fixture
def server(tmp_path, music_dir):
    with serving(tmp_path, music_dir) as running:
        yield running


async def test_instant_mix_gets_no_excluded_song_but_an_excluded_seed_works(
    fast_host, server, vector_analyzer
):
    rules = (
        '[vibe_api]\nexclude_paths = ["Borealis/**"]\nexclude_genres = ["podcast"]\n'
        "exclude_longer_than_seconds = 3600\n"
    )
    host = await mix_host(fast_host, server, extra=rules)
    song_ids = await server_song_ids(server)
    await set_tags(host, ["Cirrus/High/1.flac"], genre="Podcast")
    await set_tags(host, ["Cirrus/High/2.flac"], duration=5000.0)
    excluded = {"Borealis/Sky/1.flac", "Borealis/Sky/2.flac", "Cirrus/High/1.flac"}
    excluded.add("Cirrus/High/2.flac")
    by_song = {song_id: path for path, song_id in song_ids.items()}

    async def similar(seed: str, shaped: str) -> list[str]:
        answer = await host.get(
            f"/api/similar_tracks?eliminate_duplicates={shaped}&item_id={song_ids[seed]}&n=200"
        )
        assert answer.status == 200, await answer.text()
        return [by_song[song["item_id"]] for song in read_songs(await answer.json())]

    seed = "Aurora/North/2.flac"
    others = sorted(set(LIBRARY) - {seed}, key=lambda path: -LIBRARY[path][0] @ LIBRARY[seed][0])
    assert await similar(seed, "false") == [path for path in others if path not in excluded]
    # "Song 1 (Live)" folds into "Song 1"; the seed's album holds two
    assert await similar(seed, "true") == ["Aurora/North/1.flac", "Dusk/Low/1.flac"]
    from_excluded = await similar("Borealis/Sky/1.flac", "false")
    assert from_excluded and not set(from_excluded) & excluded

    start, end = song_ids["Borealis/Sky/2.flac"], song_ids["Dusk/Low/1.flac"]
    path = await host.get(f"/api/find_path?start_song_id={start}&end_song_id={end}&max_steps=5")
    assert path.status == 200, await path.text()
    steps = [by_song[song["item_id"]] for song in read_songs((await path.json())["path"])]
    assert steps[0] == "Borealis/Sky/2.flac" and steps[-1] == "Dusk/Low/1.flac"
    assert not set(steps[1:-1]) & excluded

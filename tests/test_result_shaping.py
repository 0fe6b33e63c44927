"""Lists people want to play: caps per artist and album, versions of a recording folded into
the nearest, why each track was chosen, and tracks found by a music server's keys.

End to end on the vector library of test_vibe_journeys (its order from arc/00 is known:
arc/01 ... arc/09, then two tracks elsewhere at the same distance), whose tags are set in the
database; "why" on the real MusiCNN
over the real clips, since only MusiCNN keeps tags.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_plugins.vibe_api.shaping import Caps, normalised, shape
from tests.harness.library import eventually, settled
from tests.harness.vector_library import analyzed_library, arc, ids

CLIPS = ("anttis_1918.mp3", "anttis_funkyrobot_16k.flac", "anttis_funkyrobot.opus")
FIXTURES = Path(__file__).parent / "fixtures" / "musicnn"
MUSICNN = '[musicnn]\nworkers = 1\nbatch_size = 8\ndevice = "cpu"\n'


@pytest.fixture
async def library(fast_host, vector_analyzer, music_dir):
    """The known-vector library (harness/vector_library.py), analyzed."""
    return await analyzed_library(fast_host, music_dir)


async def tag(client, paths, **tags) -> None:
    """Set tags on tracks, as ingest would have read them."""
    assignments = ", ".join(f"{name} = :{name}" for name in tags)
    async with client.app[HOST].engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE tracks SET {assignments} WHERE path = ANY(:paths)"),
            {**tags, "paths": list(paths)},
        )


async def similar_paths(client, source: str, **params) -> list[str]:
    by_path = await ids(client)
    answer = await client.get(f"/api/vibe/similar/{by_path[source]}", params=params)
    assert answer.status == 200, await answer.text()
    return [result["track"]["path"] for result in (await answer.json())["results"]]


def arcs(*steps: int) -> list[str]:
    return [arc(step) for step in steps]


# --- focused: what counts as one recording, and the walk under caps --------------------------


@pytest.mark.parametrize(
    "title",
    [
        "Hey Jude",
        "hey jude (Live)",
        "Hey Jude [Remastered 2011]",
        "Hey Jude - Remastered 2015",
        "Hey Jude \u2013 Live at the Hollywood Bowl",
        "Hey Jude (feat. Someone)",
        "Hey Jude feat. Someone",
        "HEY JUDE!",
    ],
)
def test_versions_of_a_title_have_one_name(title):
    assert normalised(title) == "hey jude"


def test_names_keep_what_is_not_a_version():
    assert normalised("Café del Mar") == normalised("Cafe Del Mar") == "cafe del mar"
    assert normalised("Part 1 - The Beginning") == "part 1 the beginning"  # no version word
    assert normalised("(Untitled)") == "untitled"  # nothing but brackets: the words stay
    assert normalised(None) is None and normalised("") is None


def row(track_id, artist=None, title=None, album=None, album_artist=None):
    return SimpleNamespace(
        id=track_id, artist=artist, title=title, album=album, album_artist=album_artist
    )


def test_the_walk_caps_counts_the_seed_and_folds_versions_into_the_nearest():
    seed = row("s", "Ann", "Seed", "One")
    tracks = {
        "a": row("a", "Ann", "First", "One"),
        "b": row("b", "Ann", "Second", "One"),  # album One is full: seed and a
        "c": row("c", "Ann", "Third", "Two"),
        "d": row("d", "Ann", "Fourth", "Two"),  # Ann is full: seed, a and c
        "e": row("e", "Bo", "Song"),
        "f": row("f", "bo", "Song (Live)"),  # a version of e
        "g": row("g", "Bo", "Seed"),  # another artist's Seed: not the seed's version
        "h": row("h", "Ann", "Seed - Remastered"),  # the seed's own version: left out
        "i": row("i"),  # no tags: never capped, never folded
        "j": row("j"),
    }
    candidates = [(key, index / 10) for index, key in enumerate(tracks)]
    chosen = shape(candidates, tracks, Caps(), [seed], limit=5)
    assert [one.content_id for one in chosen] == ["a", "c", "e", "g", "i"]
    assert [version.id for version in chosen[2].versions] == ["f"]
    assert shape(candidates, tracks, Caps(per_artist=10, per_album=10), [seed], 4)[1].track.id == (
        "b"
    )


def test_albums_are_told_apart_by_their_artist():
    tracks = {
        "a": row("a", "Ann", "A", "Greatest Hits"),
        "b": row("b", "Bo", "B", "Greatest Hits"),
        "c": row("c", "Cy", "C", "Now 50", album_artist="Various Artists"),
        "d": row("d", "Di", "D", "Now 50", album_artist="Various Artists"),
    }
    candidates = [(key, 0.0) for key in tracks]
    chosen = shape(candidates, tracks, Caps(per_artist=5, per_album=1), [], limit=4)
    assert [one.content_id for one in chosen] == ["a", "b", "c"]


# --- end to end: caps ------------------------------------------------------------------------


async def test_similar_caps_an_album_and_an_artist_counting_the_source(library):
    await tag(library, arcs(*range(7)), artist="Ann", album="One")
    # album One holds the source: one more from it (2 per album); Ann twice more (3 per artist)
    assert await similar_paths(library, arc(0), limit=4) == arcs(1, 7, 8, 9)
    assert await similar_paths(library, arc(0), limit=4, max_per_album=10) == arcs(1, 2, 7, 8)
    uncapped = {"limit": 4, "max_per_album": 200, "max_per_artist": 200}
    assert await similar_paths(library, arc(0), **uncapped) == arcs(1, 2, 3, 4)


async def test_a_list_thinned_by_caps_looks_further_for_its_length(library):
    await tag(library, arcs(*range(9)), artist="Ann", album="One")
    # two results: the first look (8 candidates) finds only arc/01 before the album is full
    assert await similar_paths(library, arc(0), limit=2) == arcs(1, 9)


async def test_search_and_mix_keep_to_the_caps(library):
    by_path = await ids(library)
    await tag(library, list(by_path), artist="Ann")
    searched = await library.post("/api/vibe/search", json={"text": "north", "limit": 10})
    body = await searched.json()
    assert len(body["results"]) == 3  # every north track is Ann's
    assert all(result["why"] == {"shared_tags": ["north"]} for result in body["results"])
    mixed = await library.post("/api/vibe/mix", json={"add": [by_path[arc(0)]], "limit": 10})
    assert len((await mixed.json())["results"]) == 2  # the added track is Ann's too
    mixed = await library.post(
        "/api/vibe/mix", json={"add": [by_path[arc(0)]], "limit": 10, "max_per_artist": 200}
    )
    assert len((await mixed.json())["results"]) == 10


async def test_a_path_keeps_to_the_album_cap(library):
    by_path = await ids(library)
    params = {"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 6}

    async def steps() -> list[str]:
        body = await (await library.get("/api/vibe/path", params=params)).json()
        return [step["track"]["path"] for step in body["steps"]]

    assert await steps() == arcs(0, 2, 4, 6, 8, 10)
    await tag(library, arcs(0, 2, 3, 4), album="One")
    # arc/00 and arc/02 fill album One: the third step takes the nearest outside it
    assert await steps() == arcs(0, 2, 5, 6, 8, 10)


# --- end to end: versions ---------------------------------------------------------------------


async def test_versions_of_a_recording_fold_into_the_nearest(library):
    await tag(library, arcs(1), artist="Bo", title="Blue (Live)")
    await tag(library, arcs(2), artist="Bo", title="Blue - Remastered 2011")
    await tag(library, arcs(3), artist="BÖ", title="blue", album="Best of")
    by_path = await ids(library)
    body = await (
        await library.get(f"/api/vibe/similar/{by_path[arc(0)]}", params={"limit": 3})
    ).json()
    results = body["results"]
    assert [result["track"]["path"] for result in results] == arcs(1, 4, 5)
    assert [version["path"] for version in results[0]["versions"]] == arcs(2, 3)
    assert results[0]["versions"][1]["album"] == "Best of"
    assert results[1]["versions"] == []

    await tag(library, arcs(0), artist="Bo", title="Blue")
    # the source's own versions are the source: none of them is listed
    assert await similar_paths(library, arc(0), limit=3) == arcs(4, 5, 6)


# --- end to end: lookups by a music server's keys, and the richer tags -----------------------


async def test_similar_finds_its_track_by_path_or_musicbrainz_id(library):
    mbid = "b1a9c0e9-d987-4042-ae91-78d6a3267d69"
    await tag(
        library,
        arcs(0),
        musicbrainz_recording_id=mbid,
        album_artist="Ann",
        year=1999,
        genre="Ambient",
        track_number=3,
        disc_number=1,
    )
    by_path = await ids(library)
    similar = f"/api/vibe/similar/{by_path[arc(0)]}"
    by_id = await (await library.get(similar, params={"limit": 5})).json()
    for params in ({"path": arc(0)}, {"mbid": mbid}, {"id": by_path[arc(0)]}):
        answer = await library.get("/api/vibe/similar", params={**params, "limit": 5})
        assert answer.status == 200, await answer.text()
        assert await answer.json() == by_id
    source = by_id["track"]
    assert (source["musicbrainz_recording_id"], source["album_artist"]) == (mbid, "Ann")
    assert (source["year"], source["genre"], source["track_number"]) == (1999, "Ambient", 3)
    assert by_id["results"][0]["track"]["year"] is None  # present, untagged

    cases = [
        (
            {"path": arc(0), "mbid": mbid},
            400,
            "give exactly one of id, path, mbid (got path, mbid)",
        ),
        ({}, 400, "give exactly one of id, path, mbid"),
        ({"path": "arc/missing.wav"}, 404, "no track at 'arc/missing.wav'"),
        ({"path": "ARC/00.wav"}, 404, "relative to the music dir"),  # exact, case and all
        ({"mbid": "nope"}, 404, "no track tagged with MusicBrainz recording id 'nope'"),
    ]
    for params, status, message in cases:
        answer = await library.get("/api/vibe/similar", params=params)
        assert answer.status == status
        assert message in (await answer.json())["error"]["message"]
    extra = await library.get(similar, params={"path": arc(0)})
    assert extra.status == 400


async def test_a_path_takes_its_ends_by_path_or_musicbrainz_id(library):
    mbid = "2f0d5f2a-1f4e-4a4e-8d0e-6b6f1d8f0a10"
    await tag(library, arcs(10), musicbrainz_recording_id=mbid)
    by_path = await ids(library)
    by_id = {"from": by_path[arc(0)], "to": by_path[arc(10)], "length": 4}
    expected = await (await library.get("/api/vibe/path", params=by_id)).json()
    for params in (
        {"from_path": arc(0), "to_mbid": mbid, "length": 4},
        {"from": by_path[arc(0)], "to_path": arc(10), "length": 4},
    ):
        answer = await library.get("/api/vibe/path", params=params)
        assert answer.status == 200, await answer.text()
        assert await answer.json() == expected
    both = await library.get("/api/vibe/path", params={**by_id, "to_path": arc(10)})
    assert both.status == 400
    assert "give exactly one of to, to_path, to_mbid" in (await both.json())["error"]["message"]
    unknown = await library.get("/api/vibe/path", params={"from_mbid": "x", "to": by_id["to"]})
    assert unknown.status == 404


# --- why, on the real MusiCNN -----------------------------------------------------------------


@pytest.fixture
async def musicnn_library(fast_host, music_dir, monkeypatch, caplog):
    monkeypatch.setenv("SOUNDSPAN_MUSICNN__ENABLED", "true")
    caplog.set_level(logging.INFO, logger="soundspan_plugins.musicnn")
    for clip in CLIPS:
        shutil.copy(FIXTURES / clip, music_dir / clip)
    client = await fast_host(MUSICNN)
    engine = client.app[HOST].engine
    await eventually(lambda: settled(engine, len(CLIPS)), timeout=300, what="MusiCNN's analyses")
    return client


async def test_each_result_says_which_musicnn_tags_it_shares_with_the_query(musicnn_library):
    client = musicnn_library
    listing = await (await client.get("/api/tracks")).json()
    ids_by_path = {track["path"]: track["id"] for track in listing["tracks"]}
    top_tags = {}
    for path, track_id in ids_by_path.items():
        detail = await (await client.get(f"/api/tracks/{track_id}")).json()
        top_tags[path] = [entry["tag"] for entry in detail["results"]["musicnn"]["top_tags"]]

    def shared(path: str, query_tags) -> list[str]:
        return [tag for tag in top_tags[path] if tag in set(query_tags)]

    source = "anttis_1918.mp3"
    answer = await (await client.get(f"/api/vibe/similar/{ids_by_path[source]}")).json()
    assert answer["analyzer"] == "musicnn" and len(answer["results"]) == 2
    for result in answer["results"]:
        path = result["track"]["path"]
        assert result["why"] == {"shared_tags": shared(path, top_tags[source])}
    assert any(result["why"]["shared_tags"] for result in answer["results"])

    found = await client.post("/api/vibe/search", json={"text": "jazz and rock"})
    body = await found.json()
    assert body["matched_tags"] == ["rock", "jazz"]
    for result in body["results"]:
        path = result["track"]["path"]
        assert result["why"]["shared_tags"] == shared(path, ["rock", "jazz"])

    other = "anttis_funkyrobot.opus"
    mixed = await client.post(
        "/api/vibe/mix", json={"add": [ids_by_path[source], "blues"], "limit": 5}
    )
    [result] = [
        result for result in (await mixed.json())["results"] if result["track"]["path"] == other
    ]
    assert result["why"]["shared_tags"] == shared(other, [*top_tags[source], "blues"])

    params = {"from": ids_by_path[source], "to": ids_by_path[other], "length": 3}
    steps = (await (await client.get("/api/vibe/path", params=params)).json())["steps"]
    middle = steps[1]["track"]["path"]
    assert steps[1]["why"]["shared_tags"] == shared(middle, top_tags[source] + top_tags[other])
    assert steps[0]["why"]["shared_tags"] == shared(source, top_tags[other])

"""The vibe API over real HTTP, on a library the toy analyzer embeds as [mean, spread, seconds].

Tones of equal loudness differ only in length, so their embeddings' angles, and so the
similarity order, are known in advance.
"""

import shutil

import pytest
from sqlalchemy import text

from soundspan_hooks import HOST
from soundspan_hooks.openapi import RICHER_TAGS
from soundspan_host.app import create_app
from soundspan_host.errors import ConfigError
from tests.harness.library import eventually, settled, write_wav

LENGTHS = {"source": 0.10, "near": 0.12, "middle": 0.30, "far": 1.00}


@pytest.fixture
async def library(fast_host, toy_analyzer, music_dir):
    """A host whose library holds four analyzed tones and a duplicate of one."""
    for index, (name, seconds) in enumerate(LENGTHS.items()):
        write_wav(music_dir / "Tones" / f"{name}.wav", 300 + index, seconds=seconds)
    shutil.copy(music_dir / "Tones" / "near.wav", music_dir / "near copy.wav")
    client = await fast_host()
    await eventually(lambda: settled(client.app[HOST].engine, 5), what="the library")
    return client


async def track_id(client, path: str) -> str:
    answer = await client.get("/api/tracks", params={"path": path})
    [track] = (await answer.json())["tracks"]
    return track["id"]


async def test_tracks_are_found_by_path_and_by_words(library):
    answer = await (await library.get("/api/tracks", params={"q": "tones wav"})).json()
    assert answer["total"] == 4
    assert [track["path"] for track in answer["tracks"]] == [
        "Tones/far.wav",
        "Tones/middle.wav",
        "Tones/near.wav",
        "Tones/source.wav",
    ]
    page = await (await library.get("/api/tracks", params={"limit": 2, "offset": 4})).json()
    assert (page["total"], len(page["tracks"])) == (5, 1)
    # `_` and `%` are themselves, not LIKE's wildcards ("near copy" has a space, not one)
    for literal in ("near_copy", "near%copy"):
        nothing = await (await library.get("/api/tracks", params={"q": literal})).json()
        assert nothing["total"] == 0, literal
    # only the first 8 words count, however many are sent
    words = "far " + "wav " * 7 + "unheard " * 50
    many = await (await library.get("/api/tracks", params={"q": words})).json()
    assert [track["path"] for track in many["tracks"]] == ["Tones/far.wav"]
    exact = await (await library.get("/api/tracks", params={"path": "near copy.wav"})).json()
    [track] = exact["tracks"]
    assert set(track) == {"id", "path", "title", "artist", "album", "duration"} | set(RICHER_TAGS)
    assert track["duration"] == pytest.approx(0.12, abs=0.01)


async def test_a_track_shows_each_analyzers_state(library):
    identifier = await track_id(library, "Tones/far.wav")
    answer = await (await library.get(f"/api/tracks/{identifier}")).json()
    assert answer["track"]["path"] == "Tones/far.wav"
    assert answer["missing"] is False
    assert answer["analyses"]["toy"]["state"] == "done"
    assert answer["analyses"]["toy"]["error"] is None


async def test_similar_tracks_come_nearest_first_without_the_source_or_duplicates(library):
    identifier = await track_id(library, "Tones/source.wav")
    answer = await library.get(f"/api/vibe/similar/{identifier}", params={"limit": 10})
    assert answer.status == 200
    body = await answer.json()
    assert body["analyzer"] == "toy"
    assert body["track"]["id"] == identifier
    paths = [result["track"]["path"] for result in body["results"]]
    assert paths == ["Tones/near.wav", "Tones/middle.wav", "Tones/far.wav"]  # one near, not two
    scores = [result["score"] for result in body["results"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] < scores[0] <= 1


async def test_similar_to_an_unanalyzed_track_is_a_409_and_to_a_track_alone_an_empty_list(
    library,
):
    """The search reads the source's vector inside its one statement: an empty answer is
    then told apart (no analysis, or no other track analyzed)."""
    source = await track_id(library, "Tones/source.wav")
    engine = library.app[HOST].engine
    async with engine.begin() as connection:
        content = (
            await connection.execute(
                text("SELECT content_id FROM tracks WHERE id = :id"), {"id": source}
            )
        ).scalar()
        await connection.execute(
            text("DELETE FROM toy_results WHERE content_id <> :c"), {"c": content}
        )
    alone = await library.get(f"/api/vibe/similar/{source}")
    assert alone.status == 200 and (await alone.json())["results"] == []
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM toy_results"))
    unanalyzed = await library.get(f"/api/vibe/similar/{source}")
    assert unanalyzed.status == 409
    assert "has no toy analysis yet" in (await unanalyzed.json())["error"]["message"]


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/vibe/similar/nope", {}, 404, "no track with id 'nope'"),
        ("/api/vibe/similar/{id}", {"analyzer": "clapp"}, 404, "no analyzer 'clapp'"),
        ("/api/vibe/similar/{id}", {"limit": "0"}, 400, "limit"),
        ("/api/vibe/similar/{id}", {"limit": "100000"}, 400, "limit"),
        ("/api/vibe/similar/{id}", {"limit": "ten"}, 400, "limit"),
        ("/api/tracks", {"offset": "-1"}, 400, "offset"),
        ("/api/tracks", {"colour": "blue"}, 400, "colour"),
        ("/api/tracks/" + "x" * 5000, {}, 404, "no track with id"),
        ("/api/nothing-here", {}, 404, "Not Found"),
    ],
)
async def test_bad_requests_get_a_json_error(library, path, params, status, message):
    path = path.replace("{id}", await track_id(library, "Tones/source.wav"))
    answer = await library.get(path, params=params)
    assert answer.status == status
    error = (await answer.json())["error"]
    assert error["status"] == status and message in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"text": ""}', 400, "text"),
        (b'{"text": "jazz", "limit": -3}', 400, "limit"),
        (b'{"text": "jazz", "colour": 1}', 400, "colour"),
        (b"[1, 2]", 400, "body"),
        (b'{"text": "' + b"x" * 2_000_000 + b'"}', 413, "Request Entity Too Large"),
        (b'{"text": "rainy night jazz piano"}', 503, "no analyzer can search by text"),
    ],
)
async def test_search_rejects_bad_bodies_and_says_when_nothing_can_search(
    library, body, status, message
):
    answer = await library.post(
        "/api/vibe/search", data=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status == status
    assert message in (await answer.json())["error"]["message"]


async def test_status_counts_progress_per_analyzer(library):
    body = await (await library.get("/api/vibe/status")).json()
    [toy] = body["analyzers"]
    assert toy["name"] == "toy" and toy["trained"] is False and toy["state"] == "ready"
    assert toy["counts"] == {"done": 4, "pending": 0, "running": 0, "failed": 0}
    # nothing waits: no run is on, so no pace and no ETA
    assert toy["tracks_per_minute"] is None and toy["audio_minutes_per_minute"] is None
    assert toy["audio_minutes_waiting"] == 0 and toy["eta_seconds"] is None
    assert toy["run_started_at"] is None
    assert body["library"] == {"tracks": 5, "missing": 0, "distinct_contents": 4}


async def test_status_measures_the_current_run_and_the_audio_waiting(
    fast_host, toy_analyzer, music_dir
):
    # one worker, each analysis at least 0.4 s: the run is caught with some tones done and
    # some waiting, however fast the machine
    client = await fast_host("[toy]\nworkers = 1\ndelay_seconds = 0.4\n")
    lengths = [0.5, 3.0, 0.5, 6.0, 1.0, 2.0, 0.5]
    for index, seconds in enumerate(lengths):
        write_wav(music_dir / f"{index}.wav", 300 + 20 * index, seconds=seconds)

    async def mid_run() -> dict | None:
        body = await (await client.get("/api/vibe/status")).json()
        counts = body["analyzers"][0]["counts"]
        done, waiting = counts["done"], counts["pending"] + counts["running"]
        return body if done >= 3 and waiting >= 2 else None

    body = await eventually(mid_run, what="the run half done")
    [toy] = body["analyzers"]
    waiting = toy["counts"]["pending"] + toy["counts"]["running"]
    assert waiting * min(lengths) / 60 <= toy["audio_minutes_waiting"] + 0.005
    assert toy["audio_minutes_waiting"] <= waiting * max(lengths) / 60 + 0.005
    # from the run's first finish to now: the finishes after the first one
    minutes = (body["time"] - toy["run_started_at"]) / 60
    timed = toy["counts"]["done"] - 1
    assert toy["tracks_per_minute"] == pytest.approx(timed / minutes, rel=0.15)
    # in audio: each timed tone counts its own length
    audio_per_track = toy["audio_minutes_per_minute"] / toy["tracks_per_minute"]
    assert min(lengths) / 60 * 0.95 <= audio_per_track <= max(lengths) / 60 * 1.05
    assert toy["eta_seconds"] == pytest.approx(
        toy["audio_minutes_waiting"] / toy["audio_minutes_per_minute"] * 60, rel=0.05, abs=1
    )

    await eventually(lambda: settled(client.app[HOST].engine, len(lengths)), what="the run")
    [toy] = (await (await client.get("/api/vibe/status")).json())["analyzers"]
    assert toy["run_started_at"] is None and toy["eta_seconds"] is None


async def test_exposed_without_a_token_refuses_to_start(write_settings):
    with pytest.raises(ConfigError, match="SOUNDSPAN_API_TOKEN"):
        create_app(write_settings('host = "0.0.0.0"\n'))


async def test_with_a_token_every_call_but_health_needs_it(write_settings, aiohttp_client):
    token = "a-long-enough-secret-token"
    client = await aiohttp_client(
        create_app(write_settings(f'host = "0.0.0.0"\napi_token = "{token}"\n'))
    )
    assert (await client.get("/healthz")).status == 200
    refused = await client.get("/api/tracks")
    assert refused.status == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    wrong = await client.get("/api/tracks", headers={"Authorization": "Bearer guess"})
    assert wrong.status == 401
    allowed = await client.get("/api/tracks", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status == 200

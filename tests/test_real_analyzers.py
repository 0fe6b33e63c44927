"""Both real analyzers in one host process: MusiCNN with its trained weights and CLAP with the
tests' tiny random model, over the real clips of tests/fixtures/musicnn.

What only shows with both: which analyzer answers each question when CLAP is loaded but
untrained (similar, mix and the map go to MusiCNN; a text search goes through CLAP's text tower,
as the README documents), the status of both, map labels from MusiCNN's genres, and the CLI
agreeing with the API the status page calls.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from soundspan_plugins.musicnn.tags import GENRE_TAGS, MSD_TAGS
from tests.harness.clap_models import save_tiny_clap
from tests.harness.cli_host import cli, serve, stop

FIXTURES = Path(__file__).parent / "fixtures" / "musicnn"
CLIPS = ("anttis_1918.mp3", "anttis_funkyrobot_16k.flac", "anttis_funkyrobot.opus")
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())["clips"]
ANALYZERS = ("clap", "musicnn")


def post_json(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        return json.load(answer)


def likeliest_genre(clip: str) -> str:
    """The genre tag the MusiCNN authors' own code scores highest for the clip."""
    taggram = REFERENCE[clip]["MSD_musicnn"]["original"]["mean_taggram"]
    return max(
        (tag for tag in MSD_TAGS if tag in GENRE_TAGS), key=lambda tag: taggram[MSD_TAGS.index(tag)]
    )


def wait_analyzed(port: int, tracks: int, timeout: float = 150) -> dict:
    """The status once every analyzer has analyzed every track (each reports done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get_json(port, "/api/vibe/status")
        done = {analyzer["name"]: analyzer["counts"]["done"] for analyzer in status["analyzers"]}
        if done == dict.fromkeys(ANALYZERS, tracks):
            return status
        time.sleep(0.2)
    raise AssertionError(f"the analyzers never finished: {status}")


@pytest.fixture(scope="module")
def both_analyzers(tmp_path_factory):
    """A host process with MusiCNN (real weights) and CLAP (tiny model), the clips analyzed."""
    tmp = tmp_path_factory.mktemp("real-analyzers")
    (tmp / "music").mkdir()
    for clip in CLIPS:
        shutil.copy(FIXTURES / clip, tmp / "music" / clip)
    tiny_clap = save_tiny_clap(tmp / "tiny-clap", projection_dim=512)
    env = {
        **{
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SOUNDSPAN_", "CLAP_", "MUSICNN_"))
        },
        "SOUNDSPAN_MUSIC_DIR": str(tmp / "music"),
        "SOUNDSPAN_DATA_DIR": str(tmp / "data"),
        "SOUNDSPAN_TRUST_LOCAL_ACCOUNTS": "true",  # the test reads the API without a token
        "SOUNDSPAN_WATCHER__DEBOUNCE_SECONDS": "0.2",
        "SOUNDSPAN_MUSICNN__WORKERS": "1",
        "SOUNDSPAN_MUSICNN__SLEEP_INTERVAL": "0.2",
        "SOUNDSPAN_MUSICNN__BATCH_SIZE": "8",
        "SOUNDSPAN_CLAP__MODEL": str(tiny_clap),
        "SOUNDSPAN_CLAP__WORKERS": "1",
        "SOUNDSPAN_CLAP__SLEEP_INTERVAL": "0.2",
    }
    process, env, port = serve(env)
    try:
        status = wait_analyzed(port, len(CLIPS))
        yield env, port, tmp, status, tiny_clap
    finally:
        stop(process)


def track_ids(port: int) -> dict[str, str]:
    return {track["path"]: track["id"] for track in get_json(port, "/api/tracks")["tracks"]}


def test_status_shows_both_analyzers_ready_and_only_musicnn_trained(both_analyzers):
    _, _, _, status, tiny_clap = both_analyzers
    analyzers = {analyzer["name"]: analyzer for analyzer in status["analyzers"]}
    musicnn, clap = analyzers["musicnn"], analyzers["clap"]
    assert (musicnn["state"], musicnn["trained"], musicnn["model_id"]) == (
        "ready",
        True,
        "MSD_musicnn",
    )
    assert (clap["state"], clap["trained"], clap["model_id"]) == ("ready", False, str(tiny_clap))
    assert (musicnn["dimension"], clap["dimension"]) == (200, 512)
    for analyzer in (musicnn, clap):
        assert analyzer["counts"] == {"done": 3, "pending": 0, "running": 0, "failed": 0}
    assert status["library"] == {"tracks": 3, "missing": 0, "distinct_contents": 3}


def test_similar_goes_to_musicnn_while_clap_is_untrained_and_to_clap_when_asked(both_analyzers):
    _, port, *_ = both_analyzers
    ids = track_ids(port)
    source = ids["anttis_1918.mp3"]
    by_default = get_json(port, f"/api/vibe/similar/{source}?limit=20")  # as the page asks
    by_clap = get_json(port, f"/api/vibe/similar/{source}?analyzer=clap")
    assert by_default["analyzer"] == "musicnn" and by_clap["analyzer"] == "clap"
    for answer in (by_default, by_clap):
        paths = {result["track"]["path"] for result in answer["results"]}
        assert paths == set(CLIPS) - {"anttis_1918.mp3"}
        scores = [result["score"] for result in answer["results"]]
        assert scores == sorted(scores, reverse=True)


def test_text_search_goes_through_claps_text_tower_even_untrained(both_analyzers):
    _, port, *_ = both_analyzers
    answer = post_json(port, "/api/vibe/search", {"text": "electronic pop", "limit": 20})
    # The answer names CLAP, and the status (above) says its weights are untrained: a client
    # can tell these scores mean nothing. MusiCNN's tags answer only when no text tower loads.
    assert answer["analyzer"] == "clap" and "matched_tags" not in answer
    assert {result["track"]["path"] for result in answer["results"]} == set(CLIPS)


def test_a_mix_places_words_through_musicnn_tags(both_analyzers):
    _, port, *_ = both_analyzers
    source = track_ids(port)["anttis_funkyrobot.opus"]
    answer = post_json(port, "/api/vibe/mix", {"add": ["jazz", source], "limit": 5})
    assert answer["analyzer"] == "musicnn"
    [words, track] = answer["items"]
    assert (words["kind"], words["via"]) == ("text", "musicnn-tags")
    assert (track["kind"], track["via"]) == ("track", "musicnn")
    paths = [result["track"]["path"] for result in answer["results"]]
    assert sorted(paths) == ["anttis_1918.mp3", "anttis_funkyrobot_16k.flac"]  # not the source


def test_the_map_is_musicnns_and_labels_each_track_with_its_likeliest_genre(both_analyzers):
    _, port, *_ = both_analyzers
    ids = track_ids(port)
    answer = get_json(port, "/api/vibe/map")  # as the page asks: the analyzer picked for it
    assert answer["analyzer"] == "musicnn"
    labels = {point["id"]: point["label"] for point in answer["points"]}
    assert labels == {ids[clip]: likeliest_genre(clip) for clip in CLIPS}
    coordinates = np.array([[point["x"], point["y"]] for point in answer["points"]])
    assert coordinates.shape == (3, 2) and np.isfinite(coordinates).all()


def test_the_cli_agrees_with_the_api(both_analyzers):
    env, port, tmp, _, tiny_clap = both_analyzers
    status = cli(env, "status")
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.strip()}
    assert rows["musicnn"][1:3] == ["ready", "3/3"] and rows["clap"][1:3] == ["ready", "3/3"]
    assert "musicnn: MSD_musicnn, trained weights, ready on cpu" in status.stdout
    assert "untrained weights, ready on cpu" in status.stdout  # the tests' tiny CLAP
    assert "library: 3 tracks (3 distinct), 0 missing" in status.stdout

    search = cli(env, "search", "electronic pop")
    assert search.returncode == 0, search.stderr
    assert "'electronic pop' by clap" in search.stdout

    similar = cli(env, "similar", str(tmp / "music" / "anttis_1918.mp3"))
    assert similar.returncode == 0, similar.stderr
    assert "like anttis_1918.mp3 by musicnn" in similar.stdout
    api = get_json(port, f"/api/vibe/similar/{track_ids(port)['anttis_1918.mp3']}")
    for result in api["results"]:  # the same tracks, with the same scores
        assert f"{result['score']:.3f}" in similar.stdout
        assert result["track"]["id"] in similar.stdout

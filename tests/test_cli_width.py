"""The CLI's layouts at the widths people's terminals have: every word whole at 80 and 60
columns, the least useful columns left out when narrow, and plain one-line rows for pipes.
test_cli.py runs the real commands in a real terminal; these render answers the API gives
(every state and every progress field) without a host, so each case costs milliseconds."""

from __future__ import annotations

import time

import pytest
from rich.console import Console
from rich.text import Text

from soundspan_hooks.cli_tables import PLAIN_WIDTH, progress_bars, progress_fields, results_table
from soundspan_host.cli_tables import status_view
from tests.harness.terminal_text import assert_plain, assert_words_whole


def terminal(width: int) -> Console:
    return Console(width=width, force_terminal=True, color_system="truecolor")


def shown(console: Console, *renderables) -> str:
    with console.capture() as captured:
        for renderable in renderables:
            console.print(renderable)
    return captured.get()


def plain_shown(console: Console, *renderables) -> str:
    """What a person reads: the output less its colour codes."""
    return Text.from_ansi(shown(console, *renderables)).plain


def analyzer(name: str, state: str, done: int, pending: int, failed: int, **fields) -> dict:
    """One analyzer of GET /api/analysis/status, as the API words it."""
    running = 1 if state == "ready" and pending else 0
    return {
        "name": name,
        "model_id": "MSD_musicnn",
        "trained": True,
        "device": "cpu",
        "state": state,
        "reason": None,
        "version": "2",
        "dimension": 200,
        "counts": {"pending": pending, "running": running, "done": done, "failed": failed},
        "tracks_per_minute": None,
        "audio_minutes_per_minute": None,
        "audio_minutes_waiting": 0.0,
        "eta_seconds": None,
        "run_started_at": None,
        "download": None,
        **fields,
    }


RUNNING = analyzer(
    "musicnn",
    "ready",
    1215,
    2000,
    3,
    tracks_per_minute=12.34,
    audio_minutes_per_minute=45.6,
    audio_minutes_waiting=6000.0,
    eta_seconds=7890,
    run_started_at=time.time() - 600,
    detail="int8 failed its check on these weights; running fp32",
    queued_because=[
        {"reason": "model updated: MSD_musicnn-1 -> MSD_musicnn-2", "jobs": 1900},
        {"reason": "retry", "jobs": 100},
    ],
)
STARTING = analyzer(
    "tagger",
    "ready",
    1,
    33,
    0,
    audio_minutes_waiting=120.0,
    run_started_at=time.time() - 5,
)
NO_MODEL = analyzer(
    "clap",
    "unavailable",
    0,
    34,
    0,
    model_id="laion/larger_clap_music",
    trained=False,
    audio_minutes_waiting=120.0,
    reason=(
        "CLAP model laion/larger_clap_music is not in the local Hugging Face cache"
        " (/root/.cache/huggingface/hub) and downloads are off. Set [clap] allow_download"
        " (SOUNDSPAN_CLAP__ALLOW_DOWNLOAD) = true."
    ),
)
DOWNLOADING = analyzer(
    "clap2",
    "downloading",
    0,
    34,
    0,
    model_id="laion/larger_clap_music",
    audio_minutes_waiting=120.0,
    download={
        "bytes_done": 245_000_000,
        "bytes_total": 700_000_000,
        "bytes_per_second": 12_000_000,
        "eta_seconds": 40,
        "file": "model.safetensors",
    },
)


def status_answer() -> dict:
    """GET /api/vibe/status now, with a worker of an older musicnn last seen 90 s ago."""
    worker = {"worker": "gpu-box", "version": "1", "last_seen": time.time() - 90}
    return {
        "analyzers": [{**RUNNING, "outdated_workers": [worker]}, STARTING, NO_MODEL, DOWNLOADING],
        "library": {"tracks": 3218, "distinct_contents": 3200, "missing": 1},
        "time": time.time(),
    }


@pytest.mark.parametrize("width", [80, 60])
def test_status_keeps_every_word_whole_and_says_what_each_analyzer_does(width):
    screen = plain_shown(terminal(width), *status_view(terminal(width), status_answer()))
    assert_words_whole(
        screen,
        [
            "analyzer state done ETA",
            "musicnn ready 1215/3219 2h11m",
            "tagger measuring",  # running, not yet two tracks done: no rate, no ETA yet
            "clap unavailable clap2 downloading",
            "MSD_musicnn, trained weights, ready on cpu; 6000 min of audio waiting",
            "clap: no model loaded (laion/larger_clap_music); 120 min of audio waiting",
            "Set [clap] allow_download (SOUNDSPAN_CLAP__ALLOW_DOWNLOAD) = true.",
            "clap2: laion/larger_clap_music, downloading 35 % (245 of 700 MB, 12 MB/s, ETA 0m40s);",
            "int8 failed its check on these weights; running fp32",
            "queued because: model updated: MSD_musicnn-1 -> MSD_musicnn-2 (1900 jobs);"
            " retry (100 jobs)",
            "worker gpu-box runs musicnn 1, this host 2 (seen 1m30s ago)",
            "library: 3218 tracks (3200 distinct), 1 missing",
        ],
        width,
    )
    if width == 80:  # both rates fit; at 60 the least useful columns leave
        assert_words_whole(screen, ["tracks/min audio min/min 12.3 45.6"], width)
    else:
        assert "tracks/min" not in screen and "12.3" not in screen


def test_status_in_a_pipe_is_one_plain_line_per_analyzer():
    console = Console(width=PLAIN_WIDTH)
    screen = shown(console, *status_view(console, status_answer()))
    assert_plain(screen)
    rows = screen.splitlines()
    columns = [" ".join(row.split()) for row in rows[1:4]]  # whatever the spaces between
    assert columns == [
        "analyzer state done waiting failed tracks/min audio min/min ETA",
        "musicnn ready 1215/3219 2001 3 12.3 45.6 2h11m",
        "tagger ready 1/35 34 0 measuring measuring measuring",
    ]
    assert any(line.startswith("  CLAP model") and line.endswith("= true.") for line in rows)


RESULTS = [
    {
        "score": 0.8351,
        "track": {
            "artist": "Antti Luode",
            "title": "Funky Robot",
            "path": "Antti Luode/Funky Robot (16 kHz).flac",
            "id": "a732390d017949f8abe8218006b3ea70",
        },
    },
    {
        "score": 0.5,
        "track": {
            "artist": None,
            "title": None,
            "path": "Sketches/Four on the Floor.flac",
            "id": "151f262a9c4f486a865a654f5703ae80",
        },
    },
]


@pytest.mark.parametrize("width", [80, 60])
def test_results_show_tags_and_file_in_one_column_and_leave_the_id_when_narrow(width):
    console = terminal(width)
    screen = plain_shown(console, results_table(console, "'pop' by musicnn-tags", RESULTS))
    assert_words_whole(
        screen,
        ["0.835 Antti Luode - Funky Robot", "Antti Luode/Funky Robot (16 kHz).flac", "0.500"],
        width,
    )
    assert ("a732390d017949f8abe8218006b3ea70" in screen) == (width == 80)


def test_results_in_a_pipe_are_one_line_each_with_every_column():
    console = Console(width=PLAIN_WIDTH)
    screen = shown(console, results_table(console, "'pop' by musicnn-tags", RESULTS))
    assert_plain(screen)
    [row] = [line for line in screen.splitlines() if "Funky" in line]
    assert row.split("  ")[0:2] == ["1", "0.835"]
    assert "Antti Luode/Funky Robot (16 kHz).flac" in row and row.rstrip().endswith("ea70")


@pytest.mark.parametrize("width", [80, 60])
def test_progress_bars_keep_their_words_whole(width):
    console = terminal(width)
    progress = progress_bars(console)
    for status in (RUNNING, STARTING, DOWNLOADING):
        counts = status["counts"]
        progress.add_task(
            status["name"],
            total=sum(counts.values()),
            completed=counts["done"] + counts["failed"],
            **progress_fields(status, wide=console.width >= 100),
        )
    screen = plain_shown(console, progress.make_tasks_table(progress.tasks))
    assert_words_whole(
        screen,
        [
            "musicnn 1218/3219 12.3 tracks/min ETA 2h11m 3 failed",
            "tagger 1/35 measuring tracks/min ETA measuring",
            "downloading 35 % (245 of 700 MB, 12 MB/s, ETA 0m40s)",
        ],
        width,
    )

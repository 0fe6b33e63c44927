"""The `soundspan-host` commands people type, each against a real host process (or, where
none runs, the database it left), plus what the host shows operators: /metrics and JSON logs.

The library is part of the known-vector one (harness/cli_host.py): arc tracks, south tracks,
and one broken file whose analysis fails with a reason. The module's host keeps that library as
it is (a retry ends where it began); a test that adds files or stops its host has a host of its
own.
"""

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import urllib.request

import pytest
from rich.text import Text

from tests.harness.cli_host import (
    BROKEN,
    TRACKS,
    cli,
    environment,
    serve,
    stop,
    write_library,
)
from tests.harness.terminal_text import assert_words_whole
from tests.harness.vector_library import arc_vector, write_vector_wav


def terminal_cli(env: dict[str, str], width: int, *arguments: str) -> str:
    """What a person reads (the output less its colour codes) after the command ran in a real
    terminal, a pseudo-terminal `width` columns wide."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, width, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "soundspan_host", *arguments],
        env={**env, "COLUMNS": str(width)},
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + 120
    try:
        while select.select([leader], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(leader)
    assert process.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, output.decode()
    return Text.from_ansi(output.decode().replace("\r\n", "\n")).plain


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return json.load(answer)


def post_json(port: int, path: str, body: dict):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def wait_settled(port: int, tracks: int) -> None:
    """Until the library holds `tracks` and nothing is pending or running."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = get_json(port, "/api/vibe/status")
        counts = status["analyzers"][0]["counts"]
        if status["library"]["tracks"] == tracks and counts["pending"] + counts["running"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"library never settled: {status}")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """One host for the module, logging JSON, with the library analyzed."""
    tmp = tmp_path_factory.mktemp("cli")
    write_library(tmp / "music")
    process, env, port = serve(environment(tmp, SOUNDSPAN_LOG_FORMAT="json"))
    try:
        wait_settled(port, TRACKS)
        yield env, port, tmp, process
    finally:
        stop(process)


def test_status_shows_each_analyzer_and_its_progress(host):
    env, *_ = host
    done = cli(env, "status")
    assert done.returncode == 0, done.stderr
    assert "vectors: first-samples, untrained weights, ready on cpu" in done.stdout
    [row] = [line.split() for line in done.stdout.splitlines() if line.startswith("vectors ")]
    assert row[:5] == ["vectors", "ready", "7/8", "0", "1"]  # the broken file failed
    assert "library: 8 tracks" in done.stdout


def test_search_lists_tracks_with_scores(host):
    env, *_ = host
    done = cli(env, "search", "south", "--limit", "5")
    assert done.returncode == 0, done.stderr
    assert "'south' by vectors-tags (tags: south)" in done.stdout
    assert "south/a.wav" in done.stdout and "south/b.wav" in done.stdout
    assert "arc/" not in done.stdout


def test_similar_takes_a_path_or_an_id(host):
    env, port, tmp, _ = host
    by_path = cli(env, "similar", str(tmp / "music" / "arc" / "05.wav"), "--limit", "2")
    assert by_path.returncode == 0, by_path.stderr
    assert "like arc/05.wav by vectors" in by_path.stdout
    [track] = get_json(port, "/api/tracks?path=arc/05.wav")["tracks"]
    by_id = cli(env, "similar", track["id"], "--limit", "2")
    assert by_id.stdout == by_path.stdout
    unknown = cli(env, "similar", "no-such-track")
    assert unknown.returncode == 1
    assert "no track with id 'no-such-track' (HTTP 404)" in unknown.stderr


def test_failed_shows_reasons_and_retry_queues_them_again(host):
    env, port, _, process = host
    done = cli(env, "failed")
    assert done.returncode == 0, done.stderr
    assert "failed analyses: 1" in done.stdout
    [row] = [line for line in done.stdout.splitlines() if line.startswith(BROKEN)]
    assert "vectors" in row and "not a readable WAV file" in row  # a row is one line
    retried = cli(env, "failed", "--retry")
    assert "queued 1 again" in retried.stdout
    wait_settled(port, TRACKS)
    assert get_json(port, "/api/analysis/failures")["total"] == 1  # broken again, not lost


def table_texts(port: int, command: str) -> list[str]:
    """What the command's table must show, from the API (or fixed words the command adds)."""
    if command == "status":
        [vectors] = get_json(port, "/api/vibe/status")["analyzers"]
        model = f"vectors: {vectors['model_id']}, untrained weights, ready on cpu"
        return ["analyzer state done ETA vectors ready 7/8", model]
    if command == "search":
        found = post_json(port, "/api/vibe/search", {"text": "south", "limit": 5})["results"]
        return ["'south' by vectors-tags (tags: south)", *(r["track"]["path"] for r in found)]
    if command == "failed":
        [failure] = get_json(port, "/api/analysis/failures")["failures"]
        return ["failed analyses: 1", f"{BROKEN} vectors", failure["error"]]
    return [  # doctor: its checks and findings (their paths, of pytest's, may fold)
        "music dir data dir database a running host has it playlists inotify",
        "nothing stops the host from running",
    ]


COMMANDS = {
    "status": ("status",),
    "search": ("search", "south", "--limit", "5"),
    "failed": ("failed",),
    "doctor": ("doctor",),
}


@pytest.mark.parametrize(
    "width, command",
    [
        (80, "status"),
        (80, "search"),
        (80, "failed"),
        (80, "doctor"),
        (60, "status"),
        (60, "doctor"),
    ],
)
def test_tables_keep_every_word_whole_in_a_narrow_terminal(host, width, command):
    # `similar` shares `search`'s table; test_cli_width.py renders every layout at both widths
    env, port, *_ = host
    screen = terminal_cli(env, width, *COMMANDS[command])
    assert_words_whole(screen, table_texts(port, command), width)


def test_scan_waits_with_progress_until_new_files_are_analyzed(tmp_path, database_url):
    # files there before start, and no scan at start: only the command finds them
    write_library(tmp_path / "music")
    for step in (2, 3):
        write_vector_wav(tmp_path / "music" / "late" / f"{step}.wav", arc_vector(step))
    process, env, port = serve(
        environment(
            tmp_path,
            SOUNDSPAN_DATABASE_URL=database_url,
            SOUNDSPAN_WATCHER__RECONCILE_ON_START="false",
        )
    )
    try:
        assert get_json(port, "/api/vibe/status")["library"]["tracks"] == 0
        done = cli(env, "scan", "--wait")
        assert done.returncode == 0, done.stderr
        assert "scan " in done.stdout and "vectors" in done.stdout
        assert "10/10" in done.stdout and "1 failed" in done.stdout  # finished, one failed
        status = get_json(port, "/api/vibe/status")
        assert status["library"]["tracks"] == TRACKS + 2
        assert status["analyzers"][0]["counts"]["pending"] == 0
    finally:
        stop(process)


def test_doctor_finds_nothing_wrong_with_a_running_host(host):
    env, *_ = host
    done = cli(env, "doctor")
    assert done.returncode == 0, done.stdout
    for finding in ("music dir", "data dir", "a running host has it", "playlists", "inotify"):
        assert finding in done.stdout
    assert "nothing stops the host from running" in done.stdout


def test_doctor_says_what_to_fix(tmp_path):
    env = environment(tmp_path, SOUNDSPAN_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    done = cli(env, "doctor")
    assert done.returncode == 1
    assert "does not exist" in done.stdout and "SOUNDSPAN_MUSIC_DIR" in done.stdout
    assert "cannot connect" in done.stdout and "SOUNDSPAN_DATABASE_URL" in done.stdout


def test_metrics_count_the_queue_analyses_and_requests(host):
    _, port, *_ = host
    get_json(port, "/api/vibe/status")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        metrics = answer.read().decode()
    assert 'soundspan_queue_depth{analyzer="vectors"} 0.0' in metrics
    assert 'soundspan_analysis_jobs{analyzer="vectors",state="failed"} 1.0' in metrics
    assert 'soundspan_analyses_total{analyzer="vectors",outcome="done"}' in metrics
    assert 'soundspan_analysis_seconds_bucket{analyzer="vectors",le="+Inf"}' in metrics
    assert (
        'soundspan_http_request_seconds_count{method="GET",route="/api/vibe/status",status="200"}'
        in metrics
    )


def test_logs_are_json_with_one_line_per_analyzed_track(host):
    *_, process = host
    records = [json.loads(line) for line in process.output().splitlines() if line.strip()]
    analyzed = [record for record in records if record.get("seconds") is not None]
    assert {record["track"] for record in analyzed} >= {"arc/00.wav", "south/a.wav"}
    assert all(record["level"] == "INFO" and record["analyzer"] == "vectors" for record in analyzed)
    [failure] = {record["track"] for record in records if "error" in record}
    assert failure == BROKEN


def test_without_a_running_host_commands_read_its_database(tmp_path):
    write_library(tmp_path / "music")
    process, env, port = serve(environment(tmp_path))
    try:
        wait_settled(port, TRACKS)
    finally:
        stop(process)
    done = cli(env, "status")
    assert done.returncode == 0, done.stderr
    assert "no host is running" in done.stderr and "7/8" in done.stdout
    failed = cli(env, "failed")
    assert BROKEN in failed.stdout
    scan = cli(env, "scan")
    assert scan.returncode == 2 and "no host answers" in scan.stderr

"""The analysis status is the host's, since the queue is: GET /api/analysis/status, and the
same answer at GET /api/vibe/status (its path when the vibe API served it), with the vibe API
switched off too; what a plugin adds (the vibe API's exclude counts) rides along."""

import subprocess
import sys

from soundspan_hooks import HOST
from tests.harness.cli_host import TRACKS, cli, environment, serve, stop, write_library
from tests.harness.library import eventually, settled, write_wav
from tests.harness.vector_library import arc_vector, write_vector_wav

VIBE_API_OFF = "[vibe_api]\nenabled = false\n"


def help_text(env: dict[str, str]) -> str:
    """`soundspan-host --help`, boxes and all."""
    done = subprocess.run(
        [sys.executable, "-m", "soundspan_host", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def status_at(client, path: str) -> dict:
    answer = await client.get(path)
    assert answer.status == 200, await answer.text()
    body = await answer.json()
    body.pop("time")
    return body


async def test_the_host_answers_the_status_with_the_vibe_api_off(
    fast_host, toy_analyzer, music_dir
):
    client = await fast_host(VIBE_API_OFF)
    write_wav(music_dir / "a.wav", 200)
    await eventually(lambda: settled(client.app[HOST].engine, 1), what="the analysis")

    status = await status_at(client, "/api/analysis/status")
    [toy] = status["analyzers"]
    assert toy["name"] == "toy"
    assert toy["counts"] == {"done": 1, "pending": 0, "running": 0, "failed": 0}
    assert toy["queued_because"] == [] and toy["outdated_workers"] == []
    assert status["library"] == {"tracks": 1, "missing": 0, "distinct_contents": 1}
    assert "excluded" not in status  # the vibe API's own field, and it is off
    assert await status_at(client, "/api/vibe/status") == status


async def test_the_old_path_answers_the_same_with_what_the_vibe_api_adds(fast_host):
    client = await fast_host('[vibe_api]\nexclude_genres = ["Talk"]\n')
    status = await status_at(client, "/api/analysis/status")
    assert status["excluded"] == {
        "settings": {"exclude_genres": ["Talk"]},
        "tracks": 0,
        "rules": {},
    }
    assert await status_at(client, "/api/vibe/status") == status


def test_status_and_scan_wait_work_with_the_vibe_api_off(tmp_path, database_url):
    write_library(tmp_path / "music")
    write_vector_wav(tmp_path / "music" / "late" / "2.wav", arc_vector(2))
    process, env, _ = serve(
        environment(
            tmp_path,
            SOUNDSPAN_DATABASE_URL=database_url,
            SOUNDSPAN_VIBE_API__ENABLED="false",
            SOUNDSPAN_WATCHER__RECONCILE_ON_START="false",
        )
    )
    try:
        scan = cli(env, "scan", "--wait")
        assert scan.returncode == 0, scan.stderr
        assert f"{TRACKS + 1}/{TRACKS + 1}" in scan.stdout and "1 failed" in scan.stdout
        status = cli(env, "status")
        assert status.returncode == 0, status.stderr
        [row] = [line.split() for line in status.stdout.splitlines() if line.startswith("vectors ")]
        assert row[:5] == ["vectors", "ready", f"{TRACKS}/{TRACKS + 1}", "0", "1"]
        assert f"library: {TRACKS + 1} tracks" in status.stdout
        assert " search " not in help_text(env)  # the vibe API's commands are off with it
    finally:
        stop(process)

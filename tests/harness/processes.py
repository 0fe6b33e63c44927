"""Helpers for tests that run `soundspan-host` as a real process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

# the host logs this once it listens; with SOUNDSPAN_PORT=0 it names the port the system picked
SERVING = re.compile(r"serving on http://[^\s\"]*:(\d+)")
T = TypeVar("T")


ADDRESS_IN_USE = "Address already in use"  # what bind()'s EADDRINUSE reads as, in any log
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A port free now, for a server that cannot be told to bind port 0 itself (another
    process may take it before that server binds it: use port 0 wherever a server can, else
    start it through `on_a_free_port`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def on_a_free_port(start: Callable[[int], T]) -> T:
    """`start(port)` on a port free a moment ago; on another one if some other process bound
    it in between (`start` then fails with an error that says "Address already in use")."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return start(free_port())
        except Exception as error:
            if ADDRESS_IN_USE not in str(error) or attempt == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def on_a_free_port_async(start: Callable[[int], Awaitable[T]]) -> T:
    """`on_a_free_port` for a start that is awaited."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return await start(free_port())
        except Exception as error:
            if ADDRESS_IN_USE not in str(error) or attempt == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class DrainedProcess(subprocess.Popen):
    """A process whose output is read as it comes, so a chatty host never blocks on a full
    pipe; communicate() returns everything it printed, wait_for_output() waits for a line."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        super().__init__(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._new_output = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        with self.stdout:
            for line in self.stdout:
                with self._new_output:
                    self.lines.append(line)
                    self._new_output.notify_all()
        with self._new_output:
            self._new_output.notify_all()  # the end of the output: waiters stop waiting

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first match of `pattern` in a line, as soon as the process prints it; None if
        its output ends without one. Fails with the output so far when `timeout` runs out."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_output:
            while True:
                for line in self.lines[seen:]:
                    if found := pattern.search(line):
                        return found
                seen = len(self.lines)
                if not self._reader.is_alive():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no line matching {pattern.pattern!r} within {timeout} s:\n"
                        + self.output()
                    )
                self._new_output.wait(left)

    def communicate(self, input=None, timeout=None):  # noqa: A002 - Popen's own signature
        self.wait(timeout)
        self._reader.join(timeout)
        return self.output(), None


def serving_port(process: DrainedProcess, timeout: float = 120) -> int | None:
    """The port a host started with SOUNDSPAN_PORT=0 serves on, read from its log once it
    listens; None if it exited first (e.g. on bad configuration). A host that does neither
    within `timeout` is stopped, and the test fails with its output."""
    try:
        found = process.wait_for_output(SERVING, timeout)
    except AssertionError:
        process.kill()
        process.communicate(timeout=30)
        raise
    return None if found is None else int(found.group(1))


def start_host_process(
    tmp_path: Path, music_dir: Path, wrapper: list[str] | None = None, **env: str
) -> tuple[DrainedProcess, int | None]:
    """`soundspan-host serve` on a port the system picks, data under tmp_path, output
    captured; returns once it listens (with its port) or has exited (with None)."""
    process = DrainedProcess(
        [*(wrapper or []), sys.executable, "-m", "soundspan_host", "serve"],
        env={
            **os.environ,
            "SOUNDSPAN_PORT": "0",
            "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
            "SOUNDSPAN_MUSIC_DIR": str(music_dir),
            **env,
        },
    )
    return process, serving_port(process)


def wait_healthy(process: DrainedProcess, port: int | None, timeout: float = 60) -> int:
    """Wait for /healthz to answer; fails with the process's output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None and port is not None, process.communicate(timeout=10)[0]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return answer.status
        except OSError:
            time.sleep(0.2)
    raise AssertionError("host never became healthy")


def start_worker(
    database_url: str, music_dir: Path, site: Path, lease_seconds: str = "1.5", **settings: str
) -> DrainedProcess:
    """`soundspan-host worker --analyzer toy` for a host's database: the toy plugin from `site`,
    one job at a time, leases short enough that a killed worker's job is soon taken over."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "SOUNDSPAN_DATABASE_URL": database_url,
        "SOUNDSPAN_MUSIC_DIR": str(music_dir),
        "SOUNDSPAN_ANALYSIS_LEASE_SECONDS": lease_seconds,
        "SOUNDSPAN_TOY__WORKERS": "1",
        **{f"SOUNDSPAN_TOY__{key.upper()}": value for key, value in settings.items()},
    }
    return DrainedProcess(
        [sys.executable, "-m", "soundspan_host", "worker", "--analyzer", "toy"], env=env
    )

"""Helpers for tests that run `soundspan-host` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DrainedProcess(subprocess.Popen):
    """A process whose output is read as it comes, so a chatty host never blocks on a full
    pipe; communicate() returns everything it printed."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        super().__init__(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        with self.stdout:
            for line in self.stdout:
                self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def communicate(self, input=None, timeout=None):  # noqa: A002 - Popen's own signature
        self.wait(timeout)
        self._reader.join(timeout)
        return self.output(), None


def start_host_process(
    tmp_path: Path, music_dir: Path, wrapper: list[str] | None = None, **env: str
) -> tuple[DrainedProcess, int]:
    """`soundspan-host serve` on a free port, data under tmp_path; output captured."""
    port = free_port()
    process = DrainedProcess(
        [*(wrapper or []), sys.executable, "-m", "soundspan_host", "serve"],
        env={
            **os.environ,
            "SOUNDSPAN_PORT": str(port),
            "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
            "SOUNDSPAN_MUSIC_DIR": str(music_dir),
            **env,
        },
    )
    return process, port


def wait_healthy(process: DrainedProcess, port: int, timeout: float = 60) -> int:
    """Wait for /healthz to answer; fails with the process's output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate(timeout=10)[0]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return answer.status
        except OSError:
            time.sleep(0.2)
    raise AssertionError("host never became healthy")


def start_worker(database_url: str, music_dir: Path, site: Path, **settings: str) -> DrainedProcess:
    """`soundspan-host worker --analyzer toy` for a host's database: the toy plugin from `site`,
    one job at a time, leases short enough that a killed worker's job is soon taken over."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "SOUNDSPAN_DATABASE_URL": database_url,
        "SOUNDSPAN_MUSIC_DIR": str(music_dir),
        "SOUNDSPAN_ANALYSIS_LEASE_SECONDS": "1.5",
        "SOUNDSPAN_TOY__WORKERS": "1",
        **{f"SOUNDSPAN_TOY__{key.upper()}": value for key, value in settings.items()},
    }
    return DrainedProcess(
        [sys.executable, "-m", "soundspan_host", "worker", "--analyzer", "toy"], env=env
    )

"""Helpers for tests that run `soundspan-host` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_host_process(
    tmp_path: Path, music_dir: Path, wrapper: list[str] | None = None, **env: str
) -> tuple[subprocess.Popen, int]:
    """`soundspan-host serve` on a free port, data under tmp_path; output captured."""
    port = free_port()
    process = subprocess.Popen(
        [*(wrapper or []), sys.executable, "-m", "soundspan_host", "serve"],
        env={
            **os.environ,
            "SOUNDSPAN_PORT": str(port),
            "SOUNDSPAN_DATA_DIR": str(tmp_path / "data"),
            "SOUNDSPAN_MUSIC_DIR": str(music_dir),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def wait_healthy(process: subprocess.Popen, port: int, timeout: float = 60) -> int:
    """Wait for /healthz to answer; fails with the process's output if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                return answer.status
        except OSError:
            time.sleep(0.2)
    raise AssertionError("host never became healthy")

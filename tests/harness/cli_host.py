"""A real `soundspan-host serve` for the CLI tests, and the commands people type against it.

Its library is a small part of the known-vector one (harness/vector_library.py): three arc
tracks, the others with UTF-8 names, and one broken file whose analysis fails with a reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness.plugins import VECTOR_ANALYZER
from tests.harness.processes import DrainedProcess, serving_port, wait_healthy
from tests.harness.terminal_text import assert_plain
from tests.harness.vector_library import OTHERS, arc, arc_vector, write_vector_wav

BROKEN = "broken.wav"
TRACKS = 3 + 4 + 1


def write_library(music_dir: Path) -> None:
    """The CLI tests' library: TRACKS files, BROKEN among them."""
    for step in (0, 5, 10):
        write_vector_wav(music_dir / arc(step), arc_vector(step))
    for path, vector in OTHERS.items():
        if "caf" not in path:
            write_vector_wav(music_dir / path, vector)
    (music_dir / BROKEN).write_bytes(b"RIFF\x00\x00\x00\x00not a wave at all")


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    """The machine's environment less its SOUNDSPAN_* variables (a module fixture runs before
    the autouse clean-up), with the vectors analyzer installed under `tmp`."""
    site = tmp / "site"
    if not site.exists():
        VECTOR_ANALYZER.install(site)
    return {
        **{key: value for key, value in os.environ.items() if not key.startswith("SOUNDSPAN_")},
        "SOUNDSPAN_MUSIC_DIR": str(tmp / "music"),
        "SOUNDSPAN_DATA_DIR": str(tmp / "data"),
        "SOUNDSPAN_TRUST_LOCAL_ACCOUNTS": "true",  # the test reads the API without a token
        "SOUNDSPAN_MUSICNN__ENABLED": "false",
        "SOUNDSPAN_CLAP__ENABLED": "false",
        "SOUNDSPAN_WATCHER__DEBOUNCE_SECONDS": "0.2",
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def serve(env: dict[str, str]) -> tuple[DrainedProcess, dict[str, str], int]:
    """A host on a port the system picks; returns it, `env` with that port (for the commands
    that talk to it), and the port."""
    process = DrainedProcess(
        [sys.executable, "-m", "soundspan_host", "serve"], env={**env, "SOUNDSPAN_PORT": "0"}
    )
    port = serving_port(process)
    wait_healthy(process, port)
    return process, {**env, "SOUNDSPAN_PORT": str(port)}, port


def stop(process: DrainedProcess) -> None:
    process.terminate()
    process.communicate(timeout=60)


def cli(env: dict[str, str], *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command with its output in pipes, as a script would read it."""
    done = subprocess.run(
        [sys.executable, "-m", "soundspan_host", *arguments],
        env={**env, "COLUMNS": "40"},  # a pipe has no width: its rows never wrap
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert_plain(done.stdout)
    return done

"""A real Subsonic server for the benchmarks: supysonic (a test extra), run as its own process.

Its `supysonic.conf` lives in a work dir; users are added and a library folder registered and
scanned through `supysonic-cli`. The process serves supysonic's WSGI app with werkzeug (a
dependency of supysonic's Flask) on a port held for the server's whole life: a socket bound to
port 0 and never listening, with SO_REUSEPORT, which the server's own listening socket shares,
so no port is guessed. The tests run the same server (tests/harness/subsonic_server.py); the
benchmarks keep their own copy so that bench/ never imports tests/.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLI = Path(sys.executable).parent / "supysonic-cli"
START_SECONDS = 60


@dataclass
class Supysonic:
    url: str
    work_dir: Path
    library: Path
    process: subprocess.Popen[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def run_cli(work_dir: Path, *args: str) -> str:
    """`supysonic-cli` with the configuration in `work_dir`; its output."""
    done = subprocess.run(
        [str(CLI), *args], cwd=work_dir, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"supysonic-cli {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


@contextmanager
def supysonic(work_dir: Path, library: Path, users: dict[str, str]) -> Iterator[Supysonic]:
    """Configure, fill and start a supysonic server on `library`; stopped on exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "supysonic.conf").write_text(
        "[base]\n"
        f"database_uri = sqlite:///{work_dir / 'supysonic.db'}\n"
        "[webapp]\n"
        f"cache_dir = {work_dir / 'cache'}\n"
        "mount_webui = no\n"
        "[daemon]\n"
        f"socket = {work_dir / 'daemon.sock'}\n"
        "run_watcher = no\n"
    )
    for name, password in users.items():
        run_cli(work_dir, "user", "add", name, "--password", password)
    run_cli(work_dir, "folder", "add", "library", str(library))
    run_cli(work_dir, "folder", "scan", "--foreground", "library")
    with socket.socket() as reservation:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(("127.0.0.1", 0))
        port = reservation.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, __file__, str(work_dir / "supysonic.conf"), str(port)],
            cwd=work_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        server = None
        try:
            assert _read_port(process) == port
            server = Supysonic(f"http://127.0.0.1:{port}", work_dir, library, process)
            yield server
        finally:
            if server is not None:
                server.stop()
            elif process.poll() is None:
                process.kill()
                process.wait()


def _read_port(process: subprocess.Popen[str]) -> int:
    selector = selectors.DefaultSelector()
    assert process.stdout is not None
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(START_SECONDS):
        raise RuntimeError(f"supysonic did not start within {START_SECONDS} s")
    line = process.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"supysonic did not start (exit code {process.wait()})")
    return int(line)


def _serve(config_file: str, port: int) -> None:
    from supysonic.config import IniConfig
    from supysonic.web import create_application
    from werkzeug.serving import make_server

    # the port held by the caller (bound, not listening): shared through SO_REUSEPORT
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    server = make_server(
        "127.0.0.1",
        port,
        create_application(IniConfig([config_file])),
        threaded=True,
        fd=listener.fileno(),
    )
    print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))

"""What the benchmarks share: a real `soundspan-host serve` in a temp dir and memory sampling
of processes. The benchmarks import nothing from tests/: their random CLAP models come from
bench/random_clap.py, their Subsonic server from bench/supysonic_server.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

import psutil

from soundspan_host.app import STARTED_POLL_SECONDS
from soundspan_host.database.embedded_access import DATABASE_NAME, SUPERUSER, read_secret
from soundspan_host.database.embedded_placement import CLUSTERS
from soundspan_host.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP

# the installed command, as `make run` and the images start the host: every process the host
# spawns runs this script first (multiprocessing's spawn; `python -m` would skip that step)
HOST_COMMAND = str(Path(sys.executable).with_name("soundspan-host"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def host_environment(work: Path, enabled: set[str], **settings: str) -> dict:
    """The host's environment: folders and free ports under `work`, only `enabled` plugins on.

    Nothing from the caller's SOUNDSPAN_* variables leaks in; `settings` are added as given.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SOUNDSPAN_", "CLAP_", "MUSICNN_"))
    }
    env.update(
        SOUNDSPAN_MUSIC_DIR=str(work / "music"),
        SOUNDSPAN_DATA_DIR=str(work / "data"),
        SOUNDSPAN_EMBEDDED_DATABASE_PORT=str(free_port()),
        SOUNDSPAN_PORT=str(free_port()),
        SOUNDSPAN_LOG_LEVEL="INFO",
        # a bench host on this machine alone: its API asks for no token
        SOUNDSPAN_TRUST_LOCAL_ACCOUNTS="true",
        PYTHONUNBUFFERED="1",
        **settings,
    )
    known = set(BUILTIN_PLUGINS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in sorted(known - enabled):
        env[f"SOUNDSPAN_{name.upper()}__ENABLED"] = "false"
    return env


class MemorySampler(threading.Thread):
    """Samples the host process's RSS every 0.2 s and keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)


@dataclass
class BenchHost:
    """The host subprocess, its log and its ports (taken from its environment)."""

    work: Path
    env: dict
    log_path: Path = field(init=False)
    process: subprocess.Popen | None = None
    memory: MemorySampler | None = None
    workers: ChildMemory | None = None  # with start(sample_workers=True)

    def __post_init__(self) -> None:
        self.log_path = self.work / "host.log"
        self.http_port = int(self.env["SOUNDSPAN_PORT"])
        self.database_port = int(self.env["SOUNDSPAN_EMBEDDED_DATABASE_PORT"])

    def start(self, timeout: float = 180.0, sample_workers: bool = False) -> float:
        """Start the host and wait for /healthz; returns the seconds it took. With
        `sample_workers`, the peak RSS of its worker processes is kept from its launch on."""
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [HOST_COMMAND, "serve"],
                cwd=self.work,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.memory = MemorySampler(self.process.pid)
        self.memory.start()
        if sample_workers:
            self.workers = ChildMemory(self.process.pid)
            self.workers.start()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"the host exited with {code}:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url("/healthz"), timeout=2) as answer,
            ):
                if answer.status == 200:
                    return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"no /healthz within {timeout} s:\n{self.tail()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def wait_for_models(self, timeout: float = 180.0) -> float:
        """Wait until no analyzer is downloading or loading its model; returns the seconds.

        A library loaded before then would be queued for re-analysis once the model is ready
        (its results carry the bench's version), and the analysis would run under the
        measurement."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with urllib.request.urlopen(self.url("/api/analysis/status"), timeout=5) as answer:
                states = {analyzer["state"] for analyzer in json.load(answer)["analyzers"]}
            if not states & {"downloading", "loading"}:
                # the host queues re-analysis for a model that just loaded at its next look
                time.sleep(2 * STARTED_POLL_SECONDS)
                return time.monotonic() - started
            time.sleep(0.2)
        raise RuntimeError(f"the models did not load within {timeout} s:\n{self.tail()}")

    @property
    def database_url(self) -> str:
        """The host's embedded database as its owner reaches it (password from its data dir):
        a bench loads libraries, drops and builds indexes, which the workers' role may not."""
        password = read_secret(Path(self.env["SOUNDSPAN_DATA_DIR"]))
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.database_port}/{DATABASE_NAME}"

    def plugins(self) -> list[dict]:
        with urllib.request.urlopen(self.url("/api/plugins"), timeout=5) as answer:
            return json.load(answer)["plugins"]

    def stop(self, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM, and wait; returns (exit code, seconds taken). Killed if it hangs."""
        if self.process is None:
            return None, 0.0
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"host did not stop in {timeout} s; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait()
        for sampler in (self.memory, self.workers):
            if sampler is not None:
                sampler.stopping.set()
        return self.process.returncode, time.monotonic() - started

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) so far of the host process and of its PostgreSQL."""
        host = psutil.Process(self.process.pid).cpu_times()
        me = psutil.Process().cpu_times()
        return {
            "host": host.user + host.system,
            "postgres": sum(self.database_cpu_seconds().values()),
            "bench": me.user + me.system,
        }

    def database_cpu_seconds(self) -> dict[int, float]:
        """CPU seconds so far of each PostgreSQL process: compare by pid, since backends come
        and go (a total would drop when one exits)."""
        seconds = {}
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            postmaster = psutil.Process(self.postmaster_pid())
            for process in [postmaster, *postmaster.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    seconds[process.pid] = times.user + times.system
        return seconds

    def postmaster_pid(self) -> int:
        """The embedded PostgreSQL's main process (from its postmaster.pid)."""
        pid_file = self.work / "data" / "postgres" / "postmaster.pid"
        return int(pid_file.read_text().split("\n", 1)[0])

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self) -> list[str]:
        """The host log's WARNING, ERROR and traceback lines."""
        if not self.log_path.exists():
            return []
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback")
        ]


class ChildMemory(threading.Thread):
    """Samples the RSS of the worker processes spawned under `pid` (this process by default)
    every 0.1 s; keeps each one's peak."""

    def __init__(self, pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peaks: dict[int, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        me = psutil.Process(self.pid)
        while not self.stopping.wait(0.1):
            with contextlib.suppress(psutil.Error):
                for child in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        # not multiprocessing's resource tracker, which is no worker
                        if "spawn_main" in " ".join(child.cmdline()):
                            self.saw(child)

    def saw(self, child: psutil.Process) -> None:
        """One sample of a spawned process."""
        rss = child.memory_info().rss
        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)


def remove_work(work: Path) -> None:
    """Remove a bench's work dir, and the database a host run as root placed for its data dir
    under /var/lib (soundspan_host.database.embedded_placement): left there, each run's
    database outlives it, and `doctor` lists it as orphaned."""
    placed = (work / "data" / "postgres").resolve().parent
    if placed.parent == CLUSTERS:
        shutil.rmtree(placed, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)

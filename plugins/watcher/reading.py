"""Reading files' facts in worker processes, off the interpreter that runs the event loop.

Reading one file (PyAV's probe and payload hash, mutagen's tags) costs about 1.1 ms of CPU; in
the host's threads all of it ran under the event loop's interpreter lock, which a burst of
10,000 files made the bound (bench/RESULTS.md, issue 16). Worker processes read instead, a
chunk of files per call so that pickling and round trips stay small, and a decoder that
crashes takes down a worker, not the host.

The pool is the analyzers' ModelPool (plugins/shared/pool.py) with the AudioFiles reader as
its "model": unlike the standard library's executor, a worker that dies fails only its own
call, and a fresh one takes its place. A chunk whose worker died is read again; if it dies
again, in halves, until the one file that kills its reader is found and reported unreadable.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from soundspan_hooks import TrackFacts
from soundspan_plugins.shared.pool import ModelPool, WorkerCrashed, WorkersNotStarting
from soundspan_plugins.watcher.files import AudioFiles, NotMusicFile

log = logging.getLogger(__name__)

AUTO_PROCESSES_MAX = 2  # past two, recording what they read on the event loop is the bound
CHUNK_FILES = 50  # files a call reads: ~50 ms of work for one round trip
IDLE_SECONDS = 60  # a quiet library gets its reading processes' memory back (~90 MiB each)
READ_THREADS = 2  # with read_processes = 0: part of a read waits on the disk or in C code


@dataclass(frozen=True)
class Unread:
    """Why a file gave no facts: the count it adds to, and the reason to log."""

    outcome: str  # "skipped" (not a music file), "vanished" or "unreadable"
    reason: str


Read = TrackFacts | Unread


def read_files(files: AudioFiles, relatives: list[str]) -> list[Read]:
    """Each file's facts, or why not: what a worker process runs for a chunk."""
    return [_read_one(files, relative) for relative in relatives]


def _read_one(files: AudioFiles, relative: str) -> Read:
    try:
        return files.read(relative)
    except NotMusicFile as refused:
        return Unread("skipped", refused.strerror)
    except FileNotFoundError:
        return Unread("vanished", "gone before it could be read")
    except OSError as error:
        return Unread("unreadable", str(error))


def auto_processes() -> int:
    """One fewer than the CPUs this process may run on (the event loop keeps one), 1 to
    AUTO_PROCESSES_MAX. The affinity only: a container's CPU quota is the host's to read
    (soundspan_host.cpu_budget), and the cap keeps a wrong guess cheap."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(AUTO_PROCESSES_MAX, (cpus or 1) - 1))


class FileReads:
    """Reads files' facts in `processes` worker processes (0: in the host's own threads).
    `read` is what a worker runs for a chunk; tests hand in one that crashes."""

    def __init__(
        self,
        files: AudioFiles,
        processes: int,
        read: Callable[[AudioFiles, list[str]], list[Read]] = read_files,
    ) -> None:
        self.files = files
        self.processes = processes
        self._read_chunk = read
        self._pool: ModelPool | None = None

    def start(self) -> None:
        """Make the pool; its processes start with the first read and stop after a minute
        without one (a quiet library never pays for them)."""
        if self.processes > 0:
            self._pool = ModelPool(
                "file reading",
                self.processes,
                _reader,
                (self.files,),
                doing="reading files",
                idle_seconds=IDLE_SECONDS,
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def read(self, relatives: list[str]) -> list[Read]:
        """Each file's facts or why not, in the order given."""
        if not relatives:
            return []
        if self._pool is None:
            return await self._in_threads(relatives, READ_THREADS)
        size = min(CHUNK_FILES, math.ceil(len(relatives) / self.processes))
        chunks = [relatives[start : start + size] for start in range(0, len(relatives), size)]
        parts = await asyncio.gather(*(self._in_process(self._pool, chunk) for chunk in chunks))
        return [read for part in parts for read in part]

    async def _in_process(
        self, pool: ModelPool, chunk: list[str], again: bool = False
    ) -> list[Read]:
        try:
            return await pool.run(self._read_chunk, chunk)
        except WorkersNotStarting as error:
            log.error("%s; reading %d files in the host's threads instead", error, len(chunk))
            return await self._in_threads(chunk, 1)
        except WorkerCrashed as crash:
            if again and len(chunk) == 1:  # the caller logs it, as any unreadable file
                return [Unread("unreadable", f"its reading process died twice: {crash}")]
            if not again:  # a kill from outside, most likely: the same chunk again
                log.warning("%s; reading its %d files again", crash, len(chunk))
                return await self._in_process(pool, chunk, again=True)
            # it died twice on these files: one of them kills its reader; find it by halves
            log.warning("%s again; reading its %d files in halves", crash, len(chunk))
            half = len(chunk) // 2
            parts = await asyncio.gather(
                self._in_process(pool, chunk[:half], again=True),
                self._in_process(pool, chunk[half:], again=True),
            )
            return [read for part in parts for read in part]

    async def _in_threads(self, relatives: list[str], threads: int) -> list[Read]:
        size = math.ceil(len(relatives) / threads)
        parts = await asyncio.gather(
            *(
                asyncio.to_thread(self._read_chunk, self.files, relatives[start : start + size])
                for start in range(0, len(relatives), size)
            )
        )
        return [read for part in parts for read in part]


def _reader(files: AudioFiles) -> AudioFiles:
    """A worker process's "model": the reader, as the host configured it."""
    return files

"""Turns file-system notifications into library events, once per settled change.

watchdog's observer runs in its own thread; its events are handed to the event loop, where a
file that was created or written waits until it has been quiet for the debounce time (or was
closed after writing) and has stopped growing, and is then read once. Moves and deletions go
out at once, in the order they happened. Changes that wait together (a burst) are read and
emitted together, up to `batch_files` at a time, so the catalogue can record them together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from soundspan_hooks import LibraryEvent, LibraryEventKind
from soundspan_hooks.waiting import wait_until_set
from soundspan_plugins.watcher.files import AudioFiles
from soundspan_plugins.watcher.reading import FileReads, Unread

log = logging.getLogger(__name__)

CLOSED_SETTLE_SECONDS = 0.1  # a writer closed the file: it is complete, barely wait


@dataclass
class _Pending:
    kind: LibraryEventKind
    due: float
    size: int | None


@dataclass(frozen=True)
class _Change:
    """A settled change waiting to be emitted; all but a deletion are read first."""

    kind: LibraryEventKind
    relative: str
    old: str | None = None  # set for MOVED only


class LibraryWatcher:
    """Watches the music dir and emits library events through `emit`."""

    def __init__(
        self,
        files: AudioFiles,
        reads: FileReads,
        emit: Callable[[list[LibraryEvent]], Awaitable[object]],
        emit_failed: Callable[[], None],
        debounce_seconds: float,
        poll_interval: float,
        batch_files: int,
    ) -> None:
        self.files = files
        self.reads = reads
        self.emit = emit
        self.emit_failed = emit_failed
        self.debounce_seconds = debounce_seconds
        self.poll_interval = poll_interval
        self.batch_files = batch_files
        self._pending: dict[str, _Pending] = {}
        self._ordered: asyncio.Queue[_Change] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._observer: BaseObserver | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._observer = (
            PollingObserver(timeout=self.poll_interval) if self.poll_interval > 0 else Observer()
        )
        self._observer.schedule(
            _ToLoop(loop, self._on_file_system_event), str(self.files.music_dir), recursive=True
        )
        self._overflow_alarm = InotifyOverflowAlarm(loop, self.emit_failed)
        self._overflow_alarm.attach()
        self._observer.start()
        self._tasks = [
            asyncio.create_task(self._settle_pending()),
            asyncio.create_task(self._emit_in_order()),
        ]

    async def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join)
            self._overflow_alarm.detach()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_file_system_event(self, event: FileSystemEvent) -> None:
        now = time.monotonic()
        if isinstance(event, FileMovedEvent):
            self._moved(event.src_path, event.dest_path, now)
        elif isinstance(event, FileDeletedEvent | DirDeletedEvent):
            self._vanished(event.src_path, folder=event.is_directory)
        elif isinstance(event, DirMovedEvent):
            pass  # watchdog follows it with one event per file inside
        elif isinstance(event, FileCreatedEvent):
            self._touched(event.src_path, LibraryEventKind.APPEARED, now + self.debounce_seconds)
        elif isinstance(event, FileModifiedEvent):
            self._touched(event.src_path, LibraryEventKind.CHANGED, now + self.debounce_seconds)
        elif isinstance(event, FileClosedEvent):
            self._touched(event.src_path, LibraryEventKind.CHANGED, now + CLOSED_SETTLE_SECONDS)

    def _touched(self, path: str, kind: LibraryEventKind, due: float) -> None:
        relative = self.files.relative(path)
        if relative is None:
            return
        pending = self._pending.get(relative)
        if pending is None:
            self._pending[relative] = _Pending(kind=kind, due=due, size=None)
        else:
            pending.due = due  # an APPEARED stays APPEARED however often it is written
        self._wake.set()

    def _moved(self, source: str, destination: str, now: float) -> None:
        old = self.files.relative(source)
        new = self.files.relative(destination)
        settling = old is not None and old in self._pending
        if old is not None and (new is None or settling):
            # still being written when moved: its track (if an earlier version was recorded)
            # vanishes here and is found again by content once the new path settles
            self._vanished(source, folder=False)
            old = None
        if new is None:
            return
        if old is None:
            self._touched(destination, LibraryEventKind.APPEARED, now + self.debounce_seconds)
            return
        self._ordered.put_nowait(_Change(LibraryEventKind.MOVED, new, old))

    def _vanished(self, path: str, folder: bool) -> None:
        if folder:
            try:
                relative = str(Path(path).relative_to(self.files.music_dir))
            except ValueError:
                return
            for pending_path in [p for p in self._pending if p.startswith(relative + "/")]:
                del self._pending[pending_path]
        else:
            relative = self.files.relative(path)
            if relative is None:
                return
            self._pending.pop(relative, None)
        self._ordered.put_nowait(_Change(LibraryEventKind.VANISHED, relative))

    async def _settle_pending(self) -> None:
        """Queue each pending file once it is quiet and its size has stopped changing."""
        while True:
            now = time.monotonic()
            for relative, pending in list(self._pending.items()):
                if pending.due > now:
                    continue
                try:
                    size = (self.files.music_dir / relative).stat().st_size
                except OSError:
                    del self._pending[relative]  # gone already; its deletion is on its way
                    continue
                if pending.size is not None and pending.size == size:
                    del self._pending[relative]
                    self._ordered.put_nowait(_Change(pending.kind, relative))
                else:
                    pending.size = size  # check once more that it has stopped growing
                    pending.due = now + CLOSED_SETTLE_SECONDS
            self._wake.clear()
            next_due = min((p.due for p in self._pending.values()), default=None)
            timeout = None if next_due is None else max(next_due - time.monotonic(), 0.01)
            await wait_until_set(self._wake, timeout)

    async def _emit_in_order(self) -> None:
        """Read and emit the changes waiting, up to `batch_files` at a time, in order; the
        next batch is read while the one before is being recorded."""
        recording: asyncio.Task[None] | None = None
        try:
            while True:
                changes = [await self._ordered.get()]
                while len(changes) < self.batch_files and not self._ordered.empty():
                    changes.append(self._ordered.get_nowait())
                events = await self._read(changes)
                if recording is not None:
                    await recording
                recording = asyncio.create_task(self._record(events))
        finally:
            if recording is not None:
                recording.cancel()

    async def _record(self, events: list[LibraryEvent]) -> None:
        try:
            await self.emit(events)
        except Exception:  # a database outage or a bug must not stop the watcher
            log.exception("watcher: could not record a library change; will rescan")
            self.emit_failed()

    async def _read(self, changes: list[_Change]) -> list[LibraryEvent]:
        """The events of these changes, with the facts of each file that is still readable."""
        vanished = LibraryEventKind.VANISHED
        read = iter(await self.reads.read([c.relative for c in changes if c.kind is not vanished]))
        events = []
        for change in changes:
            if change.kind is vanished:
                events.append(LibraryEvent(change.kind, change.relative))
                continue
            facts = next(read)
            if not isinstance(facts, Unread):
                events.append(LibraryEvent(change.kind, change.relative, change.old, facts))
            elif facts.outcome == "skipped":
                log.info("watcher: skipped %s: %s", change.relative, facts.reason)
            elif facts.outcome == "unreadable":
                path = self.files.music_dir / change.relative
                log.warning(
                    "watcher: cannot read %s (%s); skipped until it changes", path, facts.reason
                )
            # vanished: gone again before it could be read; its deletion follows
        return events


class _ToLoop(FileSystemEventHandler):
    """Hands each event from the observer thread to the event loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[FileSystemEvent], None]
    ) -> None:
        self.loop = loop
        self.callback = callback

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.loop.call_soon_threadsafe(self.callback, event)


class InotifyOverflowAlarm(logging.Filter):
    """Asks for a reconcile when the kernel's inotify queue overflowed (a copy of thousands of
    files at once can outrun the observer thread): the events lost then would leave those files
    unrecorded until the next start. watchdog rebuilds its watches but tells no handler; it only
    logs the loss, so this filter on its logger hears that line and calls `lost`."""

    LOGGER = "watchdog.observers.inotify_c"
    MESSAGE = "Inotify queue overflowed"

    def __init__(self, loop: asyncio.AbstractEventLoop, lost: Callable[[], None]) -> None:
        super().__init__()
        self.loop = loop
        self.lost = lost

    def attach(self) -> None:
        logger = logging.getLogger(self.LOGGER)
        if not logger.isEnabledFor(logging.WARNING):  # else the line is never made
            logger.setLevel(logging.WARNING)
        logger.addFilter(self)

    def detach(self) -> None:
        logging.getLogger(self.LOGGER).removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(self.MESSAGE):
            self.loop.call_soon_threadsafe(self.lost)
        return True

"""The reconcile engine: library events from the watcher, and a reconcile that compares the
music dir with the database (at start, on request, and after changes that could not be
recorded) until one gets through."""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from dataclasses import asdict, dataclass

from soundspan_hooks import HostContext, LibraryEvent, LibraryEventKind
from soundspan_hooks.coordinator import RefreshCoordinator
from soundspan_plugins.watcher.files import AudioFiles
from soundspan_plugins.watcher.reading import FileReads, Unread, auto_processes
from soundspan_plugins.watcher.settings import WatcherSettings
from soundspan_plugins.watcher.watching import LibraryWatcher

log = logging.getLogger(__name__)

RESCAN_DELAY_SECONDS = 5.0  # the first retry of a reconcile that failed; doubled each time
RESCAN_DELAY_MAX_SECONDS = 300.0


@dataclass(frozen=True)
class ReconcileCounts:
    """What a reconcile found, file by file."""

    appeared: int
    changed: int
    vanished: int
    unreadable: int  # files or folders that could not be read: their tracks are kept
    skipped: int  # not music files: FIFOs, devices, sockets, links out of the music dir
    unrecordable: int  # files the database refuses (see problems)


class Ingest:
    """The watcher and the reconcile of one host."""

    def __init__(self, host: HostContext, settings: WatcherSettings) -> None:
        self.host = host
        self.batch_files = settings.batch_files
        excluded = [
            folder
            for answer in host.hook.soundspan_library_exclusions(host=host)
            for folder in answer or ()
        ]
        self.files = AudioFiles(
            host.music_dir,
            settings.extensions,
            [*settings.ignore, *excluded],
            settings.follow_symlinks_outside,
        )
        processes = settings.read_processes
        self.reads = FileReads(self.files, auto_processes() if processes == "auto" else processes)
        self.watcher = LibraryWatcher(
            self.files,
            self.reads,
            self.emit,
            self.rescan_soon,
            settings.debounce_seconds,
            settings.poll_interval,
            settings.batch_files,
        )
        # reconciles come on request (at start, from the API, after changes that could not
        # be recorded), one at a time, each retried with a back-off until one gets through
        self.reconciles = RefreshCoordinator(
            f"reconcile of {self.files.music_dir}",
            self.reconcile,
            logger=log,
            interval=None,
            retry=RESCAN_DELAY_SECONDS,
            longest_retry=RESCAN_DELAY_MAX_SECONDS,
            first_refresh=None,
            failed=self._reconcile_failed,
        )
        self.last_scan: ReconcileCounts | None = None
        self.problems: dict[str, str] = {}  # path -> why it cannot be recorded

    async def start(self, reconcile: bool) -> None:
        """Follow the music dir; `reconcile`: compare it with the database now, too."""
        self.reads.start()
        await self.watcher.start()  # watch first: nothing changed during the reconcile is lost
        self.reconciles.start()
        if reconcile:
            self.reconciles.request_refresh()

    def rescan_soon(self) -> None:
        """Changes could not be recorded (the database was away) or were lost (the kernel's
        inotify queue overflowed): reconcile in a moment, and until one succeeds (a back-off
        under way stands)."""
        if self.reconciles.status.failures == 0:
            self.reconciles.request_refresh(RESCAN_DELAY_SECONDS)

    def _reconcile_failed(self, error: Exception, retry_in: float) -> str:
        """The database is away (or a bug): the next reconcile catches up."""
        log.error("reconcile of %s failed", self.files.music_dir, exc_info=error)
        log.warning("reconcile of %s: retrying in %.0f s", self.files.music_dir, retry_in)
        return f"{type(error).__name__}: {error}"

    async def stop(self) -> None:
        try:
            await self.watcher.stop()
            await self.reconciles.stop()
        finally:
            await self.reads.close()

    async def emit(self, events: list[LibraryEvent]) -> list[bool]:
        """Record events in their order; for each, False if the database refuses that file for
        good (the reason is kept in `problems`). Any other failure raises once every event is
        answered: the changes are retried by a rescan."""
        # every call is made now, in order, and the answers awaited together, so that the
        # host's catalogue can record them in one transaction
        answers = [
            self.host.hook.soundspan_library_event(host=self.host, event=event) for event in events
        ]
        outcomes = await asyncio.gather(*map(_answered, answers), return_exceptions=True)
        failure = next(
            (error for error in outcomes if isinstance(error, BaseException)
             and not isinstance(error, ValueError)),
            None,
        )  # fmt: skip
        recorded = []
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, ValueError):
                log.warning("ingest: %s", outcome)
                self.problems[event.path] = str(outcome)
            elif outcome is None:
                self.problems.pop(event.path, None)
            recorded.append(outcome is None)
        if failure is not None:
            raise failure
        return recorded

    @property
    def scanning(self) -> bool:
        """Whether a reconcile is running now."""
        return self.reconciles.status.refreshing

    def scan_in_background(self) -> bool:
        """Start a reconcile now unless one is running (retried with a back-off until it gets
        through, like every reconcile); True if this call started it."""
        if self.scanning:
            return False
        self.reconciles.request_refresh()
        return True

    async def reconcile(self) -> ReconcileCounts:
        """Bring the database in line with the disk (run by `reconciles`, one at a time).
        Raises if the database cannot be reached."""
        on_record = await self.host.tracks_on_record()
        listing = await asyncio.to_thread(self.files.walk)
        # a track out of sight (its folder could not be read) is not gone
        vanished = sorted(
            relative
            for relative in set(on_record) - set(listing.files)
            if not listing.out_of_sight(relative)
        )
        # vanished first: a file moved while we were down is then matched by its content
        await self.emit([LibraryEvent(LibraryEventKind.VANISHED, path) for path in vanished])
        counts = collections.Counter(
            vanished=len(vanished),
            unreadable=len(listing.unreadable),
            skipped=len(listing.skipped),
        )
        differing = [
            (LibraryEventKind.CHANGED if relative in on_record else LibraryEventKind.APPEARED,
             relative)
            for relative, stat in sorted(listing.files.items())
            if on_record.get(relative) != stat
        ]  # fmt: skip
        recording: asyncio.Task[list[str]] | None = None
        try:  # the next batch is read while the one before is being recorded
            for start in range(0, len(differing), self.batch_files):
                read = await self._read(differing[start : start + self.batch_files])
                if recording is not None:
                    counts.update(await recording)
                recording = asyncio.create_task(self._emit_counted(read))
            if recording is not None:
                counts.update(await recording)
        finally:
            if recording is not None:
                recording.cancel()
        self.last_scan = ReconcileCounts(
            **{name: counts[name] for name in ReconcileCounts.__dataclass_fields__}
        )
        log.info("reconcile of %s: %s", self.files.music_dir, asdict(self.last_scan))
        return self.last_scan

    async def _emit_counted(self, read: list[LibraryEvent | str]) -> list[str]:
        """Record the files read; the count each adds to (its kind, or why not)."""
        events = [outcome for outcome in read if isinstance(outcome, LibraryEvent)]
        recorded = iter(await self.emit(events))
        counted = []
        for outcome in read:
            if isinstance(outcome, str):
                counted.append(outcome)
            else:
                counted.append(outcome.kind.value if next(recorded) else "unrecordable")
        return counted

    async def _read(self, changes: list[tuple[LibraryEventKind, str]]) -> list[LibraryEvent | str]:
        """Each file's event with its facts, or the count it adds to instead (why not read)."""
        read = await self.reads.read([relative for _, relative in changes])
        outcomes: list[LibraryEvent | str] = []
        for (kind, relative), facts in zip(changes, read, strict=True):
            if not isinstance(facts, Unread):
                outcomes.append(LibraryEvent(kind, relative, facts=facts))
                continue
            if facts.outcome == "skipped":
                log.info("reconcile: skipped %s: %s", relative, facts.reason)
            elif facts.outcome == "unreadable":
                log.warning("reconcile: cannot read %s (%s); skipped", relative, facts.reason)
            # vanished: gone since the walk; its deletion event follows
            outcomes.append(facts.outcome)
        return outcomes


async def _answered(answers: list[object]) -> None:
    """Await the awaitable answers of one hook call."""
    for answer in answers:
        if inspect.isawaitable(answer):
            await answer

"""Ingest: the library follows the music dir by itself, and a reconcile catches up after downtime.

Emits `soundspan_library_event` for every file that appears, changes, moves or vanishes; it
never talks to an analyzer.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web
from pydantic import Field

from soundspan_hooks import (
    Check,
    HostContext,
    LibraryEvent,
    LibraryEventKind,
    PluginSettings,
    SettingsSection,
    hookimpl,
)
from soundspan_hooks.openapi import operation
from soundspan_plugins.watcher.files import AudioFiles, NotMusicFile, read_in_threads
from soundspan_plugins.watcher.watching import LibraryWatcher

log = logging.getLogger(__name__)

RESCAN_DELAY_SECONDS = 5.0  # the first retry of a reconcile that failed; doubled each time
RESCAN_DELAY_MAX_SECONDS = 300.0
PROBLEMS_SHOWN = 100
INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")

AUDIO_EXTENSIONS = [
    "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac", "alac", "wav", "aif", "aiff",
    "aifc", "wma", "ape", "wv", "mpc", "dsf", "dff",
]  # fmt: skip


class WatcherSettings(PluginSettings):
    extensions: list[str] = Field(AUDIO_EXTENSIONS, description="File extensions that are music.")
    debounce_seconds: float = Field(
        1.0, ge=0, description="Quiet time before a new or rewritten file is read."
    )
    poll_interval: float = Field(
        0.0,
        ge=0,
        description="Seconds between polls of the music dir; 0 uses inotify. Set it for "
        "network shares, where inotify sees nothing.",
    )
    ignore: list[str] = Field(
        [], description="Folders under the music dir to leave alone (e.g. playlists)."
    )
    batch_files: int = Field(
        500,
        ge=1,
        description="Files read and recorded together at most when many arrive at once "
        "(1: one at a time).",
    )
    reconcile_on_start: bool = Field(
        True, description="Compare the disk with the database at start-up."
    )
    follow_symlinks_outside: bool = Field(
        False,
        description="Also index symlinks that point out of the music dir (links inside it "
        "are always followed).",
    )


@dataclass(frozen=True)
class ReconcileCounts:
    appeared: int = 0
    changed: int = 0
    vanished: int = 0
    unreadable: int = 0  # files or folders that could not be read: their tracks are kept
    skipped: int = 0  # not music files: FIFOs, devices, sockets, links out of the music dir
    unrecordable: int = 0  # files the database refuses (see problems)


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
        self.watcher = LibraryWatcher(
            self.files,
            self.emit,
            self.rescan_soon,
            settings.debounce_seconds,
            settings.poll_interval,
            settings.batch_files,
        )
        self._reconciling = asyncio.Lock()
        self._scan_task: asyncio.Task[ReconcileCounts | None] | None = None
        self.last_scan: ReconcileCounts | None = None
        self._rescan_task: asyncio.Task[None] | None = None
        self.problems: dict[str, str] = {}  # path -> why it cannot be recorded

    def rescan_soon(self) -> None:
        """Changes could not be recorded (the database was away) or were lost (the kernel's
        inotify queue overflowed): reconcile until one succeeds."""
        if self._rescan_task is None or self._rescan_task.done():
            self._rescan_task = asyncio.create_task(self._rescan_until_recorded())

    async def _rescan_until_recorded(self, first_delay: float = RESCAN_DELAY_SECONDS) -> None:
        """Reconcile until one gets through, waiting longer after each failure."""
        delay = first_delay
        while True:
            await asyncio.sleep(delay)
            if await self.reconcile() is not None:
                return
            delay = min(max(delay * 2, RESCAN_DELAY_SECONDS), RESCAN_DELAY_MAX_SECONDS)
            log.warning("reconcile of %s: retrying in %.0f s", self.files.music_dir, delay)

    async def stop(self) -> None:
        await self.watcher.stop()
        tasks = [task for task in (self._scan_task, self._rescan_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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

    def scan_in_background(self, until_recorded: bool = False) -> bool:
        """Start a reconcile unless one is running; True if this call started it.

        `until_recorded`: retry it with back-off until it gets through (at start-up).
        """
        if self._scan_task is not None and not self._scan_task.done():
            return False
        scan = self._rescan_until_recorded(0.0) if until_recorded else self.reconcile()
        self._scan_task = asyncio.create_task(scan)
        return True

    async def reconcile(self) -> ReconcileCounts | None:
        """Bring the database in line with the disk; None if the database could not be reached."""
        try:
            return await self._reconcile()
        except Exception:  # the database is away: the next rescan catches up
            log.exception("reconcile of %s failed", self.files.music_dir)
            return None

    async def _reconcile(self) -> ReconcileCounts:
        async with self._reconciling:
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
                    read = await read_in_threads(
                        self._read, differing[start : start + self.batch_files]
                    )
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

    def _read(self, changes: list[tuple[LibraryEventKind, str]]) -> list[LibraryEvent | str]:
        """Each file's event with its facts, or the count it adds to instead (why not read)."""
        outcomes: list[LibraryEvent | str] = []
        for kind, relative in changes:
            try:
                outcomes.append(LibraryEvent(kind, relative, facts=self.files.read(relative)))
            except NotMusicFile as refused:
                log.info("reconcile: skipped %s: %s", relative, refused.strerror)
                outcomes.append("skipped")
            except FileNotFoundError:
                outcomes.append("vanished")  # gone since the walk; its deletion event follows
            except OSError as error:
                log.warning("reconcile: cannot read %s (%s); skipped", relative, error)
                outcomes.append("unreadable")
        return outcomes

    @property
    def scanning(self) -> bool:
        return self._reconciling.locked() or (
            self._scan_task is not None and not self._scan_task.done()
        )


async def _answered(answers: list[object]) -> None:
    """Await the awaitable answers of one hook call."""
    for answer in answers:
        if inspect.isawaitable(answer):
            await answer


INGEST = web.AppKey("soundspan_ingest", Ingest)
routes = web.RouteTableDef()


@routes.post("/api/library/scan")
async def scan(request: web.Request) -> web.Response:
    """Compare the music dir with the database now, in the background."""
    started = _ingest(request).scan_in_background()
    return web.json_response({"scan": "started" if started else "already running"}, status=202)


@routes.get("/api/library/scan")
async def scan_state(request: web.Request) -> web.Response:
    """Whether a scan is running, and what the last one found."""
    ingest = _ingest(request)
    last = asdict(ingest.last_scan) if ingest.last_scan is not None else None
    problems = [
        {"path": path, "reason": reason}
        for path, reason in sorted(ingest.problems.items())[:PROBLEMS_SHOWN]
    ]
    return web.json_response({"scanning": ingest.scanning, "last": last, "problems": problems})


def _ingest(request: web.Request) -> Ingest:
    if INGEST not in request.app:  # a host for one CLI command: the running host scans
        raise web.HTTPServiceUnavailable(reason="this host answers one command; it never scans")
    return request.app[INGEST]


@hookimpl
def soundspan_settings() -> SettingsSection:
    return SettingsSection("watcher", WatcherSettings)


@hookimpl
def soundspan_doctor(sections, music_dir, data_dir) -> list[Check]:
    """inotify needs one watch per folder; a big library can pass the system's limit."""
    if sections["watcher"].poll_interval > 0 or not music_dir.is_dir():
        return []
    try:
        limit = int(INOTIFY_WATCHES.read_text())
    except OSError:
        return []
    folders = sum(1 for _ in os.walk(music_dir))
    if folders > limit * 0.9:
        return [
            Check(
                "inotify",
                "warn",
                f"{folders} folders to watch; the system allows {limit} inotify watches",
                "raise fs.inotify.max_user_watches (sysctl), or set [watcher] poll_interval",
            )
        ]
    return [Check("inotify", "ok", f"{folders} folders to watch of {limit} allowed")]


@hookimpl
def soundspan_openapi() -> dict:
    scan_answer = {
        "type": "object",
        "required": ["scan"],
        "properties": {"scan": {"enum": ["started", "already running"]}},
    }
    counts = {
        "type": "object",
        "required": list(ReconcileCounts.__dataclass_fields__),
        "properties": {name: {"type": "integer"} for name in ReconcileCounts.__dataclass_fields__},
    }
    problem = {
        "type": "object",
        "required": ["path", "reason"],
        "properties": {"path": {"type": "string"}, "reason": {"type": "string"}},
    }
    scan_state_answer = {
        "type": "object",
        "required": ["scanning", "last", "problems"],
        "properties": {
            "scanning": {"type": "boolean"},
            "last": {"anyOf": [counts, {"type": "null"}]},
            "problems": {
                "type": "array",
                "items": problem,
                "description": f"files the database cannot record (the first {PROBLEMS_SHOWN})",
            },
        },
    }
    return {
        "paths": {
            "/api/library/scan": {
                "post": operation(
                    "Compare the music dir with the database now", {202: scan_answer}
                ),
                "get": operation(
                    "Whether a scan is running; the last one's counts and problems",
                    {200: scan_state_answer},
                ),
            }
        }
    }


@hookimpl
def soundspan_routes() -> web.RouteTableDef:
    return routes


@hookimpl
def soundspan_lifespan(host: HostContext):
    return _watching(host)


@asynccontextmanager
async def _watching(host: HostContext) -> AsyncIterator[None]:
    if host.one_command:  # the running host follows the music dir, and scans on request
        yield
        return
    settings = host.section("watcher")
    assert isinstance(settings, WatcherSettings)
    ingest = Ingest(host, settings)
    host.app[INGEST] = ingest
    await ingest.watcher.start()  # watch first: nothing changed during the reconcile is lost
    if settings.reconcile_on_start:
        ingest.scan_in_background(until_recorded=True)
    try:
        yield
    finally:
        await ingest.stop()


@hookimpl
def soundspan_commands(cli) -> None:
    from soundspan_plugins.watcher.commands import add_commands  # typer and rich: CLI only

    add_commands(cli)

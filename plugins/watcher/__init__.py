"""Ingest: the library follows the music dir by itself, and a reconcile catches up after downtime.

Emits `soundspan_library_event` for every file that appears, changes, moves or vanishes; it
never talks to an analyzer.
"""

from __future__ import annotations

import asyncio
import collections
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
from soundspan_plugins.watcher.files import AudioFiles, NotMusicFile
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
        )
        self._reconciling = asyncio.Lock()
        self._scan_task: asyncio.Task[ReconcileCounts | None] | None = None
        self.last_scan: ReconcileCounts | None = None
        self._rescan_task: asyncio.Task[None] | None = None
        self.problems: dict[str, str] = {}  # path -> why it cannot be recorded

    def rescan_soon(self) -> None:
        """A change could not be recorded (the database was away): reconcile until one succeeds."""
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

    async def emit(self, event: LibraryEvent) -> bool:
        """Record an event; False if the database refuses this file for good (the reason is
        kept in `problems`). Any other failure raises: the change is retried by a rescan."""
        try:
            await self.host.call("soundspan_library_event", host=self.host, event=event)
        except ValueError as refused:
            log.warning("ingest: %s", refused)
            self.problems[event.path] = str(refused)
            return False
        self.problems.pop(event.path, None)
        return True

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
            for relative in vanished:
                await self.emit(LibraryEvent(LibraryEventKind.VANISHED, relative))
            counts = collections.Counter(
                vanished=len(vanished),
                unreadable=len(listing.unreadable),
                skipped=len(listing.skipped),
            )
            for relative, stat in sorted(listing.files.items()):
                if on_record.get(relative) == stat:
                    continue
                kind = (
                    LibraryEventKind.CHANGED if relative in on_record else LibraryEventKind.APPEARED
                )
                counts[await self._read_and_emit(kind, relative)] += 1
            self.last_scan = ReconcileCounts(
                **{name: counts[name] for name in ReconcileCounts.__dataclass_fields__}
            )
        log.info("reconcile of %s: %s", self.files.music_dir, asdict(self.last_scan))
        return self.last_scan

    async def _read_and_emit(self, kind: LibraryEventKind, relative: str) -> str:
        """Read one file and record it; the count it adds to (its kind, or why not)."""
        try:
            facts = await asyncio.to_thread(self.files.read, relative)
        except NotMusicFile as refused:
            log.info("reconcile: skipped %s: %s", relative, refused.strerror)
            return "skipped"
        except FileNotFoundError:
            return "vanished"  # gone since the walk; its deletion event follows
        except OSError as error:
            log.warning("reconcile: cannot read %s (%s); skipped", relative, error)
            return "unreadable"
        if not await self.emit(LibraryEvent(kind, relative, facts=facts)):
            return "unrecordable"
        return "appeared" if kind is LibraryEventKind.APPEARED else "changed"

    @property
    def scanning(self) -> bool:
        return self._reconciling.locked() or (
            self._scan_task is not None and not self._scan_task.done()
        )


INGEST = web.AppKey("soundspan_ingest", Ingest)
routes = web.RouteTableDef()


@routes.post("/api/library/scan")
async def scan(request: web.Request) -> web.Response:
    """Compare the music dir with the database now, in the background."""
    started = request.app[INGEST].scan_in_background()
    return web.json_response({"scan": "started" if started else "already running"}, status=202)


@routes.get("/api/library/scan")
async def scan_state(request: web.Request) -> web.Response:
    """Whether a scan is running, and what the last one found."""
    ingest = request.app[INGEST]
    last = asdict(ingest.last_scan) if ingest.last_scan is not None else None
    problems = [
        {"path": path, "reason": reason}
        for path, reason in sorted(ingest.problems.items())[:PROBLEMS_SHOWN]
    ]
    return web.json_response({"scanning": ingest.scanning, "last": last, "problems": problems})


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

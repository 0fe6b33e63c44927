"""Keeps the match table fresh: one coordinator with its schedule, its retry and its last good
state (the shape of Home Assistant's DataUpdateCoordinator).

A refresh lists the server's songs, then looks again only at tracks that are new or changed
since their match, matched tracks whose song changed or vanished, and unmatched tracks when
the server's listing changed. It writes in one transaction after the whole listing was read,
so a server that fails half way leaves the last good matches as they were; the status says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_plugins.subsonic.background import KeptRunning, back_off
from soundspan_plugins.subsonic.client import SubsonicClient, SubsonicError, shown
from soundspan_plugins.subsonic.matching import OurTrack, PathMapping, ServerSong, SongIndex

log = logging.getLogger(__name__)


@dataclass
class RefreshStatus:
    """How the refreshes of something kept fresh went: ok, failed (and why), or never yet."""

    last_success: datetime | None = None
    last_attempt: datetime | None = None
    error: str | None = None  # why the last attempt failed; None after a success
    failures: int = 0  # in a row
    next_attempt: datetime | None = None
    refreshing: bool = False

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        return "ok" if self.last_success is not None else "never"

    def shown(self) -> dict[str, object]:
        """What the status routes show of it."""
        return {
            "state": self.state,
            "refreshing": self.refreshing,
            "error": self.error,
            "last_success": self.last_success,
            "last_attempt": self.last_attempt,
            "next_attempt": self.next_attempt,
        }


@dataclass
class MatchRefreshStatus(RefreshStatus):
    """What the last match refreshes did, for /api/subsonic/status."""

    songs_on_server: int | None = None
    tracks_checked: int = 0  # looked at again by the last successful refresh


@dataclass(frozen=True)
class Schedule:
    refresh_seconds: float  # between refreshes that succeed
    retry_seconds: float  # after a failure; doubles up to refresh_seconds
    change_delay_seconds: float  # quiet time after a library change before a refresh
    scan_check_seconds: float = 0.0  # between getScanStatus calls; 0: never


class MatchCoordinator:
    """Refreshes the matches on its schedule, soon after library changes, after the server
    says it scanned, on request, and soon again while tracks just found have no song (the
    server may not have scanned them yet)."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: SubsonicClient,
        mapping: PathMapping,
        schedule: Schedule,
        first_refresh_delay: float,
        matches_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.matches_changed = matches_changed  # fresh playlists may now find more songs
        self.client = client
        self.mapping = mapping
        self.schedule = schedule
        self.status = MatchRefreshStatus()
        self._due = time.monotonic() + first_refresh_delay
        self._wake = asyncio.Event()
        self.task = KeptRunning("match refresher", self._run)
        self._listing_digest: str | None = None  # the server's listing at the last refresh
        self._unmatched_looks = 0  # new looks since a refresh found tracks without a song
        self._last_scan: dict[str, object] | None = None  # the server's getScanStatus
        self._next_scan_check = (
            time.monotonic() + first_refresh_delay if schedule.scan_check_seconds else math.inf
        )

    def start(self) -> None:
        self.task.start()

    async def stop(self) -> None:
        await self.task.stop()

    def library_changed(self) -> None:
        """Refresh once the library has been quiet a moment; a back-off after failures stands."""
        if self.status.failures == 0:
            self._reschedule(self.schedule.change_delay_seconds, sooner_only=True)

    def refresh_soon(self) -> None:
        """Refresh now (an explicit request cuts a back-off short)."""
        self._reschedule(0.0, sooner_only=True)

    def _reschedule(self, delay: float, sooner_only: bool = False) -> None:
        due = time.monotonic() + delay
        self._due = min(self._due, due) if sooner_only else due
        self.status.next_attempt = datetime.fromtimestamp(
            time.time() + self._due - time.monotonic(), UTC
        )
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._until_due()
            # not due while it refreshes: a change meanwhile asks for another refresh by
            # lowering this, and that request stands
            self._due = math.inf
            try:
                newly_unmatched = await self.refresh()
            except Exception as error:  # the server or the database is away: retry later
                if not isinstance(error, SubsonicError):
                    log.exception("subsonic: refresh failed")
                self._failed(shown(str(error)) or type(error).__name__)
            else:
                self._reschedule(self._next_delay(newly_unmatched), sooner_only=True)

    def _next_delay(self, newly_unmatched: int) -> float:
        """Tracks just found without a song may be files the server has not scanned yet: look
        again after retry_seconds, then less and less often, back to refresh_seconds."""
        if newly_unmatched:
            self._unmatched_looks = 1
        elif self._unmatched_looks:
            self._unmatched_looks += 1
        if not self._unmatched_looks:
            return self.schedule.refresh_seconds
        schedule = self.schedule
        delay = back_off(schedule.retry_seconds, self._unmatched_looks, schedule.refresh_seconds)
        if delay >= schedule.refresh_seconds:
            self._unmatched_looks = 0
        return delay

    async def _until_due(self) -> None:
        while (wait := self._due - time.monotonic()) > 0:
            self._wake.clear()
            until_scan_check = max(self._next_scan_check - time.monotonic(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, until_scan_check))
            if time.monotonic() >= self._next_scan_check:
                await self._check_for_a_scan()

    async def _check_for_a_scan(self) -> None:
        """Match again once the server says a scan ended (getScanStatus changed since the last
        look, and it is not scanning now). A server that cannot say is not asked again."""
        self._next_scan_check = time.monotonic() + self.schedule.scan_check_seconds
        try:
            scan = await self.client.scan_status()
        except SubsonicError as error:
            self._next_scan_check = math.inf
            log.info("subsonic: the server does not say when it scans (%s); matches refresh"
                     " on their schedule", error)  # fmt: skip
            return
        seen, self._last_scan = self._last_scan, scan
        if seen is not None and scan != seen and not scan.get("scanning"):
            log.info("subsonic: the server scanned its library; matching again")
            self._reschedule(0.0, sooner_only=True)

    def _failed(self, reason: str) -> None:
        status = self.status
        status.failures += 1
        status.error = reason
        delay = back_off(
            self.schedule.retry_seconds, status.failures, self.schedule.refresh_seconds
        )
        self._reschedule(delay)
        log.warning("subsonic: refresh failed (%s); the last good matches stay; retry in %.0f s",
                    reason, delay)  # fmt: skip

    async def refresh(self) -> int:
        """One refresh; how many tracks it looked at have no song. Raises SubsonicError."""
        status = self.status
        status.last_attempt = datetime.now(UTC)
        status.refreshing = True
        try:
            songs = [ServerSong.from_child(child) async for child in self.client.songs()]
            index = SongIndex(songs, self.mapping)
            checked, unmatched = await self._store(index)
        finally:
            status.refreshing = False
        self._listing_digest = index.digest
        status.last_success, status.error, status.failures = datetime.now(UTC), None, 0
        status.songs_on_server, status.tracks_checked = len(songs), checked
        log.info("subsonic: %d server songs; %d tracks looked at again", len(songs), checked)
        if checked:
            self.matches_changed()
        return unmatched

    async def _store(self, index: SongIndex) -> tuple[int, int]:
        """Write the matches of the tracks that need a look; how many, and how many of them
        have no song."""
        listing_changed = index.digest != self._listing_digest
        async with self.engine.begin() as connection:
            rows = await connection.execute(
                text(
                    "SELECT t.id, t.path, t.title, t.artist, t.album_artist, t.album, t.duration,"
                    " t.musicbrainz_recording_id, t.updated_at, m.track_updated_at, m.song_id,"
                    " m.song_signature FROM library_tracks t LEFT JOIN subsonic_matches m"
                    " ON m.track_id = t.id"
                )
            )
            changed = []
            for row in rows:
                if not _needs_a_look(row, index, listing_changed):
                    continue
                track = OurTrack(
                    row.id, row.path, row.title, row.artist, row.album_artist, row.album,
                    row.duration, row.musicbrainz_recording_id,
                )  # fmt: skip
                match = index.match(track)
                changed.append(
                    {
                        "track_id": row.id,
                        "song_id": match.song.id if match.song else None,
                        "method": match.method,
                        "reason": match.reason,
                        "track_updated_at": row.updated_at,
                        "song_signature": match.song.signature if match.song else None,
                    }
                )
            if changed:
                await connection.execute(
                    text(
                        "INSERT INTO subsonic_matches (track_id, song_id, method, reason,"
                        " track_updated_at, song_signature) VALUES (:track_id, :song_id,"
                        " :method, :reason, :track_updated_at, :song_signature)"
                        " ON CONFLICT (track_id) DO UPDATE SET song_id = excluded.song_id,"
                        " method = excluded.method, reason = excluded.reason,"
                        " track_updated_at = excluded.track_updated_at,"
                        " song_signature = excluded.song_signature, checked_at = now()"
                    ),
                    changed,
                )
        return len(changed), sum(row["song_id"] is None for row in changed)


def _needs_a_look(row, index: SongIndex, listing_changed: bool) -> bool:
    if row.track_updated_at is None or row.track_updated_at != row.updated_at:
        return True  # new, or changed since its match
    if row.song_id is None:
        return listing_changed  # unmatched: new songs on the server may be it
    song = index.by_id.get(row.song_id)
    return song is None or song.signature != row.song_signature

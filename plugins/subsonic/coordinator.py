"""Keeps the match table fresh: one coordinator with its schedule, its retry and its last good
state (soundspan_hooks' RefreshCoordinator, the shape of Home Assistant's
DataUpdateCoordinator).

A refresh lists the server's songs, then looks again only at tracks that are new or changed
since their match, matched tracks whose song changed or vanished, and unmatched tracks when
the server's listing changed. It writes in one transaction after the whole listing was read,
so a server that fails half way leaves the last good matches as they were; the status says why.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks.coordinator import RefreshCoordinator, RefreshStatus, back_off
from soundspan_plugins.subsonic.client import SubsonicClient, SubsonicError, shown
from soundspan_plugins.subsonic.matching import OurTrack, PathMapping, ServerSong, SongIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchRefresh:
    """What the last successful match refresh found, for /api/subsonic/status."""

    songs_on_server: int
    tracks_checked: int  # looked at again
    unmatched: int  # of those, how many have no song


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
        self.refresher = RefreshCoordinator(
            "match refresher",
            self.refresh,
            logger=log,
            interval=schedule.refresh_seconds,
            retry=schedule.retry_seconds,
            first_refresh=first_refresh_delay,
            failed=self._failed,
            clean=shown,
        )
        # the server's word that it scanned: its own small schedule beside the refreshes
        self.scan_watch = (
            RefreshCoordinator(
                "scan watch",
                self._check_for_a_scan,
                logger=log,
                interval=schedule.scan_check_seconds,
                retry=schedule.scan_check_seconds,
                first_refresh=first_refresh_delay,
                clean=shown,
            )
            if schedule.scan_check_seconds
            else None
        )
        self._listing_digest: str | None = None  # the server's listing at the last refresh
        self._unmatched_looks = 0  # new looks since a refresh found tracks without a song
        self._last_scan: dict[str, object] | None = None  # the server's getScanStatus
        self._last_change = -math.inf  # time.monotonic() of the last library change

    @property
    def status(self) -> RefreshStatus:
        return self.refresher.status

    @property
    def last_refresh(self) -> MatchRefresh | None:
        """What the last successful refresh found; it stays while refreshes fail."""
        return self.refresher.data

    def _coordinators(self) -> list[RefreshCoordinator]:
        return [self.refresher] + ([self.scan_watch] if self.scan_watch else [])

    def start(self) -> None:
        for coordinator in self._coordinators():
            coordinator.start()

    async def stop(self) -> None:
        for coordinator in self._coordinators():
            await coordinator.stop()

    def background(self) -> dict[str, object]:
        """The refresher's task (and the scan watch's) for the status: crashes, and the last."""
        return together("match refresher", self._coordinators())

    def library_changed(self) -> None:
        """Refresh once the library has been quiet a moment; a back-off after failures stands."""
        self._last_change = time.monotonic()
        if self.status.failures == 0:
            self.refresher.request_refresh(self.schedule.change_delay_seconds)

    def refresh_soon(self) -> None:
        """Refresh now (an explicit request cuts a back-off short)."""
        self.refresher.request_refresh()

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

    async def _check_for_a_scan(self) -> None:
        """Match again once the server says a scan ended (getScanStatus changed since the last
        look, and it is not scanning now). A server that cannot say is not asked again."""
        try:
            scan = await self.client.scan_status()
        except SubsonicError as error:
            assert self.scan_watch is not None
            self.scan_watch.interval = None
            log.info("subsonic: the server does not say when it scans (%s); matches refresh"
                     " on their schedule", error)  # fmt: skip
            return
        seen, self._last_scan = self._last_scan, scan
        if seen is not None and scan != seen and not scan.get("scanning"):
            log.info("subsonic: the server scanned its library; matching again")
            self.refresher.request_refresh()

    def _failed(self, error: Exception, retry_in: float) -> str:
        if not isinstance(error, SubsonicError):  # the database, or ours to fix
            log.error("subsonic: refresh failed", exc_info=error)
        reason = shown(str(error)) or type(error).__name__
        log.warning("subsonic: refresh failed (%s); the last good matches stay; retry in %.0f s",
                    reason, retry_in)  # fmt: skip
        return reason

    async def refresh(self) -> MatchRefresh:
        """One refresh: what it found. Raises SubsonicError, or the database's error."""
        since_change = time.monotonic() - self._last_change
        songs = [ServerSong.from_child(child) async for child in self.client.songs()]
        index = SongIndex(songs, self.mapping)
        checked, unmatched = await self._store(index)
        self._listing_digest = index.digest
        log.info("subsonic: %d server songs; %d tracks looked at again", len(songs), checked)
        if checked:
            self.matches_changed()
        # tracks just found without a song: look again sooner than the schedule says
        if (delay := self._next_delay(unmatched)) < self.schedule.refresh_seconds:
            self.refresher.request_refresh(delay)
        # a change is told before the host commits it: one that came less than the change
        # delay before this refresh began (it was due already) may be missing from what it
        # read, so look again once the delay has passed
        if (wait := self.schedule.change_delay_seconds - since_change) > 0:
            self.refresher.request_refresh(wait)
        return MatchRefresh(len(songs), checked, unmatched)

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


def together(name: str, coordinators: list[RefreshCoordinator]) -> dict[str, object]:
    """Several coordinators' tasks shown as one background task: their crashes, the last."""
    tasks = [coordinator.task for coordinator in coordinators]
    crashes = [task.last_crash for task in tasks if task.last_crash is not None]
    return {
        "name": name,
        "crashes": sum(task.crashes for task in tasks),
        "last_crash": crashes[-1] if crashes else None,
    }

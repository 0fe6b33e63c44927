"""Keeps the match table fresh: one RefreshCoordinator (the shape of Home Assistant's
DataUpdateCoordinator) with its schedule, its retry and its last good state.

A refresh lists every audio item, then replaces the matches in one transaction, so a server
that fails half way (or is away) leaves the last good matches as they were; the status says
why, and one WARNING line a new reason. Where a refresh finds new items without a track or
tracks without an item (a file Jellyfin or we have not scanned yet, or a library change not
yet committed when the refresh read it), it looks again soon: after retry_seconds, then less
and less often, back to refresh_seconds.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks.coordinator import RefreshCoordinator, RefreshStatus, back_off
from soundspan_plugins.jellyfin.client import JellyfinClient, JellyfinError
from soundspan_plugins.jellyfin.matching import JellyfinItem, Matching, PathMapping, match_items

log = logging.getLogger(__name__)


class MatchCoordinator:
    """Refreshes the matches on its schedule, soon after library changes, and on request."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: JellyfinClient,
        mapping: PathMapping | None,  # None: learnt at each refresh
        *,
        refresh_seconds: float,
        retry_seconds: float,
        change_delay_seconds: float,
    ) -> None:
        self.engine = engine
        self.client = client
        self.mapping = mapping
        self.change_delay_seconds = change_delay_seconds
        self.refresh_seconds, self.retry_seconds = refresh_seconds, retry_seconds
        self._unmatched: frozenset[str] = frozenset()  # at the last refresh: items and tracks
        self._soon_looks = 0  # looks again since a refresh found something newly unmatched
        self.refresher: RefreshCoordinator[Matching] = RefreshCoordinator(
            "jellyfin match refresher",
            self.refresh,
            logger=log,
            interval=refresh_seconds,
            retry=retry_seconds,
            # a host started for one CLI command ends before this: it never calls the server
            first_refresh=change_delay_seconds,
            failed=self._failed,
        )

    @property
    def status(self) -> RefreshStatus:
        return self.refresher.status

    @property
    def last_refresh(self) -> Matching | None:
        """What the last successful refresh found; it stays while refreshes fail."""
        return self.refresher.data

    def start(self) -> None:
        self.refresher.start()

    async def stop(self) -> None:
        await self.refresher.stop()

    def library_changed(self) -> None:
        """Refresh once the library has been quiet a moment; a back-off after failures stands."""
        if self.status.failures == 0:
            self.refresher.request_refresh(self.change_delay_seconds)

    def refresh_soon(self) -> None:
        self.refresher.request_refresh()

    def _failed(self, error: Exception, retry_in: float) -> str:
        if not isinstance(error, JellyfinError):  # the database, or ours to fix
            log.error("jellyfin: refresh failed", exc_info=error)
        reason = str(error) or type(error).__name__
        # one WARNING line per reason; the same reason again, while it lasts, more quietly
        level = logging.INFO if reason == self.status.error else logging.WARNING
        log.log(level, "jellyfin: refresh failed (%s); the last good matches stay; retry in"
                " %.0f s", reason, retry_in)  # fmt: skip
        return reason

    async def refresh(self) -> Matching:
        """One refresh: what it found. Raises JellyfinError, or the database's error."""
        items = [JellyfinItem.from_json(item) async for item in self.client.audio_items()]
        async with self.engine.begin() as connection:
            tracks = {
                row.path: row.id
                for row in await connection.execute(text("SELECT id, path FROM library_tracks"))
            }
            matching = match_items(items, tracks, self.mapping)
            await connection.execute(text("DELETE FROM jellyfin_matches"))
            if matching.rows:
                await connection.execute(
                    text(
                        "INSERT INTO jellyfin_matches (item_id, track_id, artist_id, artist_name,"
                        " path) VALUES (:item_id, :track_id, :artist_id, :artist_name, :path)"
                    ),
                    matching.rows,
                )
        matched_tracks = {row["track_id"] for row in matching.rows}
        unmatched_now = matching.unmatched_items | {
            f"track:{track}" for track in tracks.values() if track not in matched_tracks
        }
        newly, self._unmatched = bool(unmatched_now - self._unmatched), unmatched_now
        if (delay := self._next_delay(newly)) < self.refresh_seconds:
            self.refresher.request_refresh(delay)
        unmatched = len(items) - len(matching.rows)
        log.info("jellyfin: %d audio items, %d matched to our tracks, %d not%s", len(items),
                 len(matching.rows), unmatched,
                 f" (e.g. {matching.example_unmatched})" if unmatched else "")  # fmt: skip
        return matching

    def _next_delay(self, newly_unmatched: bool) -> float:
        """After retry_seconds where something is newly unmatched, then doubling, back to
        refresh_seconds."""
        if newly_unmatched:
            self._soon_looks = 1
        elif self._soon_looks:
            self._soon_looks += 1
        if not self._soon_looks:
            return self.refresh_seconds
        delay = back_off(self.retry_seconds, self._soon_looks, self.refresh_seconds)
        if delay >= self.refresh_seconds:
            self._soon_looks = 0
        return delay

"""Keeps a plugin's match table (`<plugin>_matches`: the server's item id, our track, the
item's artist) fresh, for the plugins that match a music server by path (jellyfin, lyrion):
one RefreshCoordinator (the shape of Home Assistant's DataUpdateCoordinator) with its
schedule, its retry and its last good state.

A refresh lists every item, then replaces the matches in one transaction, so a server that
fails half way (or is away) leaves the last good matches as they were; the status says why,
and one WARNING line a new reason. Where a refresh finds new items without a track or tracks
without an item (a file the server or we have not scanned yet, or a library change not yet
committed when the refresh read it), it looks again soon: after retry_seconds, then less and
less often, back to refresh_seconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks.coordinator import RefreshCoordinator, RefreshStatus, back_off
from soundspan_plugins.shared.server_http import ServerError
from soundspan_plugins.shared.server_paths import Matching, ServerItem, match_items
from soundspan_plugins.shared.server_settings import MatchedServerSettings


def text_path(row) -> str:
    """Our track's path as text (paths a server reports as text are matched on it)."""
    return row.path


def byte_path(row) -> str:
    """Our track's path from its file name's bytes, undecodable bytes kept as the surrogates
    `os.fsdecode` makes, for a server that reports the bytes themselves (a file:// URL)."""
    return os.fsdecode(row.raw_path)


class MatchCoordinator:
    """Refreshes one plugin's matches on its schedule, soon after library changes, and on
    request; `name` is the plugin's, in logs and in the table's name."""

    def __init__(
        self,
        name: str,
        engine: AsyncEngine,
        listing: Callable[[], AsyncIterator[ServerItem]],
        settings: MatchedServerSettings,
        *,
        logger: logging.Logger,
        our_path: Callable[[object], str] = text_path,
    ) -> None:
        self.name = name
        self.table = f"{name}_matches"
        self.engine = engine
        self.listing = listing
        self.mapping = settings.mapping()  # None: learnt at each refresh
        self.our_path = our_path
        self.logger = logger
        self.change_delay_seconds = settings.change_delay_seconds
        self.refresh_seconds = settings.refresh_seconds
        self.retry_seconds = settings.retry_seconds
        self._unmatched: frozenset[str] = frozenset()  # at the last refresh: items and tracks
        self._soon_looks = 0  # looks again since a refresh found something newly unmatched
        self.refresher: RefreshCoordinator[Matching] = RefreshCoordinator(
            f"{name} match refresher",
            self.refresh,
            logger=logger,
            interval=self.refresh_seconds,
            retry=self.retry_seconds,
            # a host started for one CLI command ends before this: it never calls the server
            first_refresh=self.change_delay_seconds,
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
        if not isinstance(error, ServerError):  # the database, or ours to fix
            self.logger.error("%s: refresh failed", self.name, exc_info=error)
        reason = str(error) or type(error).__name__
        # one WARNING line per reason; the same reason again, while it lasts, more quietly
        level = logging.INFO if reason == self.status.error else logging.WARNING
        self.logger.log(level, "%s: refresh failed (%s); the last good matches stay; retry in"
                        " %.0f s", self.name, reason, retry_in)  # fmt: skip
        return reason

    async def refresh(self) -> Matching:
        """One refresh: what it found. Raises the server's error, or the database's."""
        items = [item async for item in self.listing()]
        async with self.engine.begin() as connection:
            rows = await connection.execute(text("SELECT id, path, raw_path FROM library_tracks"))
            tracks = {self.our_path(row): row.id for row in rows}
            matching = match_items(items, tracks, self.mapping)
            await connection.execute(text(f"DELETE FROM {self.table}"))
            if matching.rows:
                await connection.execute(
                    text(
                        f"INSERT INTO {self.table} (item_id, track_id, artist_id, artist_name,"
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
        self.logger.info("%s: %d items on the server, %d matched to our tracks, %d not%s",
                         self.name, len(items), len(matching.rows), unmatched,
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


@asynccontextmanager
async def kept_fresh(
    app: web.Application, key: web.AppKey[MatchCoordinator], coordinator: MatchCoordinator
) -> AsyncIterator[None]:
    """The coordinator refreshing, and under `key` in the app (for the routes and the id
    hooks), while the plugin's lifespan lasts."""
    app[key] = coordinator
    coordinator.start()
    try:
        yield
    finally:
        await coordinator.stop()

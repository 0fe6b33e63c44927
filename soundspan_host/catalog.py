"""The track catalogue: tracks follow their files, and new content gets analysis jobs.

This is the host's answer to `soundspan_library_event`. A track keeps its id when its file
is moved or renamed (also when the move arrives as a delete and a create, matched by content
fingerprint) and when its content changes in place; duplicates share one content and so
are analyzed once.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from soundspan_hooks import LibraryEvent, LibraryEventKind, TrackFacts, hookimpl

log = logging.getLogger(__name__)

PRIORITY_NEW_FILE = 10  # new files go before re-analysis with a new model version
PRIORITY_REANALYSIS = 0
LATE_MOVE_SECONDS = 120.0


def raw_path(relative_path: str) -> bytes:
    """The exact bytes of a path (names that are not UTF-8 arrive surrogate-escaped)."""
    return os.fsencode(relative_path)


def readable_path(relative_path: str) -> str:
    """The same path as valid text, undecodable bytes shown as U+FFFD."""
    return raw_path(relative_path).decode("utf-8", errors="replace")


class Catalog:
    """Applies library events to the tracks table and queues analysis of unseen content."""

    def __init__(
        self,
        engine: AsyncEngine,
        analyzer_versions: Mapping[str, str],
        jobs_added: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.analyzer_versions = dict(analyzer_versions)
        self.jobs_added = jobs_added

    @hookimpl
    def soundspan_library_event(self, host: object, event: LibraryEvent):
        return self.apply(event)

    async def apply(self, event: LibraryEvent) -> None:
        """Apply one event in one transaction; events are idempotent, so repeats do no harm."""
        async with self.engine.begin() as connection:
            if event.kind is LibraryEventKind.VANISHED:
                await self._vanished(connection, event.path)
                return
            if event.kind is LibraryEventKind.MOVED and await self._moved(connection, event):
                return
            if event.facts is None:
                log.warning("ignoring %s event without file facts for %s", event.kind, event.path)
                return
            queued = await self._present(connection, event.path, event.facts)
        if queued:
            self.jobs_added()

    async def tracks_on_record(self) -> dict[str, tuple[int, float]]:
        """Present tracks' relative paths with the size and mtime last seen, for a reconcile."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT raw_path, size, mtime FROM tracks WHERE missing_since IS NULL")
            )
            return {os.fsdecode(row.raw_path): (row.size, row.mtime) for row in rows}

    async def purge_missing(self, grace: timedelta) -> int:
        """Forget tracks missing for longer than `grace`, and content no track holds any more."""
        async with self.engine.begin() as connection:
            purged = await connection.execute(
                text(
                    "DELETE FROM tracks WHERE missing_since < now() - make_interval(secs => :grace)"
                ),
                {"grace": grace.total_seconds()},
            )
            await connection.execute(
                text(
                    "DELETE FROM contents c WHERE NOT EXISTS"
                    " (SELECT 1 FROM tracks t WHERE t.content_id = c.id)"
                )
            )
        return purged.rowcount

    async def _vanished(self, connection: AsyncConnection, path: str) -> None:
        raw = raw_path(path)
        gone = await connection.execute(
            text(
                "UPDATE tracks SET missing_since = now()"
                " WHERE missing_since IS NULL"
                " AND (raw_path = :raw OR substring(raw_path from 1 for :length) = :prefix)"
                " RETURNING id, content_id, added_at"
            ),
            {"raw": raw, "prefix": raw + b"/", "length": len(raw) + 1},
        )
        for track in gone.all():
            await self._follow_late_move(connection, track.id, track.content_id, track.added_at)

    async def _follow_late_move(
        self, connection: AsyncConnection, track_id: str, content_id: str, added_at: datetime
    ) -> None:
        """A move can reach us as its new file first and the deletion after (watchdog pairs
        the two halves of a rename only within a moment). If a track with this content was
        added just now, it is this track at its new path: keep this one's id there."""
        newcomer = (
            await connection.execute(
                text(
                    "DELETE FROM tracks WHERE id = ("
                    " SELECT id FROM tracks WHERE content_id = :content_id"
                    " AND missing_since IS NULL AND added_at > :added_at"
                    " AND added_at > now() - make_interval(secs => :window)"
                    " ORDER BY added_at DESC LIMIT 1)"
                    " RETURNING raw_path, path, mtime"
                ),
                {"content_id": content_id, "added_at": added_at, "window": LATE_MOVE_SECONDS},
            )
        ).first()
        if newcomer is not None:
            await connection.execute(
                text(
                    "UPDATE tracks SET raw_path = :raw_path, path = :path, mtime = :mtime,"
                    " missing_since = NULL, updated_at = now() WHERE id = :id"
                ),
                {**newcomer._asdict(), "id": track_id},
            )

    async def _moved(self, connection: AsyncConnection, event: LibraryEvent) -> bool:
        """Give the track at old_path its new path; False if no track was there."""
        assert event.old_path is not None
        new_raw = raw_path(event.path)
        # a file moved over another replaces it
        await connection.execute(
            text("DELETE FROM tracks WHERE raw_path = :new AND raw_path <> :old"),
            {"new": new_raw, "old": raw_path(event.old_path)},
        )
        moved = await connection.execute(
            text(
                "UPDATE tracks SET raw_path = :new, path = :path, missing_since = NULL,"
                " updated_at = now() WHERE raw_path = :old"
            ),
            {"new": new_raw, "path": readable_path(event.path), "old": raw_path(event.old_path)},
        )
        return moved.rowcount > 0

    async def _present(self, connection: AsyncConnection, path: str, facts: TrackFacts) -> bool:
        """Record the file at `path` with these facts; True if analysis jobs were queued."""
        await connection.execute(
            text("INSERT INTO contents (id, size) VALUES (:id, :size) ON CONFLICT DO NOTHING"),
            {"id": facts.fingerprint, "size": facts.size},
        )
        values = {
            "raw": raw_path(path),
            "path": readable_path(path),
            "content_id": facts.fingerprint,
            "size": facts.size,
            "mtime": facts.mtime,
            "title": facts.title,
            "artist": facts.artist,
            "album": facts.album,
            "duration": facts.duration,
        }
        track_id = (
            await connection.execute(
                text("SELECT id FROM tracks WHERE raw_path = :raw"), {"raw": values["raw"]}
            )
        ).scalar()
        if track_id is None:
            # a track whose file vanished and whose content appears elsewhere has been moved
            track_id = (
                await connection.execute(
                    text(
                        "SELECT id FROM tracks WHERE content_id = :content_id"
                        " AND missing_since IS NOT NULL"
                        " ORDER BY missing_since DESC LIMIT 1 FOR UPDATE"
                    ),
                    {"content_id": facts.fingerprint},
                )
            ).scalar()
        if track_id is None:
            await connection.execute(
                text(
                    "INSERT INTO tracks (id, raw_path, path, content_id, size, mtime,"
                    " title, artist, album, duration)"
                    " VALUES (:id, :raw, :path, :content_id, :size, :mtime,"
                    " :title, :artist, :album, :duration)"
                ),
                {"id": uuid.uuid4().hex, **values},
            )
        else:
            await connection.execute(
                text(
                    "UPDATE tracks SET raw_path = :raw, path = :path, content_id = :content_id,"
                    " size = :size, mtime = :mtime, title = :title, artist = :artist,"
                    " album = :album, duration = :duration, missing_since = NULL,"
                    " updated_at = now() WHERE id = :id"
                ),
                {"id": track_id, **values},
            )
        return await queue_analysis(
            connection, facts.fingerprint, self.analyzer_versions, PRIORITY_NEW_FILE
        )


async def queue_analysis(
    connection: AsyncConnection,
    content_id: str,
    analyzer_versions: Mapping[str, str],
    priority: int,
) -> bool:
    """Queue each analyzer's job for a content unless one exists; True if any was added."""
    added = 0
    for analyzer, version in analyzer_versions.items():
        result = await connection.execute(
            text(
                "INSERT INTO analysis_jobs (content_id, analyzer, version, priority)"
                " VALUES (:content_id, :analyzer, :version, :priority)"
                " ON CONFLICT DO NOTHING"
            ),
            {
                "content_id": content_id,
                "analyzer": analyzer,
                "version": version,
                "priority": priority,
            },
        )
        added += result.rowcount
    return added > 0

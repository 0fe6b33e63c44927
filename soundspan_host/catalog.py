"""The track catalogue: tracks follow their files, and new content gets analysis jobs.

This is the host's answer to `soundspan_library_event`. A track keeps its id when its file
is moved or renamed (also when the move arrives as a delete and a create, matched by content
fingerprint) and when its content changes in place; duplicates share one content and so
are analyzed once. Content is found by its audio payload identity, so a retag changes tags
only; a content recorded before payload identities is found once by its old byte fingerprint.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from soundspan_hooks import LibraryEvent, LibraryEventKind, TrackFacts, hookimpl

log = logging.getLogger(__name__)

PRIORITY_NEW_FILE = 10  # new files go before re-analysis with a new model version
PRIORITY_REANALYSIS = 0
LATE_MOVE_SECONDS = 120.0
TAGS_VERSION = 1  # the tag set ingest reads; a row read with an older one is read again
TAG_COLUMNS = (
    "title", "artist", "album", "duration", "album_artist", "track_number", "disc_number", "year",
    "genre", "isrc", "musicbrainz_recording_id",
)  # fmt: skip


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
        """Apply one event in one transaction; events are idempotent, so repeats do no harm.

        Raises ValueError for a file the database can never record (its path is past the
        index's size limit, say), so that ingest reports it and goes on with the others.
        """
        try:
            await self._apply(event)
        except DBAPIError as error:
            reason = _unrecordable(error, event.path)
            if reason is None:
                raise  # the database is away or failing: ingest retries later
            raise ValueError(reason) from error

    async def _apply(self, event: LibraryEvent) -> None:
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
            # a row read with an older tag set, or whose content has no payload identity yet
            # (recorded before there were any), shows no mtime: the reconcile reads it again
            rows = await connection.execute(
                text(
                    "SELECT t.raw_path, t.size, CASE WHEN t.tags_version >= :tags_version"
                    " AND c.payload_id IS NOT NULL THEN t.mtime END AS mtime"
                    " FROM tracks t JOIN contents c ON c.id = t.content_id"
                    " WHERE t.missing_since IS NULL"
                ),
                {"tags_version": TAGS_VERSION},
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
        content_id = await _content_of(connection, facts)
        values = {
            "raw": raw_path(path),
            "path": readable_path(path),
            "content_id": content_id,
            "size": facts.size,
            "mtime": facts.mtime,
            "tags_version": TAGS_VERSION,
            **{column: getattr(facts, column) for column in TAG_COLUMNS},
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
                    {"content_id": content_id},
                )
            ).scalar()
        if track_id is None:
            await connection.execute(
                text(
                    "INSERT INTO tracks (id, raw_path, path, content_id, size, mtime, tags_version,"
                    f" {', '.join(TAG_COLUMNS)}) VALUES (:id, :raw, :path, :content_id, :size,"
                    f" :mtime, :tags_version, {', '.join(':' + c for c in TAG_COLUMNS)})"
                ),
                {"id": uuid.uuid4().hex, **values},
            )
        else:
            await connection.execute(
                text(
                    "UPDATE tracks SET raw_path = :raw, path = :path, content_id = :content_id,"
                    " size = :size, mtime = :mtime, tags_version = :tags_version,"
                    f" {', '.join(f'{c} = :{c}' for c in TAG_COLUMNS)},"
                    " missing_since = NULL, updated_at = now() WHERE id = :id"
                ),
                {"id": track_id, **values},
            )
        return await queue_analysis(
            connection, content_id, self.analyzer_versions, PRIORITY_NEW_FILE
        )


async def _content_of(connection: AsyncConnection, facts: TrackFacts) -> str:
    """The id of the content a file holds, recorded as new if it is.

    Found by payload identity; else a content recorded under the file's old byte fingerprint
    (before payload identities) is this one, and learns its payload identity.
    """
    find = text("SELECT id FROM contents WHERE payload_id = :payload")
    payload = {"payload": facts.fingerprint}
    if (found := (await connection.execute(find, payload)).scalar()) is not None:
        return found
    if facts.bytes_fingerprint is not None:
        upgraded = await connection.execute(
            text(
                "UPDATE contents SET payload_id = :payload"
                " WHERE id = :bytes_id AND payload_id IS NULL RETURNING id"
            ),
            {**payload, "bytes_id": facts.bytes_fingerprint},
        )
        if (found := upgraded.scalar()) is not None:
            return found
    await connection.execute(
        text(
            "INSERT INTO contents (id, size, payload_id) VALUES (:payload, :size, :payload)"
            " ON CONFLICT DO NOTHING"
        ),
        {**payload, "size": facts.size},
    )
    return (await connection.execute(find, payload)).scalar_one()


def _unrecordable(error: DBAPIError, path: str) -> str | None:
    """Why the database refuses this file for good, for its user; None if it may pass."""
    state = getattr(error.orig, "sqlstate", None) or ""
    if state == "54000":  # program_limit_exceeded: an index row past its size limit
        return (
            f"{readable_path(path)}: cannot be recorded, its path ({len(raw_path(path))} bytes)"
            " is longer than the database can index; shorten its folder or file names"
        )
    if state.startswith("22"):  # data_exception
        detail = str(error.orig).splitlines()[0]
        return f"{readable_path(path)}: cannot be recorded ({detail}); rename the file"
    return None


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

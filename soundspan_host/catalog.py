"""The track catalogue: the host's answer to `soundspan_library_event` (library_writes.py
says what each event writes).

Events are recorded by group commit: those that arrive while a batch is being written go
together in the next one (one transaction, multi-row statements), so a burst of thousands of
files costs a few round trips per batch instead of a few per file, and a lone event is written
at once, as before. The hook stays one event per call, so its callers and its other
implementations (plugins that only listen) are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import LibraryEvent, hookimpl
from soundspan_host.library_writes import (
    TAGS_VERSION,
    apply_event,
    raw_path,
    readable_path,
    record_present,
    runs,
)

log = logging.getLogger(__name__)

BATCH_EVENTS = 500  # events recorded in one transaction at most


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
        self._waiting: list[tuple[LibraryEvent, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None

    @hookimpl
    def soundspan_library_event(self, host: object, event: LibraryEvent):
        return self.apply(event)

    def apply(self, event: LibraryEvent) -> asyncio.Future[None]:
        """Record an event with the others waiting; the future resolves once it is committed.

        Events are applied in the order of the calls, and are idempotent, so repeats do no
        harm. The future raises ValueError for a file the database can never record (its path
        is past the index's size limit, say), so that ingest reports it and goes on with the
        others; any other error means the database is away or failing: ingest retries later.
        """
        recorded = asyncio.get_running_loop().create_future()
        self._waiting.append((event, recorded))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_waiting())
        return recorded

    async def _record_waiting(self) -> None:
        """Record waiting events, a batch at a time, until none wait."""
        while self._waiting:
            batch = self._waiting[:BATCH_EVENTS]
            del self._waiting[:BATCH_EVENTS]
            try:
                await self._record(batch)
            except asyncio.CancelledError:  # the host stops: nobody waits for the rest
                for _, recorded in [*batch, *self._waiting]:
                    recorded.cancel()
                self._waiting.clear()
                raise

    async def _record(self, batch: list[tuple[LibraryEvent, asyncio.Future[None]]]) -> None:
        """Record a batch in one transaction; if that fails and the database is there, one by
        one, so that a file the database refuses fails alone."""
        events = [event for event, _ in batch]
        outcomes: list[BaseException | None]
        try:
            queued = await self._apply_together(events)
            outcomes = [None] * len(events)
        except Exception as error:
            if len(events) > 1 and not _database_away(error):
                log.info("%d library events recorded one by one (%s)", len(events), error)
                outcomes, queued = await self._apply_one_by_one(events)
            else:
                outcomes, queued = [_refusal(error, event.path) for event in events], False
        if queued:
            self.jobs_added()
        for (_, recorded), outcome in zip(batch, outcomes, strict=True):
            if recorded.done():
                continue  # its caller was cancelled
            if outcome is None:
                recorded.set_result(None)
            else:
                recorded.set_exception(outcome)

    async def _apply_together(self, events: list[LibraryEvent]) -> bool:
        """Apply events in one transaction; True if analysis jobs were queued."""
        queued = False
        async with self.engine.begin() as connection:
            for run in runs(events):
                if len(run) > 1:
                    queued |= await record_present(connection, run, self.analyzer_versions)
                else:
                    queued |= await apply_event(connection, run[0], self.analyzer_versions)
        return queued

    async def _apply_one_by_one(
        self, events: list[LibraryEvent]
    ) -> tuple[list[BaseException | None], bool]:
        """Apply each event in its own transaction: (each one's error or None, jobs queued)."""
        outcomes: list[BaseException | None] = []
        queued = False
        for event in events:
            try:
                async with self.engine.begin() as connection:
                    queued |= await apply_event(connection, event, self.analyzer_versions)
                outcomes.append(None)
            except Exception as error:
                outcomes.append(_refusal(error, event.path))
        return outcomes, queued

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


def _database_away(error: Exception) -> bool:
    """Whether an error says the database cannot be reached (rather than that it refused a
    statement): then no event can be recorded now, and retrying them one by one is no use."""
    if isinstance(error, OSError | asyncio.TimeoutError):
        return True
    if isinstance(error, DBAPIError):
        return error.connection_invalidated or not getattr(error.orig, "sqlstate", None)
    return isinstance(error, SQLAlchemyError)  # the pool timed out, say


def _refusal(error: Exception, path: str) -> Exception:
    """What a caller of the hook gets for this file: ValueError if the database refuses it for
    good, else the error itself."""
    reason = _unrecordable(error, path) if isinstance(error, DBAPIError) else None
    if reason is None:
        return error
    refusal = ValueError(reason)
    refusal.__cause__ = error
    return refusal


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

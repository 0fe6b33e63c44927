"""What a library event writes: tracks follow their files, and new content gets analysis jobs.

A track keeps its id when its file is moved or renamed (also when the move arrives as a delete
and a create, matched by content fingerprint) and when its content changes in place;
duplicates share one content and so are analyzed once. Content is found by its audio payload
identity, so a retag changes tags only; a content recorded before payload identities is found
once by its old byte fingerprint. Every function writes on the caller's connection: the
catalogue decides what goes in one transaction.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from soundspan_hooks import TRACK_TAGS, LibraryEvent, LibraryEventKind, TrackFacts

log = logging.getLogger(__name__)

PRIORITY_NEW_FILE = 10  # new files go before re-analysis with a new model version
PRIORITY_REANALYSIS = 0
LATE_MOVE_SECONDS = 120.0
# how ingest reads tags; a row read with an older one is read again. Bump it when a tag is
# read otherwise; a new tag's migration clears tracks.tags_version instead (TRACK_TAGS)
TAGS_VERSION = 1
TAG_COLUMNS = TRACK_TAGS  # each tag is the `tracks` column of its name


def raw_path(relative_path: str) -> bytes:
    """The exact bytes of a path (names that are not UTF-8 arrive surrogate-escaped)."""
    return os.fsencode(relative_path)


def readable_path(relative_path: str) -> str:
    """The same path as valid text, undecodable bytes shown as U+FFFD."""
    return raw_path(relative_path).decode("utf-8", errors="replace")


async def apply_event(
    connection: AsyncConnection, event: LibraryEvent, analyzer_versions: Mapping[str, str]
) -> bool:
    """Apply one event; True if analysis jobs were queued."""
    if event.kind is LibraryEventKind.VANISHED:
        await _vanished(connection, event.path)
        return False
    if event.kind is LibraryEventKind.MOVED and await _moved(connection, event):
        return False
    if event.facts is None:
        log.warning("ignoring %s event without file facts for %s", event.kind, event.path)
        return False
    return await record_present(connection, [event], analyzer_versions)


async def _vanished(connection: AsyncConnection, path: str) -> None:
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
        await _follow_late_move(connection, track.id, track.content_id, track.added_at)


async def _follow_late_move(
    connection: AsyncConnection, track_id: str, content_id: str, added_at: datetime
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


async def _moved(connection: AsyncConnection, event: LibraryEvent) -> bool:
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


async def record_present(
    connection: AsyncConnection, run: list[LibraryEvent], analyzer_versions: Mapping[str, str]
) -> bool:
    """Record files present with their facts (of distinct paths and contents), in a few
    multi-row statements; True if analysis jobs were queued."""
    facts = [event.facts for event in run if event.facts is not None]
    content_ids = await _contents_of(connection, facts)
    raws = [raw_path(event.path) for event in run]
    at_path = {
        row.raw_path: row.id
        for row in await connection.execute(
            text("SELECT raw_path, id FROM tracks WHERE raw_path = ANY(:raws)"),
            {"raws": raws},
        )
    }
    homeless = [cid for raw, cid in zip(raws, content_ids, strict=True) if raw not in at_path]
    moved_here = {}
    if homeless:
        # the latest missing track of each content is the one that has been moved here
        moved_here = {
            row.content_id: row.id
            for row in await connection.execute(
                text(
                    "SELECT id, content_id FROM tracks WHERE id IN ("
                    " SELECT DISTINCT ON (content_id) id FROM tracks"
                    " WHERE content_id = ANY(:content_ids) AND missing_since IS NOT NULL"
                    " ORDER BY content_id, missing_since DESC) FOR UPDATE"
                ),
                {"content_ids": homeless},
            )
        }
    if set(moved_here.values()) & set(at_path.values()):
        # a missing track is wanted both at its own path and elsewhere for its content:
        # which one gets it depends on the order, so apply the events in order
        queued = False
        for event in run:
            queued |= await apply_event(connection, event, analyzer_versions)
        return queued
    updates, inserts = [], []
    for event, fact, content_id in zip(run, facts, content_ids, strict=True):
        values = _track_values(event.path, fact, content_id)
        track_id = at_path.get(values["raw"]) or moved_here.get(content_id)
        if track_id is None:
            inserts.append({"id": uuid.uuid4().hex, **values})
        else:
            updates.append({"id": track_id, **values})
    for statement, rows in ((UPDATE_TRACK, updates), (INSERT_TRACK, inserts)):
        if rows:
            await connection.execute(statement, rows)
    return await queue_analysis(connection, content_ids, analyzer_versions, PRIORITY_NEW_FILE)


INSERT_TRACK = text(
    "INSERT INTO tracks (id, raw_path, path, content_id, size, mtime, tags_version,"
    f" {', '.join(TAG_COLUMNS)}) VALUES (:id, :raw, :path, :content_id, :size,"
    f" :mtime, :tags_version, {', '.join(':' + c for c in TAG_COLUMNS)})"
)
UPDATE_TRACK = text(
    "UPDATE tracks SET raw_path = :raw, path = :path, content_id = :content_id,"
    " size = :size, mtime = :mtime, tags_version = :tags_version,"
    f" {', '.join(f'{c} = :{c}' for c in TAG_COLUMNS)},"
    " missing_since = NULL, updated_at = now() WHERE id = :id"
)


def _track_values(path: str, facts: TrackFacts, content_id: str) -> dict[str, object]:
    """A tracks row's columns for the file at `path`, but its id."""
    return {
        "raw": raw_path(path),
        "path": readable_path(path),
        "content_id": content_id,
        "size": facts.size,
        "mtime": facts.mtime,
        "tags_version": TAGS_VERSION,
        **{column: getattr(facts, column) for column in TAG_COLUMNS},
    }


def runs(events: list[LibraryEvent]) -> list[list[LibraryEvent]]:
    """The events in order, cut into runs: files present with facts, of distinct paths and
    contents, go together; any other event (a move, a deletion, a path or content seen again
    in the run) is a run of its own, so that it sees the state the events before it left."""
    runs: list[list[LibraryEvent]] = []
    together: list[LibraryEvent] = []
    paths: set[str] = set()
    contents: set[str] = set()
    for event in events:
        present = event.kind in (LibraryEventKind.APPEARED, LibraryEventKind.CHANGED)
        facts = event.facts
        if (
            present
            and facts is not None
            and event.path not in paths
            and facts.fingerprint not in contents
        ):
            together.append(event)
            paths.add(event.path)
            contents.add(facts.fingerprint)
            continue
        if together:
            runs.append(together)
        runs.append([event])
        together, paths, contents = [], set(), set()
    if together:
        runs.append(together)
    return runs


async def _contents_of(connection: AsyncConnection, facts: list[TrackFacts]) -> list[str]:
    """The id of the content each file holds (of distinct payloads), recorded as new if it is.

    Found by payload identity; else a content recorded under the file's byte fingerprint is
    this one, and learns its payload identity: one recorded before payload identities, or
    while no demuxer could read the file's audio (a later FFmpeg that can must not make it a
    new content, analyzed again).
    """
    found = await _contents_by_payload(connection, [fact.fingerprint for fact in facts])
    upgradable = [
        fact for fact in facts if fact.fingerprint not in found and fact.bytes_fingerprint
    ]
    if upgradable:
        upgraded = await connection.execute(
            text(
                "UPDATE contents c SET payload_id = u.payload"
                " FROM unnest(CAST(:payloads AS text[]), CAST(:bytes_ids AS text[]))"
                " AS u(payload, bytes_id)"
                " WHERE c.id = u.bytes_id AND (c.payload_id IS NULL OR c.payload_id = c.id)"
                " RETURNING c.id, c.payload_id"
            ),
            {
                "payloads": [fact.fingerprint for fact in upgradable],
                "bytes_ids": [fact.bytes_fingerprint for fact in upgradable],
            },
        )
        found.update({row.payload_id: row.id for row in upgraded})
    new = [fact for fact in facts if fact.fingerprint not in found]
    if new:
        await connection.execute(
            text(
                "INSERT INTO contents (id, size, payload_id)"
                " SELECT payload, size, payload"
                " FROM unnest(CAST(:payloads AS text[]), CAST(:sizes AS bigint[]))"
                " AS u(payload, size) ON CONFLICT DO NOTHING"
            ),
            {"payloads": [fact.fingerprint for fact in new], "sizes": [f.size for f in new]},
        )
        found.update(await _contents_by_payload(connection, [fact.fingerprint for fact in new]))
    return [found[fact.fingerprint] for fact in facts]


async def _contents_by_payload(connection: AsyncConnection, payloads: list[str]) -> dict[str, str]:
    """{payload identity: content id} of the contents recorded with these payloads."""
    rows = await connection.execute(
        text("SELECT payload_id, id FROM contents WHERE payload_id = ANY(:payloads)"),
        {"payloads": payloads},
    )
    return {row.payload_id: row.id for row in rows}


async def queue_analysis(
    connection: AsyncConnection,
    content_ids: list[str],
    analyzer_versions: Mapping[str, str],
    priority: int,
) -> bool:
    """Queue each analyzer's job for these contents unless one exists; True if any was added."""
    if not analyzer_versions:
        return False
    added = await connection.execute(
        text(
            "INSERT INTO analysis_jobs (content_id, analyzer, version, priority)"
            " SELECT content_id, analyzer, version, :priority"
            " FROM unnest(CAST(:content_ids AS text[])) AS c(content_id)"
            " CROSS JOIN unnest(CAST(:analyzers AS text[]), CAST(:versions AS text[]))"
            " AS a(analyzer, version)"
            " ON CONFLICT DO NOTHING"
        ),
        {
            "content_ids": content_ids,
            "analyzers": list(analyzer_versions),
            "versions": list(analyzer_versions.values()),
            "priority": priority,
        },
    )
    return added.rowcount > 0

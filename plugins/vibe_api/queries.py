"""The SQL behind the vibe API: tracks, their analyses, nearest neighbours, progress.

Reads the host's library views (library_tracks, recorded_tracks, analysis_states) and the
embedding table each analyzer names in its AnalyzerInfo; knows nothing about any model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from soundspan_hooks import TRACK_TAGS
from soundspan_plugins.shared.rows import named_rows

if TYPE_CHECKING:  # exclusions builds on this module
    from soundspan_plugins.vibe_api.exclusions import Exclusions

TRACK_COLUMNS = ", ".join(f"t.{column}" for column in ("id", "path", "content_id", *TRACK_TAGS))


MAX_QUERY_WORDS = 8
EF_SEARCH = 200  # the HNSW search's candidate list: see search_widely
SEARCH_SETTINGS = "soundspan.hnsw_ef_search"  # a connection's info: the ef_search it was set to


def like_literal(text_part: str) -> str:
    """`text_part` matched as itself in a LIKE pattern: its \\, % and _ escaped."""
    return text_part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def find_tracks(
    engine: AsyncEngine, path: str | None, words: str | None, limit: int, offset: int
) -> tuple[list[Any], int]:
    """Present tracks by exact relative path, or by words found in tags or path."""
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if path is not None:
        conditions.append("t.path = :path")
        params["path"] = path
    if words:
        # each word is one ILIKE over every row: a query of 250 words must not cost 250
        for index, word in enumerate(dict.fromkeys(words.split()[:MAX_QUERY_WORDS])):
            conditions.append(
                f"concat_ws(' ', t.title, t.artist, t.album, t.path) ILIKE :word{index}"
            )
            params[f"word{index}"] = f"%{like_literal(word)}%"
    where = " AND ".join(conditions) or "TRUE"
    async with engine.connect() as connection:
        total = (
            await connection.execute(
                text(f"SELECT count(*) FROM library_tracks t WHERE {where}"), params
            )
        ).scalar()
        rows = await connection.execute(
            text(
                f"SELECT {TRACK_COLUMNS} FROM library_tracks t WHERE {where}"
                " ORDER BY t.path LIMIT :limit OFFSET :offset"
            ),
            params,
        )
        return named_rows(rows), total


async def track_by_id(engine: AsyncEngine, track_id: str) -> Any | None:
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    f"SELECT {TRACK_COLUMNS}, t.missing_since FROM recorded_tracks t"
                    " WHERE t.id = :id"
                ),
                {"id": track_id},
            )
        ).first()


async def track_by_path(engine: AsyncEngine, path: str) -> Any | None:
    """The track at a path relative to the music dir (its readable form, exactly)."""
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    f"SELECT {TRACK_COLUMNS}, t.missing_since FROM recorded_tracks t"
                    " WHERE t.path = :path ORDER BY t.missing_since NULLS FIRST LIMIT 1"
                ),
                {"path": path},
            )
        ).first()


async def track_by_musicbrainz_id(engine: AsyncEngine, recording_id: str) -> Any | None:
    """A track tagged with this MusicBrainz recording id; a present one, by path, if several."""
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    f"SELECT {TRACK_COLUMNS}, t.missing_since FROM recorded_tracks t"
                    " WHERE t.musicbrainz_recording_id = :recording_id"
                    " ORDER BY t.missing_since NULLS FIRST, t.path LIMIT 1"
                ),
                {"recording_id": recording_id},
            )
        ).first()


async def analysis_states(engine: AsyncEngine, content_id: str) -> dict[str, dict[str, Any]]:
    """Each analyzer's job for a content: state, version, attempts, failure reason."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT analyzer, state, version, attempts, error, finished_at"
                " FROM analysis_states WHERE content_id = :content_id ORDER BY analyzer"
            ),
            {"content_id": content_id},
        )
        return {
            row.analyzer: {
                "state": row.state,
                "version": row.version,
                "attempts": row.attempts,
                "error": row.error,
                "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            }
            for row in rows
        }


async def representative_tracks(
    engine: AsyncEngine, content_ids: Sequence[str], *, exclusions: Exclusions
) -> dict[str, Any]:
    """One present track per content (its first path the rules keep): duplicates show once,
    and a content whose every track is excluded not at all."""
    if not content_ids:
        return {}
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT DISTINCT ON (t.content_id) {TRACK_COLUMNS} FROM library_tracks t"
                f" WHERE t.content_id = ANY(:ids) AND {exclusions.keeps()}"
                " ORDER BY t.content_id, t.path"
            ),
            {**exclusions.params, "ids": list(content_ids)},
        )
        return {row.content_id: row for row in named_rows(rows)}


async def nearest_contents(
    engine: AsyncEngine, table: str, content_id: str, limit: int, *, exclusions: Exclusions
) -> list[tuple[str, float]] | None:
    """Contents nearest to one content by cosine distance, itself left out, with a present
    track the rules keep; None if unanalyzed.

    One statement: the content's own vector is read inside it (pgvector walks the index from
    a subquery's vector, as its README shows); only an empty answer asks whether it had one."""
    source = f"(SELECT embedding FROM {table} WHERE content_id = :id)"
    async with engine.connect() as connection:
        await search_widely(connection)
        rows = await connection.execute(
            text(
                nearest_first(
                    f"SELECT e.content_id, e.embedding <=> {source} AS distance"
                    f" FROM {table} e WHERE e.content_id <> :id"
                    " AND EXISTS (SELECT 1 FROM library_tracks t WHERE t.content_id ="
                    f" e.content_id AND {exclusions.keeps()})"
                    f" AND {source} IS NOT NULL"
                    f" ORDER BY e.embedding <=> {source} LIMIT :limit"
                )
            ),
            {**exclusions.params, "id": content_id, "limit": limit},
        )
        found = [(content, float(distance)) for content, distance in rows]
        if found:
            return found
        analyzed = await connection.execute(
            text(f"SELECT 1 FROM {table} WHERE content_id = :id"), {"id": content_id}
        )
        return [] if analyzed.first() is not None else None


async def nearest_to_vector(
    engine: AsyncEngine,
    table: str,
    vector: Iterable[float],
    limit: int,
    *,
    exclusions: Exclusions,
) -> list[tuple[str, float]]:
    """Contents nearest to a query vector (e.g. an embedded text) by cosine distance, with a
    present track the rules keep."""
    [nearest] = await nearest_to_each(engine, table, [vector], limit, exclusions=exclusions)
    return nearest


async def nearest_to_each(
    engine: AsyncEngine,
    table: str,
    vectors: Iterable[Iterable[float]],
    limit: int,
    *,
    exclusions: Exclusions,
) -> list[list[tuple[str, float]]]:
    """For each query vector, the contents nearest to it; one connection for all."""
    async with engine.connect() as connection:
        await search_widely(connection)  # for the session: once for every search
        return [await _nearest(connection, table, vector, limit, exclusions) for vector in vectors]


async def _nearest(
    connection: Any, table: str, vector: Iterable[float], limit: int, exclusions: Exclusions
) -> list[tuple[str, float]]:
    rows = await connection.execute(
        text(
            nearest_first(
                f"SELECT e.content_id, e.embedding <=> CAST(:query AS vector) AS distance"
                f" FROM {table} e WHERE EXISTS (SELECT 1 FROM library_tracks t"
                f" WHERE t.content_id = e.content_id AND {exclusions.keeps()})"
                " ORDER BY e.embedding <=> CAST(:query AS vector) LIMIT :limit"
            )
        ),
        {**exclusions.params, "query": vector_literal(vector), "limit": limit},
    )
    return [(content, float(distance)) for content, distance in rows]


async def search_widely(connection: Any) -> None:
    """How this connection's HNSW searches walk the graph: on until enough present tracks
    pass the filter (a relaxed iterative scan), from a candidate list of EF_SEARCH (pgvector's
    default is 40: at a million tracks it finds 0.87 of the true 10 nearest, 200 finds 0.93,
    and as fast where a list looks at 80 or more; bench/RESULTS.md, "A million tracks").

    Set for the session (`set_config(..., false)`: on the host's autocommit reader a `SET
    LOCAL` would end with its own statement), once per database connection: the pool keeps
    `info` with the connection and clears it when it connects again. Only these searches
    read the settings."""
    if connection.info.get(SEARCH_SETTINGS) == EF_SEARCH:
        return
    await connection.execute(
        text(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', false),"
            " set_config('hnsw.ef_search', :ef_search, false)"
        ),
        {"ef_search": str(EF_SEARCH)},
    )
    connection.info[SEARCH_SETTINGS] = EF_SEARCH


def nearest_first(index_search: str) -> str:
    """The index search, its rows sorted again: a relaxed iterative scan may return some of
    them slightly out of distance order. pgvector's docs advise this re-sort; the `+ 0` keeps
    PostgreSQL 17+ from taking the inner ORDER BY as already done and skipping it."""
    return (
        f"WITH found AS MATERIALIZED ({index_search})"
        " SELECT content_id, distance FROM found ORDER BY distance + 0"
    )


def vector_literal(vector: Iterable[float]) -> str:
    return "[" + ",".join(repr(float(value)) for value in vector) + "]"


def decode_vectors(packed: Sequence[bytes]) -> np.ndarray:
    """pgvector's binary form (vector_send: dimension, unused, big-endian float32s) as rows."""
    if not packed:
        return np.zeros((0, 0), dtype=np.float32)
    rows = np.frombuffer(b"".join(packed), dtype=np.uint8).reshape(len(packed), -1)
    return rows[:, 4:].copy().view(">f4").astype(np.float32)


async def embeddings(
    engine: AsyncEngine, table: str, content_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """The stored embedding of each content that has one."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    f"SELECT content_id, vector_send(embedding) AS packed FROM {table}"
                    " WHERE content_id = ANY(:ids)"
                ),
                {"ids": list(content_ids)},
            )
        ).all()
    vectors = decode_vectors([packed for _, packed in rows])
    return {content: vector for (content, _), vector in zip(rows, vectors, strict=True)}


async def present_embeddings(
    engine: AsyncEngine,
    table: str,
    batch: int = 10_000,
    exclusions: Exclusions | None = None,
) -> AsyncIterator[tuple[list[str], list[str], np.ndarray]]:
    """Every analyzed content that has a present track the rules keep, in batches: its first
    such track's id, the content id, and the embeddings as a matrix. Streams, so memory stays
    flat. No `exclusions`: every track is kept."""
    keeps, params = (exclusions.keeps(), exclusions.params) if exclusions else ("TRUE", {})
    async with engine.connect() as connection:
        result = await connection.stream(
            text(
                f"SELECT DISTINCT ON (t.content_id) t.id, t.content_id,"
                f" vector_send(e.embedding) AS packed FROM {table} e JOIN library_tracks t"
                f" ON t.content_id = e.content_id AND {keeps}"
                " ORDER BY t.content_id, t.path"
            ),
            params,
            execution_options={"yield_per": batch},
        )
        async for rows in result.partitions(batch):
            track_ids, content_ids, packed = zip(*rows, strict=True)
            yield list(track_ids), list(content_ids), decode_vectors(packed)


async def embeddings_signature(engine: AsyncEngine, table: str) -> tuple[Any, ...]:
    """Changes when analyzed tracks are added, moved or go missing."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    f"SELECT count(*) AS tracks, max(t.updated_at) AS updated FROM {table} e"
                    " JOIN library_tracks t ON t.content_id = e.content_id"
                )
            )
        ).one()
        return (row.tracks, row.updated)


async def playlist_tracks(engine: AsyncEngine, track_ids: Sequence[str]) -> list[Any]:
    """Present tracks by id, in the order asked, with their exact on-disk paths."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                f"SELECT {TRACK_COLUMNS}, t.raw_path FROM library_tracks t WHERE t.id = ANY(:ids)"
            ),
            {"ids": list(track_ids)},
        )
        by_id = {row.id: row for row in named_rows(rows)}
    return [by_id[track_id] for track_id in dict.fromkeys(track_ids) if track_id in by_id]
